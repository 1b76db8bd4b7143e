"""Any hosted OpenAI-compatible API (OpenAI, Anthropic's compatible endpoint, Together, a remote vLLM).

The key is read from the environment variable the config names and is never logged or echoed in errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from deployments.engines.base import Engine, EngineError, redact


class OpenAIEngine(Engine):
    client: httpx.AsyncClient | None = None
    native_tool_calls = True

    async def start(self) -> None:
        headers = {}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(base_url=(self.config.base_url or "").rstrip("/"), headers=headers,
                                        timeout=httpx.Timeout(self.config.timeout_s, connect=5.0))

    def _body(self, request: dict[str, Any], stream: bool) -> dict[str, Any]:
        body = {k: v for k, v in request.items() if v is not None}
        body["model"] = self.config.model or request.get("model")
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _raise_for(self, r: httpx.Response, text: str) -> None:
        try:
            err = json.loads(text).get("error", {})
            msg = err.get("message", text) if isinstance(err, dict) else str(err)
        except (ValueError, AttributeError):
            msg = text
        msg = self._redact(str(msg)[:300])
        # A 400 is the caller's fault and must not fail over; auth/rate/server errors are the backend's.
        if r.status_code in (400, 404, 413, 422):
            raise EngineError(r.status_code, f"upstream rejected the request: {msg}", "invalid_request_error")
        raise EngineError(502, f"upstream answered {r.status_code}: {msg}")

    def _redact(self, text: str) -> str:
        """Upstream text may carry our key back (or another credential): it never reaches a caller or a log."""
        return redact(text, (os.environ.get(self.config.api_key_env, ""),) if self.config.api_key_env else ())

    async def _post(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        assert self.client is not None
        try:
            r = await self.client.post(path, json=self._body(request, False))
        except httpx.TimeoutException:
            raise EngineError(504, f"upstream {self.config.name} timed out") from None
        except httpx.HTTPError as e:
            raise EngineError(503, f"upstream {self.config.name} unreachable: {type(e).__name__}") from None
        if r.status_code >= 400:
            self._raise_for(r, r.text)
        return r.json()

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
            async with self.client.stream("POST", path, json=self._body(request, True)) as r:
                if r.status_code >= 400:
                    self._raise_for(r, (await r.aread()).decode(errors="replace"))
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and "error" in chunk:  # failed mid-stream: say so, in our words
                        err = chunk["error"]
                        msg = err.get("message", "") if isinstance(err, dict) else str(err)
                        raise EngineError(502, f"upstream failed mid-stream: {self._redact(str(msg)[:300])}")
                    yield chunk
        except httpx.TimeoutException:
            raise EngineError(504, f"upstream {self.config.name} timed out") from None
        except httpx.HTTPError as e:
            raise EngineError(503, f"upstream {self.config.name} unreachable: {type(e).__name__}") from None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        data = (await self._post("/embeddings", {"input": texts}))["data"]
        return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]

    async def check_health(self) -> None:
        assert self.client is not None
        try:
            r = await self.client.get("/models", timeout=5.0)
        except httpx.HTTPError as e:
            raise EngineError(503, f"upstream {self.config.name} unreachable: {type(e).__name__}") from None
        if r.status_code >= 500:
            raise EngineError(503, f"upstream {self.config.name} unhealthy ({r.status_code})")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
