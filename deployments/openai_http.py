"""The one client for OpenAI-compatible HTTP APIs: Conductor's own gateway (apps, agent, UI, CLI) and hosted APIs
(the openai engine). Sync and async twins over httpx share one SSE reader and one error mapping.

Wire facts in one place: a base URL is given with or without `/v1` (Conductor's `http://host:8000`, OpenAI's
`https://api.openai.com/v1`); an error body is `{"error": {"message": ...}}` (or anything else, shown truncated);
a stream is `data: {json}` lines ending with `data: [DONE]`, and an in-band `{"error": ...}` event is a failure
that arrived after the 200.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx


class APIStatusError(RuntimeError):
    """The API answered with an error: an HTTP status >= 400, or an error event in the middle of a stream
    (`mid_stream`, status 502 unless the event carried one)."""

    def __init__(self, status: int, message: str, mid_stream: bool = False):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.mid_stream = status, message, mid_stream


def error_message(text: str) -> str:
    """The human part of an error body: `error.message` of OpenAI's shape, else the text itself (truncated)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message", err))[:500]
    return str(err)[:500]


def api_path(base_url: str, path: str) -> str:
    """`path` ("/v1/chat/completions") relative to a base that may already end in /v1."""
    return path[3:] if base_url.rstrip("/").endswith("/v1") and path.startswith("/v1/") else path


def _event(line: str) -> dict[str, Any] | None:
    """One SSE line -> its JSON event; None for comments, blank lines and the end marker (see `_DONE`)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        raise _Done
    event = json.loads(data)
    if isinstance(event, dict) and "error" in event and "choices" not in event:
        err = event["error"]
        message = err.get("message", "stream failed") if isinstance(err, dict) else str(err)
        status = err.get("status") if isinstance(err, dict) else None
        raise APIStatusError(int(status) if isinstance(status, int) else 502, str(message)[:500], mid_stream=True)
    return event


class _Done(Exception):
    """`data: [DONE]`: the stream ended as it should."""


def iter_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """JSON events of a server-sent event stream until `[DONE]`; an in-band error raises APIStatusError."""
    try:
        for line in lines:
            event = _event(line)
            if event is not None:
                yield event
    except _Done:
        return


async def aiter_sse(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The async twin of `iter_sse`."""
    try:
        async for line in lines:
            event = _event(line)
            if event is not None:
                yield event
    except _Done:
        return


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class OpenAIHTTP:
    """Sync client. `on_request` hooks run in the caller's thread as each request is sent (so they see its
    context variables)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float | httpx.Timeout = 120.0,
                 on_request: list[Callable[[httpx.Request], None]] | None = None):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=timeout,
                                  event_hooks={"request": list(on_request or [])})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "OpenAIHTTP":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def response(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The raw response of a successful call (APIStatusError otherwise)."""
        r = self._http.request(method, api_path(self.base_url, path), **kw)
        if r.status_code >= 400:
            raise APIStatusError(r.status_code, error_message(r.text))
        return r

    def request(self, method: str, path: str, **kw: Any) -> Any:
        r = self.response(method, path, **kw)
        return r.json() if r.content else None

    def post_json(self, path: str, body: dict[str, Any], **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw)

    def stream_sse(self, path: str, body: dict[str, Any],
                   on_headers: Callable[[httpx.Headers], None] | None = None) -> Iterator[dict[str, Any]]:
        """POST and yield each event until `[DONE]`. `on_headers` sees the response headers before the first."""
        with self._http.stream("POST", api_path(self.base_url, path), json=body) as r:
            if r.status_code >= 400:
                raise APIStatusError(r.status_code, error_message(r.read().decode(errors="replace")))
            if on_headers is not None:
                on_headers(r.headers)
            yield from iter_sse(r.iter_lines())


class AsyncOpenAIHTTP:
    """Async client, for code on an event loop (the gateway's in-process engines)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float | httpx.Timeout = 120.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def response(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = await self._http.request(method, api_path(self.base_url, path), **kw)
        if r.status_code >= 400:
            raise APIStatusError(r.status_code, error_message(r.text))
        return r

    async def status_of(self, path: str, timeout: float = 5.0) -> int:
        """The HTTP status a GET of `path` answers (health probes), whatever it is."""
        return (await self._http.get(api_path(self.base_url, path), timeout=timeout)).status_code

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        r = await self.response("POST", path, json=body)
        return r.json() if r.content else None

    async def stream_sse(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self._http.stream("POST", api_path(self.base_url, path), json=body) as r:
            if r.status_code >= 400:
                raise APIStatusError(r.status_code, error_message((await r.aread()).decode(errors="replace")))
            async for event in aiter_sse(r.aiter_lines()):
                yield event
