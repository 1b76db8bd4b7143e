"""Any hosted OpenAI-compatible API (OpenAI, Anthropic's compatible endpoint, Together, a remote vLLM).

The key is read from the environment variable the config names and is never logged or echoed in errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from deployments.engines.base import Engine, EngineError, redact
from deployments.openai_http import APIStatusError, AsyncOpenAIHTTP
from deployments.secrets import read_secret


class OpenAIEngine(Engine):
    client: AsyncOpenAIHTTP | None = None
    native_tool_calls = True

    def api_key(self) -> str | None:
        return read_secret(self.config.api_key_env)

    async def start(self) -> None:
        self.client = AsyncOpenAIHTTP((self.config.base_url or "").rstrip("/"), self.api_key(),
                                      timeout=httpx.Timeout(self.config.timeout_s, connect=5.0))

    def _body(self, request: dict[str, Any], stream: bool) -> dict[str, Any]:
        body = {k: v for k, v in request.items() if v is not None}
        body["model"] = self.config.model or request.get("model")
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _engine_error(self, e: APIStatusError) -> EngineError:
        msg = self._redact(e.message[:300])
        if e.mid_stream:  # failed after the 200: say so, in our words
            return EngineError(502, f"upstream failed mid-stream: {msg}")
        # A 400 is the caller's fault and must not fail over; auth/rate/server errors are the backend's.
        if e.status in (400, 404, 413, 422):
            return EngineError(e.status, f"upstream rejected the request: {msg}", "invalid_request_error")
        return EngineError(502, f"upstream answered {e.status}: {msg}")

    def _transport_error(self, e: httpx.HTTPError) -> EngineError:
        if isinstance(e, httpx.TimeoutException):
            return EngineError(504, f"upstream {self.config.name} timed out")
        return EngineError(503, f"upstream {self.config.name} unreachable: {type(e).__name__}")

    def _redact(self, text: str) -> str:
        """Upstream text may carry our key back (or another credential): it never reaches a caller or a log."""
        return redact(text, (self.api_key() or "",))

    async def _post(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        try:
            return await self.client.post_json(path, self._body(request, False))
        except APIStatusError as e:
            raise self._engine_error(e) from None
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/chat/completions", request)

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._post("/completions", request)

    def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/chat/completions", request)

    def complete_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream("/completions", request)

    async def _stream(self, path: str, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        assert self.client is not None
        try:
            async for chunk in self.client.stream_sse(path, self._body(request, True)):
                yield chunk
        except APIStatusError as e:
            raise self._engine_error(e) from None
        except httpx.HTTPError as e:
            raise self._transport_error(e) from None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        data = (await self._post("/embeddings", {"input": texts}))["data"]
        return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]

    async def check_health(self) -> None:
        assert self.client is not None
        try:
            status = await self.client.status_of("/models", timeout=5.0)
        except httpx.HTTPError as e:
            raise EngineError(503, f"upstream {self.config.name} unreachable: {type(e).__name__}") from None
        if status >= 500:
            raise EngineError(503, f"upstream {self.config.name} unhealthy ({status})")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
