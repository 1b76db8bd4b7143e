"""The agent's only network edge: an OpenAI-compatible chat API (Conductor's gateway, vLLM, a hosted API).

`base_url` may be given with or without the `/v1` suffix (Conductor style `http://host:8000`, OpenAI style
`https://api.openai.com/v1`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


class ModelError(RuntimeError):
    """The chat API failed (unreachable, 4xx/5xx, not an OpenAI response)."""


@dataclass
class ModelReply:
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    finish_reason: str | None = None


class ChatModel:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 timeout: float = 120.0):
        base = (base_url or os.environ.get("CONDUCTOR_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        key = api_key if api_key is not None else os.environ.get("CONDUCTOR_API_KEY")
        self.model = model
        self._http = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def complete(self, messages: list[dict[str, Any]], timeout: float | None = None, **params: Any) -> ModelReply:
        body = {"messages": messages, **{k: v for k, v in params.items() if v is not None}}
        if self.model:
            body["model"] = self.model
        start = time.perf_counter()
        try:
            r = self._http.post(self.url, json=body, timeout=timeout or self._http.timeout)
        except httpx.HTTPError as e:
            raise ModelError(f"chat API unreachable at {self.url}: {type(e).__name__}: {e}") from None
        ms = (time.perf_counter() - start) * 1000
        if r.status_code >= 400:
            raise ModelError(f"chat API answered HTTP {r.status_code}: {_error_text(r)}")
        try:
            data = r.json()
            msg = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelError(f"chat API returned something that is not a chat completion: {r.text[:200]}") from None
        usage = data.get("usage") or {}
        return ModelReply(
            content=msg.get("content"), tool_calls=list(msg.get("tool_calls") or []),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            duration_ms=ms, finish_reason=data["choices"][0].get("finish_reason"))


def _error_text(r: httpx.Response) -> str:
    try:
        err = r.json().get("error")
        return (err.get("message") if isinstance(err, dict) else str(err)) or r.text[:300]
    except (ValueError, AttributeError):
        return r.text[:300]
