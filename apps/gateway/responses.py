"""OpenAI's Responses API (`POST /v1/responses`), bridged onto chat completions.

A request becomes a chat request (instructions -> system message, input items -> messages, function tools ->
tools, text.format -> response_format), which the gateway's chat path serves with everything it does (fallback,
deadline, cache, metrics, cost). The answer is turned back into a `response` object, or, streamed, into the
Responses event sequence the official SDK reads. A stored response (`store`, the default) keeps its conversation
so a later request can continue it with `previous_response_id`: only its own user's, bounded in number per gateway
replica (the oldest are forgotten first).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Strict):
    type: Literal["input_text", "output_text"]
    text: str = Field(..., max_length=1_000_000)
    annotations: list[Any] | None = None


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]
    id: str | None = None
    status: str | None = None


class _CallItem(_Strict):
    """What a function call and its output share: the call id that pairs them, and the echo fields of an item."""

    call_id: str = Field(..., min_length=1, max_length=256)
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_CallItem):
    type: Literal["function_call"]
    name: str = Field(..., min_length=1, max_length=64)
    arguments: str = Field(..., max_length=1_000_000)


class FunctionCallOutputItem(_CallItem):
    type: Literal["function_call_output"]
    output: str = Field(..., max_length=1_000_000)


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Strict):
    format: TextFormat | None = None


class ResponsesRequest(_Strict):
    model: str | None = Field(None, max_length=256)
    input: str | list[MessageItem | FunctionCallItem | FunctionCallOutputItem] = Field(..., min_length=1)
    instructions: str | None = Field(None, max_length=100_000)
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(None, max_length=128)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = Field(None, max_length=256)
    text: TextConfig | None = None


class ResponseStore:
    """Stored conversations by response id, each with its owner, in the accounting database (SQLite by default,
    PostgreSQL by URL): a follow-up with previous_response_id may land on any gateway replica. Kept `max_age_s`."""

    def __init__(self, url: str, max_age_s: float = 30 * 86400):
        from deployments.sqldb import SQLDatabase

        self.db, self.max_age_s = SQLDatabase(url), max_age_s
        self._puts = 0
        with self.db.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS stored_responses (response_id TEXT PRIMARY KEY, owner TEXT NOT "
                      "NULL, created_at DOUBLE PRECISION NOT NULL, messages TEXT NOT NULL)")

    def put(self, response_id: str, owner: str, messages: list[dict[str, Any]]) -> None:
        import json
        import time

        with self.db.tx() as c:
            c.execute(self.db.sql("INSERT INTO stored_responses (response_id, owner, created_at, messages) VALUES "
                                  "({p}, {p}, {p}, {p})"), (response_id, owner, time.time(), json.dumps(messages)))
            self._puts += 1
            if self._puts % 200 == 0:
                c.execute(self.db.sql("DELETE FROM stored_responses WHERE created_at < {p}"),
                          (time.time() - self.max_age_s,))

    def messages(self, response_id: str, owner: str) -> list[dict[str, Any]] | None:
        """The conversation up to and including that response, or None (absent, expired or another's)."""
        import json

        with self.db.tx() as c:
            row = c.execute(self.db.sql("SELECT messages FROM stored_responses WHERE response_id = {p} AND "
                                        "owner = {p}"), (response_id, owner)).fetchone()
        return None if row is None else json.loads(row[0])


def _text(content: str | list[InputText]) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def to_messages(req: ResponsesRequest, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for `req` after the `earlier` conversation (of previous_response_id)."""
    msgs: list[dict[str, Any]] = []
    if req.instructions:
        msgs.append({"role": "system", "content": req.instructions})
    msgs += [m for m in earlier if not (req.instructions and m["role"] == "system")]
    items = [MessageItem(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    for item in items:
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            msgs.append({"role": role, "content": _text(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if msgs and msgs[-1]["role"] == "assistant" and msgs[-1].get("tool_calls") is not None:
                msgs[-1]["tool_calls"].append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            msgs.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return msgs


def to_chat(req: ResponsesRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request body that serves `req`."""
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("parallel_tool_calls", "parallel_tool_calls"), ("user", "user")):
        value = getattr(req, ours)
        if value is not None:
            body[theirs] = value
    if req.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, **({"description": t.description} if t.description else {}),
            "parameters": t.parameters or {"type": "object", "properties": {}}}} for t in req.tools]
    if isinstance(req.tool_choice, NamedFunction):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": fmt.schema_ or {}, **({"strict": fmt.strict}
                                                                           if fmt.strict is not None else {})}}
    return body


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_object(req: ResponsesRequest, rid: str, model: str, output: list[dict[str, Any]], status: str,
                    usage: dict[str, Any] | None, created: int, incomplete: str | None = None) -> dict[str, Any]:
    fmt = req.text.format.model_dump(by_alias=True, exclude_none=True) if req.text and req.text.format else \
        {"type": "text"}
    return {
        "id": rid, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": req.instructions, "metadata": req.metadata or {},
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": req.max_output_tokens,
        "previous_response_id": req.previous_response_id, "store": req.store,
        "tool_choice": req.tool_choice.model_dump() if isinstance(req.tool_choice, NamedFunction)
        else (req.tool_choice or "auto"),
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []], "text": {"format": fmt},
        "truncation": "disabled", "user": req.user,
        "usage": _usage(usage) if usage is not None else None,
    }


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    n_in, n_out = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": new_id("fc"), "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"].get("arguments") or "", "status": status}


