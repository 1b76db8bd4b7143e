"""The agent's only network edge: an OpenAI-compatible chat API (Conductor's gateway, vLLM, a hosted API).

`base_url` may be given with or without the `/v1` suffix (Conductor style `http://host:8000`, OpenAI style
`https://api.openai.com/v1`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from deployments.openai_http import APIStatusError, OpenAIHTTP, api_path


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
    """Whole (not streamed) chat completions for the loop. A plain OpenAI client: it says nothing about who the
    run is for, because the chat API may be a third party's."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, timeout: float = 120.0):
        self._api = OpenAIHTTP(base_url, api_key, timeout)
        self.url = self._api.base_url + api_path(self._api.base_url, "/v1/chat/completions")
        self.model = model

    def close(self) -> None:
        self._api.close()

    def complete(self, messages: list[dict[str, Any]], timeout: float | None = None, **params: Any) -> ModelReply:
        body = {"messages": messages, **{k: v for k, v in params.items() if v is not None}}
        if self.model:
            body.setdefault("model", self.model)  # a call may name another model (a guardrail classifier)
        start = time.perf_counter()
        try:
            data = self._api.post_json("/v1/chat/completions", body, **({"timeout": timeout} if timeout else {}))
        except APIStatusError as e:
            raise ModelError(f"chat API answered HTTP {e.status}: {e.message}") from None
        except httpx.HTTPError as e:
            raise ModelError(f"chat API unreachable at {self.url}: {type(e).__name__}: {e}") from None
        except ValueError:
            raise ModelError("chat API returned something that is not JSON") from None
        ms = (time.perf_counter() - start) * 1000
        try:
            msg = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise ModelError(f"chat API returned something that is not a chat completion: {str(data)[:200]}") from None
        usage = data.get("usage") or {}
        return ModelReply(
            content=msg.get("content"), tool_calls=list(msg.get("tool_calls") or []),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            duration_ms=ms, finish_reason=data["choices"][0].get("finish_reason"))
