"""How apps and UI tabs reach Conductor's serving layer: the gateway's OpenAI-compatible HTTP API.

Apps are clients of the gateway (not of an engine), so fallback, caching, metrics and keys apply to them too.
Inside the stack a client comes from the config (`ConductorClient.for_config`: the gateway's address and the
internal key); command-line tools find the server with `cli_base_url` / `cli_api_key`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx

from deployments.openai_http import APIStatusError, OpenAIHTTP

# One exception for every OpenAI-shaped error answer (the gateway's, an app route's, a hosted API's).
ConductorAPIError = APIStatusError

# The user an app is acting for (an agent run's owner, the UI's logged-in user). Sent as x-conductor-user, which the
# guard honours only with the internal key: a user's own key can never claim another user.
ACTING_FOR: ContextVar[str | None] = ContextVar("conductor_acting_for", default=None)
ON_BEHALF_HEADER = "x-conductor-user"
REQUEST_ID_HEADER = "x-request-id"  # Serve's: accepted from the client (or made), returned, and in every log line


def current_request_id() -> str | None:
    """The id of the Serve request this code is serving, if any."""
    try:
        from ray.serve.context import _get_serve_request_context
    except ImportError:  # pragma: no cover - a client outside any Ray install
        return None
    try:
        return _get_serve_request_context().request_id or None
    except Exception:  # noqa: BLE001 - outside a replica there is no request context
        return None


@contextmanager
def acting_for(user: str | None) -> Iterator[None]:
    token = ACTING_FOR.set(user)
    try:
        yield
    finally:
        ACTING_FOR.reset(token)


def cli_base_url(url: str | None = None) -> str:
    """Where a command-line tool finds the server: `--url`, else $CONDUCTOR_BASE_URL (the documented override for
    a server elsewhere), else the configured host and port. Code inside the stack is given its config instead."""
    return (url or os.environ.get("CONDUCTOR_BASE_URL") or _configured_base_url()).rstrip("/")


def cli_api_key() -> str | None:
    """A command-line user's own key ($CONDUCTOR_API_KEY): a secret read, never written anywhere."""
    return os.environ.get("CONDUCTOR_API_KEY") or None


class ConductorClient(OpenAIHTTP):
    """The gateway's client (deployments/openai_http.py) plus Conductor's conventions: who it acts for, uploads,
    and OpenAI-shaped helpers (chat whole or streamed, embeddings, models)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0,
                 acting_user: Callable[[], str | None] = ACTING_FOR.get):
        self._acting_user = acting_user
        super().__init__(base_url, api_key, timeout, on_request=[self._say_who])

    @classmethod
    def for_config(cls, config: Any, timeout: float = 120.0,
                   acting_user: Callable[[], str | None] = ACTING_FOR.get) -> "ConductorClient":
        """An app's own client inside the stack: the configured gateway, authenticated with the internal key."""
        return cls(serve_base_url(config), config.server.internal_api_key, timeout, acting_user)

    def _say_who(self, request: httpx.Request) -> None:
        """Runs in the caller's thread as each request is sent, so it sees that caller's context: the user it acts
        for, and the request id of the request being served (one id through every hop, in every log line)."""
        user = self._acting_user()
        if user:
            request.headers[ON_BEHALF_HEADER] = quote(user, safe="")
        rid = current_request_id()
        if rid and REQUEST_ID_HEADER not in request.headers:
            request.headers[REQUEST_ID_HEADER] = rid

    def __enter__(self) -> "ConductorClient":
        return self

    def upload(self, path: str, data: bytes, params: dict[str, Any] | None = None,
               content_type: str = "application/octet-stream") -> Any:
        """POST a file as the raw body, declared as a file (upload routes refuse form and text/plain types)."""
        return self.request("POST", path, params=params, content=data, headers={"content-type": content_type})

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
    """A client for the Conductor server at `cli_base_url(url)` when one answers /healthz, else None. CLI commands
    use it so that, while a server owns the embedded stores, they go through its API (no second store opener, no
    local model load) and open the stores only without one."""
    base = cli_base_url(url)
    try:
        r = httpx.get(base + "/healthz", timeout=2.0)
        ok = r.status_code == 200 and "models" in r.json()
    except (httpx.HTTPError, ValueError):
        ok = False
    return ConductorClient(base, cli_api_key(), timeout=timeout) if ok else None


def cli_request(client: ConductorClient, method: str, path: str, **kw: Any) -> Any:
    """A CLI command's call to the running server: its answer, or a one-line click error (never a traceback)."""
    with cli_errors(client):
        return client.request(method, path, **kw)


@contextmanager
def cli_errors(client: ConductorClient):
    """Inside it, a failed call to the server ends the CLI command with its one-line reason, not a traceback."""
    import click

    try:
        yield
    except ConductorAPIError as e:
        raise click.ClickException(e.message) from None
    except click.ClickException:
        raise
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