def from_chat(completion: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """A chat.completion -> (output items, the assistant message to store, incomplete reason)."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output = []
    if msg.get("content"):
        output.append(message_item(msg["content"], new_id("msg")))
    output += [call_item(c) for c in msg.get("tool_calls") or []]
    stored = {"role": "assistant", "content": msg.get("content")}
    if msg.get("tool_calls"):
        stored["tool_calls"] = msg["tool_calls"]
    return output, stored, "max_output_tokens" if choice.get("finish_reason") == "length" else None


class StreamTranslator:
    """Chat chunks in, Responses events out (the sequence the SDK's stream reader expects)."""

    def __init__(self, req: ResponsesRequest, rid: str, model: str):
        self.req, self.rid, self.model, self.created = req, rid, model, int(time.time())
        self.seq, self.text, self.msg_id = 0, "", new_id("msg")
        self.calls: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.opened = False

    def _event(self, type_: str, **fields: Any) -> bytes:
        doc = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {type_}\ndata: {json.dumps(doc)}\n\n".encode()

    def start(self) -> bytes:
        shell = response_object(self.req, self.rid, self.model, [], "in_progress", None, self.created)
        return self._event("response.created", response=shell) + self._event("response.in_progress", response=shell)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if not self.opened:
                    self.opened = True
                    out += self._event("response.output_item.added", output_index=0,
                                       item=message_item("", self.msg_id, "in_progress") | {"content": []})
                    out += self._event("response.content_part.added", item_id=self.msg_id, output_index=0,
                                       content_index=0, part={"type": "output_text", "text": "", "annotations": []})
                self.text += delta["content"]
                out += self._event("response.output_text.delta", item_id=self.msg_id, output_index=0,
                                   content_index=0, delta=delta["content"], logprobs=[])
            for tc in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(int(tc.get("index", 0)), {"id": "", "type": "function",
                                                                      "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            self.finish = choice.get("finish_reason") or self.finish
        return out

    def finish_events(self) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        """The closing events, the final response object and the assistant message to store."""
        out, output = b"", []
        if self.opened:
            item = message_item(self.text, self.msg_id)
            part = item["content"][0]
            out += self._event("response.output_text.done", item_id=self.msg_id, output_index=0, content_index=0,
                               text=self.text, logprobs=[])
            out += self._event("response.content_part.done", item_id=self.msg_id, output_index=0, content_index=0,
                               part=part)
            out += self._event("response.output_item.done", output_index=0, item=item)
            output.append(item)
        for call in (self.calls[i] for i in sorted(self.calls)):
            index = len(output)
            item = call_item(call)
            out += self._event("response.output_item.added", output_index=index, item={**item, "arguments": "",
                                                                                       "status": "in_progress"})
            out += self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                               delta=item["arguments"])
            out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=item)
            output.append(item)
        incomplete = "max_output_tokens" if self.finish == "length" else None
        final = response_object(self.req, self.rid, self.model, output, "incomplete" if incomplete else "completed",
                                self.usage or {}, self.created, incomplete)
        out += self._event("response.incomplete" if incomplete else "response.completed", response=final)
        stored = {"role": "assistant", "content": self.text or None}
        if self.calls:
            stored["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return out, final, stored


async def _lines(body: AsyncIterator[bytes | str]) -> AsyncIterator[str]:
    """The gateway's own chat SSE as lines (it writes whole events, so a line never spans two writes)."""
    async for raw in body:
        for line in (raw.decode() if isinstance(raw, bytes) else raw).split("\n"):
            yield line


async def events(tr: StreamTranslator, chat_body: AsyncIterator[bytes | str],
                 on_done: Any) -> AsyncIterator[bytes]:
    """The Responses event stream for a chat stream; `on_done(stored_message)` once it completed."""
    from deployments.openai_http import APIStatusError, aiter_sse

    yield tr.start()
    try:
        async for chunk in aiter_sse(_lines(chat_body)):
            out = tr.chunk(chunk)
            if out:
                yield out
    except APIStatusError as e:  # the backend failed mid-stream (the gateway said so in-band)
        failed = response_object(tr.req, tr.rid, tr.model, [], "failed", tr.usage, tr.created)
        failed["error"] = {"code": "server_error", "message": e.message}
        yield tr._event("error", code="server_error", message=e.message, param=None)
        yield tr._event("response.failed", response=failed)
        return
    finally:
        close = getattr(chat_body, "aclose", None)
        if close is not None:  # a client that left: the chat stream (and the generation) stops too
            await close()
    out, _, stored = tr.finish_events()
    on_done(stored)
    yield out
