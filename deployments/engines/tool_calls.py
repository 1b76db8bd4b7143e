"""OpenAI tool calls for local engines that only generate text (llama.cpp, transformers).

Small local models have no tool format of their own (SmolLM2's chat template has none), so the engine is asked
for one JSON reply under a JSON schema that only admits what the request allows: with `tool_choice` "required"
or a named function, a list of calls to those tools with arguments valid against each tool's parameters; with
"auto", either that or `{"content": "..."}`. Both local engines decode under the schema (llama.cpp compiles it to
a grammar; the transformers engine uses lm-format-enforcer, deployments/engines/constrained.py), so the shape is
guaranteed; an engine without constraints would get the same instructions and be parsed leniently. The
reply is then turned back into OpenAI's shapes: `message.tool_calls` with ids and JSON-string arguments,
`finish_reason: "tool_calls"`, and for streams the tool-call deltas OpenAI sends. Earlier turns (assistant
`tool_calls`, `role: "tool"` results) are rewritten into the plain messages such a model understands.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_ARGS = re.compile(r'"arguments"\s*:\s*(.*)$', re.S)


@dataclass
class ToolPlan:
    """What one request allows, and the plain request the engine gets instead."""

    tools: dict[str, dict[str, Any]]  # name -> parameters schema (the tools the reply may call)
    choice: str  # "auto", "required" or "none"
    parallel: bool
    engine_request: dict[str, Any] = field(default_factory=dict)

    # --- whole responses ---------------------------------------------------------------------------------------
    def finish(self, response: dict[str, Any]) -> dict[str, Any]:
        for choice in response.get("choices", []):
            message = choice.get("message") or {}
            text = message.get("content") or ""
            calls, content = self._parse(text, choice.get("finish_reason"))
            if calls:
                choice["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
                if choice.get("finish_reason") != "length":
                    choice["finish_reason"] = "tool_calls"
            else:
                choice["message"] = {**message, "role": "assistant", "content": content}
        return response

    def _parse(self, text: str, finish_reason: str | None) -> tuple[list[dict[str, Any]], str]:
        """(tool calls, content). A reply cut off by max_tokens keeps its partial call, as OpenAI's does."""
        if self.choice == "none":
            return [], text
        try:
            reply = json.loads(text)
        except ValueError:
            reply = _complete_calls(text) if finish_reason == "length" else None
        if isinstance(reply, dict) and isinstance(reply.get("tool_calls"), list):
            calls, seen = [], set()
            for c in reply["tool_calls"]:  # small models repeat a call word for word: once is the call
                key = json.dumps(c, sort_keys=True) if isinstance(c, dict) else None
                if key and c.get("name") in self.tools and key not in seen:
                    seen.add(key)
                    calls.append(c)
            if calls:
                if not self.parallel:
                    calls = calls[:1]
                return [_call(c["name"], json.dumps(c.get("arguments", {}))) for c in calls], ""
        if isinstance(reply, dict) and isinstance(reply.get("content"), str):
            return [], reply["content"]
        name = _NAME.search(text)
        if finish_reason == "length" and name and name.group(1) in self.tools:
            args = _ARGS.search(text)
            return [_call(name.group(1), args.group(1) if args else "")], ""
        return [], text  # the model did not follow the format (an unconstrained engine): its words as they are

    # --- streams -----------------------------------------------------------------------------------------------
    async def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Read the engine's stream to its end (a client that leaves closes it, so generation stops), then send
        the reply as OpenAI streams it: a call's id and name first, its arguments after, finish, usage."""
        text, head, finish, usage = [], None, None, None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {**(head or {}), "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish_reason}]}

        async for part in chunks:
            if head is None:  # the role goes out at once: the stream is open while the reply is generated
                head = {k: part.get(k) for k in ("id", "object", "created", "model", "system_fingerprint")}
                yield chunk({"role": "assistant", "content": None})
            for c in part.get("choices") or []:
                text.append((c.get("delta") or {}).get("content") or "")
                finish = c.get("finish_reason") or finish
            usage = part.get("usage") or usage
        if head is None:
            head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion.chunk", "created": 0,
                    "model": None}
            yield chunk({"role": "assistant", "content": None})
        calls, content = self._parse("".join(text), finish)
        if calls:
            for i, call in enumerate(calls):
                fn = call["function"]
                yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": {"name": fn["name"], "arguments": ""}}]})
                for piece in _pieces(fn["arguments"]):
                    yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            yield chunk({}, "length" if finish == "length" else "tool_calls")
        else:
            for piece in _pieces(content):
                yield chunk({"content": piece})
            yield chunk({}, finish or "stop")
        if usage is not None:
            yield {**head, "choices": [], "usage": usage}


