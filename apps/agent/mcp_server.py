"""Conductor as an MCP server: its capabilities as tools, at `/mcp` (streamable HTTP) and over stdio.

The tools are thin: each calls Conductor's own HTTP API (RAG, video, detective, agent runs) through the one
client, acting for the caller, so keys, ownership and limits are exactly the HTTP API's. The calculator runs
here (it is pure). At `/mcp` the guard every ingress installs (apps/security.py) authenticates the caller first;
`conductor mcp serve` (stdio) acts as whoever owns the key it was started with.

Stateless streamable HTTP with JSON responses: any replica answers any request, nothing to resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cluster.config import ConductorConfig, config_from_dict

INSTRUCTIONS = ("Conductor's tools: search and ask your document collections, search indexed videos, identify a "
                "model from its files, calculate exactly, and run a Conductor agent on a task.")


def build_mcp(client_factory: Callable[[], Any]) -> Any:
    """An MCPServer whose tools call Conductor through `client_factory()` (a ConductorClient)."""
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError as ToolFailed  # its message reaches the client

    from apps.agent.calculator import CalcError, calculate

    server = MCPServer("conductor", instructions=INSTRUCTIONS)

    async def api(method: str, path: str, **kw: Any) -> Any:
        from apps.client import ConductorAPIError

        def call() -> Any:
            with client_factory() as client:
                return client.request(method, path, **kw)

        try:
            return await asyncio.to_thread(call)  # copies the context: the call acts for this caller
        except ConductorAPIError as e:
            raise ToolFailed(f"{e.status}: {e.message}") from None

    @server.tool()
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression exactly (e.g. "17 * 23 + 5")."""
        try:
            return str(calculate(expression))
        except CalcError as e:
            raise ToolFailed(str(e)) from None

    @server.tool()
    async def rag_search(collection: str, question: str, k: int = 5) -> list[dict[str, Any]]:
        """Search one of your document collections; returns the best passages with their sources."""
        hits = (await api("POST", f"/v1/rag/{collection}/search", json={"question": question, "k": k}))["hits"]
        return [{"source": h.get("source"), "section": h.get("section"), "score": h.get("score"),
                 "text": h.get("text")} for h in hits]

    @server.tool()
    async def rag_ask(collection: str, question: str, k: int = 5) -> dict[str, Any]:
        """Answer a question from one of your document collections, with citations."""
        out = await api("POST", f"/v1/rag/{collection}/query", json={"question": question, "k": k})
        return {"answer": out.get("answer"), "sources": [
            {"source": s.get("source"), "section": s.get("section")} for s in out.get("sources", [])]}

    @server.tool()
    async def video_search(query: str, k: int = 5) -> list[dict[str, Any]]:
        """Find moments in your indexed videos by what is said, shown or written in them."""
        hits = (await api("POST", "/v1/video/search", json={"query": query, "k": k}))["data"]
        return [{"video": h.get("name") or h.get("video"), "start": h.get("start"), "end": h.get("end"),
                 "transcript": h.get("transcript"), "score": h.get("score")} for h in hits]

    @server.tool()
    async def detect_model(path: str) -> dict[str, Any]:
        """Identify a model (family, size, attention layout) from its files on the server, headers only."""
        return await api("POST", "/v1/detect/", json={"path": path})

    @server.tool()
    async def run_agent(task: str, agent: str | None = None) -> dict[str, Any]:
        """Run a Conductor agent on a task; returns its answer (or that it waits for a person's approval)."""
        body = {"task": task, **({"agent": agent} if agent else {})}
        run = await api("POST", "/v1/agent/runs", json=body)
        return {"run_id": run.get("run_id"), "status": run.get("status"), "answer": run.get("answer"),
                "stopped_reason": run.get("stopped_reason")}

    return server


def create_app(config: ConductorConfig, client_factory: Callable[[], Any] | None = None) -> Any:
    """The FastAPI app at /mcp: the guard first (keys, Origin/Host, body cap), then the MCP transport."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.routing import Route

    from apps.client import ConductorClient
    from apps.common import install_common

    server = build_mcp(client_factory or (lambda: ConductorClient.for_config(config, timeout=600)))
    # The guard already refused cross-site requests (Origin, Host) and wrong keys; the SDK's own Host check would
    # also refuse a server deliberately bound beyond loopback.
    transport = server.streamable_http_app(
        streamable_http_path="/", stateless_http=True, json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        async with transport.router.lifespan_context(transport):  # the session manager's task group
            yield

    app = FastAPI(title="Conductor MCP", lifespan=lifespan)
    install_common(app, config)
    # A route, not a mount: the guard decides by the route a request resolves to, and this one needs a key.
    app.router.routes.append(Route("/", endpoint=transport, methods=["GET", "POST", "DELETE"]))
    return app


def build_app(args: dict[str, Any]) -> Any:
    """Serve entry point for /mcp: args = {"config": <dict>}."""
    from apps.common import config_ingress_app

    config = config_from_dict(args["config"])
    opts = config.agent.resources.serve_options("MCPIngress")
    return config_ingress_app(create_app, opts, config)
