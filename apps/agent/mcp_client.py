"""Agents use the tools of external MCP servers (stdio commands or streamable HTTP URLs) through the official SDK.

Each configured server (`agent.mcp_servers`) is one `MCPConnection`: started lazily the first time an agent that
may use it runs, kept open on an event loop of its own (the agent loop and its tools are threads), and closed
with the app. Its tools join the agent's registry as `server__tool` (OpenAI function names allow no dots;
`server.tool` is accepted wherever a name is written in config). Arguments are validated against the server's
JSON schema by the registry before anything is sent. A server that does not start, is slow or fails becomes an
observation the model sees, never a crashed run.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from apps.agent.tools import Tool, ToolError, ToolRegistry

log = logging.getLogger("conductor.agent.mcp")
SEP = "__"


def wire_name(server: str, tool: str) -> str:
    return f"{server}{SEP}{tool}"


def dotted(name: str) -> str:
    """`server__tool` or `server.tool` -> `server.tool` (how patterns are matched)."""
    return name.replace(SEP, ".", 1) if "." not in name else name


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(dotted(name), dotted(p)) for p in patterns)


class MCPUnavailable(RuntimeError):
    """The server could not be started or reached; the message says why (shown to the model and the UI)."""


class MCPConnection:
    """One external MCP server: a session held open by a task on a private event loop thread."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: Future | None = None  # -> list of the server's tool definitions
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self.error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------
    def _target(self, stack: Any) -> Any:
        """What the SDK's Client connects to; an HTTP client made here is closed with `stack`."""
        from mcp.client.stdio import StdioServerParameters

        if self.cfg.command:
            from deployments.secrets import child_env

            # The server is somebody else's program: it gets the environment a sandboxed child gets, plus what
            # its config names (never our credentials).
            return StdioServerParameters(command=self.cfg.command[0], args=list(self.cfg.command[1:]),
                                         env=child_env(**self.cfg.env))
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        from deployments.secrets import read_secret

        token = read_secret(self.cfg.bearer_token_env)
        # No read timeout here: one slow call must not take the session down; each call has its own (call()).
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {},
                                  timeout=httpx2.Timeout(None, connect=5.0))
        stack.push_async_callback(http.aclose)  # the SDK leaves a client it was given open
        return streamable_http_client(self.cfg.url, http_client=http)

    async def _hold(self, ready: Future) -> None:
        from contextlib import AsyncExitStack

        from mcp import Client

        self._stop = asyncio.Event()
        try:
            async with AsyncExitStack() as stack, Client(self._target(stack)) as client:
                listed = await asyncio.wait_for(client.list_tools(), self.cfg.startup_timeout_s)
                self._client = client
                ready.set_result(list(listed.tools))
                await self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - whatever stops the server is reported, not raised
            reason = _reason(e)
            self.error = reason
            if not ready.done():
                ready.set_exception(MCPUnavailable(f"MCP server {self.cfg.name!r} is unavailable: {reason}"))
            else:
                log.warning("MCP server %s stopped: %s", self.cfg.name, reason)
        finally:
            self._client = None

    def tools(self) -> list[Any]:
        """The server's tool definitions, connecting on first use (MCPUnavailable if it cannot start)."""
        with self._lock:
            dead = self._ready is not None and self._ready.done() and (
                self._ready.exception() is not None or self._client is None)
            if self._ready is None or dead:  # first use, or it failed or stopped since: (re)start it
                self.error = None
                self._ready = Future()
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name=f"mcp-{self.cfg.name}").start()
                asyncio.run_coroutine_threadsafe(self._hold(self._ready), self._loop)
            ready = self._ready
        try:
            return ready.result(timeout=self.cfg.startup_timeout_s + 5)
        except FutureTimeout:
            raise MCPUnavailable(f"MCP server {self.cfg.name!r} did not answer within "
                                 f"{self.cfg.startup_timeout_s:g} s") from None

    def call(self, tool: str, args: dict[str, Any]) -> str:
        if self._client is None or self._loop is None:
            self.tools()
        if self._client is None or self._loop is None:
            raise ToolError(f"MCP server {self.cfg.name!r} is not connected: {self.error}", retryable=True)
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._client.call_tool(tool, args), self.cfg.timeout_s), self._loop)
        try:
            result = fut.result(timeout=self.cfg.timeout_s + 2)
        except (FutureTimeout, asyncio.TimeoutError, TimeoutError):
            fut.cancel()
            raise ToolError(f"{self.cfg.name}.{tool} did not answer within {self.cfg.timeout_s:g} s") from None
        except Exception as e:  # noqa: BLE001 - a protocol error, a malformed result, a dropped connection
            raise ToolError(f"{self.cfg.name}.{tool} failed: {_reason(e)}") from None
        return render_result(self.cfg.name, tool, result)

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is None:
            return
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        # The loop belongs to another thread: schedule on it, giving the session 5 s to close its transport.
        loop.call_soon_threadsafe(loop.call_later, 5.0, loop.stop)

    def status(self) -> dict[str, Any]:
        connected = self._client is not None
        return {"name": self.cfg.name, "transport": "stdio" if self.cfg.command else "http",
                "connected": connected, "error": None if connected else self.error}


