"""How apps and UI tabs reach Conductor's serving layer: the gateway's OpenAI-compatible HTTP API.

Apps are clients of the gateway (not of an engine), so fallback, caching, metrics and keys apply to them too.
Inside Serve replicas the base URL and internal key come from the environment that `conductor up` sets:
CONDUCTOR_BASE_URL (default http://127.0.0.1:8000) and CONDUCTOR_API_KEY.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx


class ConductorAPIError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


# The user an app is acting for (an agent run's owner, the UI's logged-in user). Sent as x-conductor-user, which the
# guard honours only with the internal key: a user's own key can never claim another user.
ACTING_FOR: ContextVar[str | None] = ContextVar("conductor_acting_for", default=None)
ON_BEHALF_HEADER = "x-conductor-user"


@contextmanager
def acting_for(user: str | None) -> Iterator[None]:
    token = ACTING_FOR.set(user)
    try:
        yield
    finally:
        ACTING_FOR.reset(token)


def default_base_url() -> str:
    return os.environ.get("CONDUCTOR_BASE_URL", "http://127.0.0.1:8000").rstrip("/")


class ConductorClient:
    """Small sync client: chat (whole or streamed), embeddings, models, and raw JSON calls to app routes."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 acting_user: Callable[[], str | None] = ACTING_FOR.get):
        self.base_url = (base_url or default_base_url()).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("CONDUCTOR_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._acting_user = acting_user
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  event_hooks={"request": [self._say_who]})

    def _say_who(self, request: httpx.Request) -> None:
        """Runs in the caller's thread as each request is sent, so it sees that caller's context."""
        user = self._acting_user()
        if user:
            request.headers[ON_BEHALF_HEADER] = quote(user, safe="")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ConductorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- generic -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw: Any) -> Any:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 400:
            raise ConductorAPIError(r.status_code, _error_message(r))
        return r.json() if r.content else None

    def upload(self, path: str, data: bytes, params: dict[str, Any] | None = None,
               content_type: str = "application/octet-stream") -> Any:
        """POST a file as the raw body, declared as a file (upload routes refuse form and text/plain types)."""
        return self.request("POST", path, params=params, content=data, headers={"content-type": content_type})

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def stream_sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each `data:` JSON event of a server-sent event stream until `[DONE]`."""
        with self._http.stream("POST", path, json=body) as r:
            if r.status_code >= 400:
                r.read()
                raise ConductorAPIError(r.status_code, _error_message(r))
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield json.loads(data)

    # --- OpenAI-shaped -------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [m["id"] for m in self.request("GET", "/v1/models")["data"]]

    def chat(self, messages: list[dict[str, Any]], model: str | None = None, **kw: Any) -> dict[str, Any]:
        """Returns the whole OpenAI chat.completion object."""
        body = {"messages": messages, **kw}
        if model:
            body["model"] = model
        return self.post_json("/v1/chat/completions", body)

    def chat_text(self, messages: list[dict[str, Any]], model: str | None = None, **kw: Any) -> str:
        return self.chat(messages, model, **kw)["choices"][0]["message"].get("content") or ""

    def chat_stream(self, messages: list[dict[str, Any]], model: str | None = None, **kw: Any) -> Iterator[str]:
        """Yields only the new text of each chunk."""
        body = {"messages": messages, "stream": True, **kw}
        if model:
            body["model"] = model
        for chunk in self.stream_sse("/v1/chat/completions", body):
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece

    def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        body: dict[str, Any] = {"input": texts}
        if model:
            body["model"] = model
        data = self.post_json("/v1/embeddings", body)["data"]
        return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]


def running_server(url: str | None = None, timeout: float = 300.0) -> ConductorClient | None:
    """A client for the Conductor server at `url` (default CONDUCTOR_BASE_URL, else the configured host/port)
    when one answers /healthz, else None. CLI commands use it so that, while a server owns the embedded stores,
    they go through its API (no second store opener, no local model load) and open the stores only without one."""
    base = (url or os.environ.get("CONDUCTOR_BASE_URL") or _configured_base_url()).rstrip("/")
    try:
        r = httpx.get(base + "/healthz", timeout=2.0)
        ok = r.status_code == 200 and "models" in r.json()
    except (httpx.HTTPError, ValueError):
        ok = False
    return ConductorClient(base_url=base, timeout=timeout) if ok else None


def cli_request(client: ConductorClient, method: str, path: str, **kw: Any) -> Any:
    """A CLI command's call to the running server: its answer, or a one-line click error (never a traceback)."""
    import click

    try:
        return client.request(method, path, **kw)
    except ConductorAPIError as e:
        raise click.ClickException(e.message) from None
    except Exception as e:  # the server went away mid-call
        raise click.ClickException(f"the Conductor server at {client.base_url} failed: {type(e).__name__}") from None


def serve_base_url(config: Any) -> str:
    """The one place the gateway's address is computed from a ConductorConfig: its host (a wildcard bind is
    reached on loopback) and port."""
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{config.server.port}"


def _configured_base_url() -> str:
    try:
        from cluster.config import load_config

        return serve_base_url(load_config())
    except ValueError:
        return "http://127.0.0.1:8000"


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
        err = body.get("error", body)
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except Exception:
        return r.text[:500]
