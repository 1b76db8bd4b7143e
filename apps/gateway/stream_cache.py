"""Streams and the caches: a whole answer put together from a stream's chunks (so a streamed answer is cached), and
a cached whole answer sent back as a stream (so a streamed request is answered from the cache).

The exact and semantic caches hold whole `chat.completion` / `text_completion` objects, whichever way the answer was
asked for: a greedy question asked whole and then streamed (or the other way round) is generated once. Only a stream
that ended by itself, with its usage known, is kept: a stream cut short by a deadline, a failure or a client that
left is not the model's answer.
"""

from __future__ import annotations

from typing import Any

class StreamAssembler:
    """Fed every chunk of one stream (OpenAI's chat.completion.chunk or text_completion), in order; `whole()` is the
    answer they make, or None when they did not make a finished one."""

    def __init__(self, endpoint: str):
        self.chat = endpoint == "chat"
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        for c in chunk.get("choices") or []:
            choice = self.choices.setdefault(int(c.get("index") or 0), {"finish_reason": None, "logprobs": None})
            if self.chat:
                _add_delta(choice.setdefault("message", {"role": "assistant", "content": None}), c.get("delta") or {})
            else:
                choice["text"] = choice.get("text", "") + (c.get("text") or "")
            if c.get("logprobs"):
                choice["logprobs"] = _add_logprobs(choice["logprobs"], c["logprobs"])
            if c.get("finish_reason"):
                choice["finish_reason"] = c["finish_reason"]

    def whole(self) -> dict[str, Any] | None:
        if self.usage is None or not self.choices or any(c["finish_reason"] is None
                                                        for c in self.choices.values()):
            return None
        choices = [{"index": i, **c} for i, c in sorted(self.choices.items())]
        for c in choices:
            for call in (c.get("message") or {}).get("tool_calls") or []:
                call.pop("index", None)  # a delta's position marker; a whole message's calls are a plain list
        return {**self.head, "object": "chat.completion" if self.chat else "text_completion", "choices": choices,
                "usage": self.usage}


def _add_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    for field in ("content", "refusal", "reasoning_content"):
        if delta.get(field):
            message[field] = (message.get(field) or "") + delta[field]
    for part in delta.get("tool_calls") or []:
        calls = message.setdefault("tool_calls", [])
        index = int(part.get("index", len(calls)))
        while len(calls) <= index:
            calls.append({"index": len(calls), "id": None, "type": "function",
                          "function": {"name": "", "arguments": ""}})
        call, fn = calls[index], part.get("function") or {}
        call["id"] = part.get("id") or call["id"]
        call["type"] = part.get("type") or call["type"]
        call["function"]["name"] += fn.get("name") or ""
        call["function"]["arguments"] += fn.get("arguments") or ""


def _add_logprobs(sofar: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    out = dict(sofar or {})
    for key, value in more.items():
        if isinstance(value, list):
            out[key] = (out.get(key) or []) + value
        elif key not in out:
            out[key] = value
    return out


def as_chunks(whole: dict[str, Any], endpoint: str, with_usage: bool) -> list[dict[str, Any]]:
    """A whole answer as the chunks a stream of it would have sent: each choice's text in one chunk, then each
    choice's finish in its own (as OpenAI ends a stream), then the usage chunk when the request asked for it."""
    chat = endpoint == "chat"
    head = {"id": whole.get("id", ""), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": whole.get("created", 0), "model": whole.get("model", "")}
    if whole.get("system_fingerprint"):
        head["system_fingerprint"] = whole["system_fingerprint"]
    chunks = []
    for c in whole.get("choices") or []:
        if chat:
            message = dict(c.get("message") or {})
            calls = [{"index": i, **call} for i, call in enumerate(message.pop("tool_calls", None) or [])]
            delta = {k: v for k, v in message.items() if v is not None}
            if calls:
                delta["tool_calls"] = calls
            body: dict[str, Any] = {"delta": delta}
        else:
            body = {"text": c.get("text") or ""}
        chunks.append({**head, "choices": [{"index": c.get("index", 0), **body, "logprobs": c.get("logprobs"),
                                            "finish_reason": None}]})
    for c in whole.get("choices") or []:
        body = {"delta": {}} if chat else {"text": ""}
        chunks.append({**head, "choices": [{"index": c.get("index", 0), **body, "logprobs": None,
                                            "finish_reason": c.get("finish_reason")}]})
    if with_usage and whole.get("usage"):
        chunks.append({**head, "choices": [], "usage": whole["usage"]})
    return chunks