def _reason(e: BaseException) -> str:
    """One line for a failure, from inside an exception group too (anyio wraps the transport's errors)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def render_result(server: str, tool: str, result: Any) -> str:
    """A CallToolResult as the text the model sees; an error result is a ToolError."""
    import json

    parts = []
    for item in getattr(result, "content", None) or []:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')}]")
    structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if structured is not None and not parts:
        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if getattr(result, "is_error", None) or getattr(result, "isError", None):
        raise ToolError(f"{server}.{tool} answered with an error: {text[:500] or 'no detail'}")
    return text


class MCPToolProvider:
    """The configured MCP servers; registers each server's tools into the registry the first time an agent that
    may use them asks."""

    def __init__(self, servers: list[Any], registry: ToolRegistry,
                 connect: Callable[[Any], MCPConnection] = MCPConnection):
        self.registry = registry
        self.connections = {s.name: connect(s) for s in servers}
        self._registered: set[str] = set()
        self._lock = threading.Lock()
        self.refused: dict[str, str] = {}  # namespaced tool -> why it was not registered

    def tools(self, patterns: list[str], deny: list[str]) -> list[Tool]:
        """The MCP tools an agent with these allow/deny patterns may use (servers connected as needed)."""
        out = []
        for name, conn in self.connections.items():
            if not any(dotted(p).split(".", 1)[0] in (name, "*") for p in patterns):
                continue
            self._register(name, conn)
            out += [t for t in self._server_tools(name) if matches(t.name, patterns) and not matches(t.name, deny)]
        return out

    def _server_tools(self, server: str) -> list[Tool]:
        prefix = server + SEP
        return [t for n in self.registry.names() if n.startswith(prefix) and (t := self.registry.get(n))]

    def _register(self, server: str, conn: MCPConnection) -> None:
        with self._lock:
            if server in self._registered:
                return
            try:
                defs = conn.tools()
            except MCPUnavailable as e:
                log.warning("%s", e)
                return  # not marked registered: the next run tries again
            self._registered.add(server)
            for d in defs:
                self._add(conn, d)

    def _add(self, conn: MCPConnection, d: Any) -> None:
        cfg = conn.cfg
        name = wire_name(cfg.name, getattr(d, "name", ""))
        schema = getattr(d, "input_schema", None) or getattr(d, "inputSchema", None) or {"type": "object"}
        why = _refusal(cfg, d.name, name, schema, self.registry)
        if why:
            self.refused[name] = why
            log.warning("MCP tool %s refused: %s", name, why)
            return
        dangerous = cfg.dangerous is True or (isinstance(cfg.dangerous, list) and d.name in cfg.dangerous)
        hints = getattr(d, "annotations", None)
        idempotent = bool(getattr(hints, "idempotent_hint", None) or getattr(hints, "read_only_hint", None))
        self.registry.register(Tool(name, (getattr(d, "description", None) or d.name)[:1000], None,
                                    lambda args, _t=d.name: conn.call(_t, args), dangerous=dangerous,
                                    timeout_s=cfg.timeout_s + 5, schema=dict(schema), idempotent=idempotent))

    def connect_all(self) -> None:
        for name, conn in self.connections.items():
            self._register(name, conn)

    def status(self) -> list[dict[str, Any]]:
        return [{**c.status(), "tools": [t.name for t in self._server_tools(n)],
                 "refused": {k: v for k, v in self.refused.items() if k.startswith(n + SEP)}}
                for n, c in self.connections.items()]

    def close(self) -> None:
        for c in self.connections.values():
            c.close()


def _refusal(cfg: Any, tool: str, name: str, schema: Any, registry: ToolRegistry) -> str | None:
    """Why a listed tool cannot be offered (None: it can)."""
    from jsonschema import Draft202012Validator, SchemaError

    if not tool or not tool.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        return f"tool name {tool!r} is not letters, digits, '-' and '_' (at most 64 with the server prefix)"
    if cfg.allow and not matches(name, [f"{cfg.name}.{a}" for a in cfg.allow]):
        return "not in the server's allow list"
    if cfg.deny and matches(name, [f"{cfg.name}.{d}" for d in cfg.deny]):
        return "in the server's deny list"
    if name in registry:
        return "a tool of that name is already registered"
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return "its input schema is not a JSON object schema"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        return f"its input schema is invalid: {e.message[:200]}"
    return None