def plan_for(request: dict[str, Any]) -> ToolPlan | None:
    """The plan for a chat request that uses tools (or continues a conversation that did), else None."""
    tools = request.get("tools") or []
    history = any(m.get("role") == "tool" or m.get("tool_calls") for m in request.get("messages", []))
    if not tools and not history:
        return None
    choice = request.get("tool_choice") or ("auto" if tools else "none")
    allowed = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object", "properties": {}}
               for t in tools if t.get("type") == "function"}
    parallel = request.get("parallel_tool_calls") is not False
    if isinstance(choice, dict):  # a named function: one call to it
        name = choice["function"]["name"]
        allowed, choice, parallel = {name: allowed[name]}, "required", False
    plan = ToolPlan(tools=allowed if choice != "none" else {}, choice=choice, parallel=parallel)
    plan.engine_request = _engine_request(request, plan, tools)
    return plan


def _engine_request(request: dict[str, Any], plan: ToolPlan, tools: list[dict[str, Any]]) -> dict[str, Any]:
    req = {k: v for k, v in request.items() if k not in TOOL_FIELDS}
    messages = [_plain(m) for m in request.get("messages", [])]
    if plan.choice != "none" and plan.tools:
        described = [t["function"] for t in tools if t["function"]["name"] in plan.tools]
        messages = _with_instructions(messages, _instructions(described, plan))
        req["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "reply", "schema": reply_schema(plan), "strict": True}}
    req["messages"] = messages
    return req


def reply_schema(plan: ToolPlan) -> dict[str, Any]:
    """The JSON schema of a reply: calls to the allowed tools (one unless parallel), or, with "auto", text."""
    defs: dict[str, Any] = {}
    items = [{"type": "object", "properties": {"name": {"const": name}, "arguments": _hoisted(params, name, defs)},
              "required": ["name", "arguments"], "additionalProperties": False}
             for name, params in plan.tools.items()]
    calls: dict[str, Any] = {"type": "array", "items": items[0] if len(items) == 1 else {"anyOf": items},
                             "minItems": 1}
    if not plan.parallel:
        calls["maxItems"] = 1
    call_reply = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"],
                  "additionalProperties": False}
    text_reply = {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"],
                  "additionalProperties": False}
    schema = call_reply if plan.choice == "required" else {"anyOf": [call_reply, text_reply]}
    return {**schema, "$defs": defs} if defs else schema


def _hoisted(params: dict[str, Any], tool: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`params` nested inside the reply schema: its local definitions (pydantic's `$defs`) move to the reply's
    root under the tool's name, and its `#/$defs/...` references follow them."""
    local = {**(params.get("definitions") or {}), **(params.get("$defs") or {})}
    if not local:
        return params
    renamed = {k: f"{tool}__{k}" for k in local}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items() if k not in ("$defs", "definitions")}
            ref = node.get("$ref")
            if isinstance(ref, str):
                for prefix in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(prefix) and ref[len(prefix):] in renamed:
                        out["$ref"] = f"#/$defs/{renamed[ref[len(prefix):]]}"
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    for k, v in local.items():
        defs[renamed[k]] = walk(v)
    return walk(params)


def _instructions(functions: list[dict[str, Any]], plan: ToolPlan) -> str:
    lines = ["You can call these tools:"]
    for f in functions:
        lines.append(f"- {f['name']}: {f.get('description') or ''} Arguments (JSON Schema): "
                     f"{json.dumps(f.get('parameters') or {})}")
    lines.append('To call tools reply with JSON: {"tool_calls": [{"name": "<tool>", "arguments": {...}}]}, '
                 "each call once.")
    if plan.choice == "auto":
        lines.append('To answer without a tool reply with JSON: {"content": "<your answer>"}. Once the results '
                     "you need are in the conversation, answer with them instead of calling the tool again.")
    else:
        lines.append("You must call a tool now.")
    return "\n".join(lines)


def _with_instructions(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") in ("system", "developer"):
        first = messages[0]
        return [{"role": "system", "content": f"{_text(first.get('content'))}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """A message in the terms of a model without tool roles: earlier calls as the JSON it would have written,
    results as a user turn that names the call it answers."""
    if message.get("role") == "assistant" and message.get("tool_calls"):
        calls = [{"name": c["function"]["name"], "arguments": _loads(c["function"].get("arguments"))}
                 for c in message["tool_calls"]]
        return {"role": "assistant", "content": json.dumps({"tool_calls": calls})}
    if message.get("role") == "tool":
        return {"role": "user", "content": f"Result of tool call {message.get('tool_call_id')}:\n"
                                           f"{_text(message.get('content'))}"}
    if message.get("role") == "developer":
        return {**message, "role": "system"}
    return message


def _complete_calls(text: str) -> dict[str, Any] | None:
    """The calls a reply cut off by max_tokens did finish: its longest prefix that closes as a list of calls."""
    if not text.lstrip().startswith('{"tool_calls"') and '"tool_calls"' not in text[:40]:
        return None
    for end in range(len(text), 0, -1):
        if text[end - 1] != "}":
            continue
        try:
            reply = json.loads(text[:end] + "]}")
        except ValueError:
            continue
        return reply if isinstance(reply, dict) else None
    return None


def _loads(arguments: Any) -> Any:
    try:
        return json.loads(arguments) if isinstance(arguments, str) else (arguments or {})
    except ValueError:
        return arguments


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or []
