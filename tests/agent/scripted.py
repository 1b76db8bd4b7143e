"""A real HTTP server that speaks the OpenAI chat-completions protocol and plays back scripted model turns.

This is the network edge of the agent (the chat API); everything behind it in the tests is real. Each turn is
a dict: {"content": "..."} for text, {"tool_calls": [("name", {...args}), ...]} for native calls,
{"raw_tool_calls": [...]} for hand-made (possibly malformed) calls, {"status": 503} for an HTTP error, or a
callable(request_body) -> turn. Every request body is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from apps.agent.local_chat_server import json_http_server


class ScriptedChatServer:
    def __init__(self, turns: list[Any] | None = None, delay_s: float = 0.0):
        self.turns: list[Any] = list(turns or [])
        self.requests: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self.httpd = json_http_server(self._answer)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, body: dict[str, Any], path: str, auth: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "auth": auth, **body})
            turn = self.turns.pop(0) if self.turns else {"content": "(script exhausted)"}
        if callable(turn):
            turn = turn(body)
        if self.delay_s:
            time.sleep(self.delay_s)
        if "status" in turn:
            return turn["status"], {"error": {"message": turn.get("message", "scripted failure")}}
        msg: dict[str, Any] = {"role": "assistant", "content": turn.get("content")}
        calls = turn.get("raw_tool_calls")
        if calls is None and turn.get("tool_calls"):
            calls = [{"id": f"call_{i}", "type": "function",
                      "function": {"name": n, "arguments": json.dumps(a)}} for i, (n, a) in enumerate(turn["tool_calls"])]
        if calls:
            msg["tool_calls"] = calls
        return 200, {"id": "chatcmpl-scripted", "object": "chat.completion", "model": body.get("model", "scripted"),
                     "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def react(obj: dict[str, Any]) -> dict[str, Any]:
    """A react-protocol turn: the JSON object as the model's text."""
    return {"content": json.dumps(obj)}
