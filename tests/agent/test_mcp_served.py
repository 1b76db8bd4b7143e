"""MCP both ways through the real Serve stack: the official SDK's client calls Conductor's tools at /mcp (keys and
ownership as the HTTP API), `conductor mcp serve` speaks stdio to the SDK's stdio client, and a served agent uses
an external MCP server's tool (tests/agent/mcp_servers.py over stdio, declared in the stack's config)."""

from __future__ import annotations

import json
import sys

import anyio
import pytest

pytestmark = [pytest.mark.serve, pytest.mark.slow]
pytest.importorskip("mcp")


async def _with_client(url: str, key: str | None, fn):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"} if key else {},
                              timeout=httpx2.Timeout(300, connect=10))
    async with Client(streamable_http_client(url, http_client=http)) as client:
        return await fn(client)


def _text(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def test_the_sdk_client_lists_and_calls_conductors_tools(serve_stack):
    async def session(client):
        tools = {t.name for t in (await client.list_tools()).tools}
        calc = await client.call_tool("calculator", {"expression": "17 * 23 + 5"})
        missing = await client.call_tool("rag_search", {"collection": "no-such-collection", "question": "x"})
        bad = await client.call_tool("calculator", {"expression": "2 +"})
        return tools, calc, missing, bad

    tools, calc, missing, bad = anyio.run(_with_client, serve_stack.base_url + "/mcp", serve_stack.api_key, session)
    assert {"calculator", "rag_search", "rag_ask", "video_search", "detect_model", "run_agent"} <= tools
    assert not calc.is_error and _text(calc) == "396"
    # Errors are MCP tool errors carrying the API's reason, not crashes or empty answers.
    assert missing.is_error and "404" in _text(missing) and "does not exist" in _text(missing)
    assert bad.is_error and _text(bad)


def test_mcp_needs_a_key_and_keeps_users_apart(serve_stack):
    from tests.stack import OTHER_KEY

    with pytest.raises(BaseException):  # the guard answers 401 before any MCP exchange
        anyio.run(_with_client, serve_stack.base_url + "/mcp", None, lambda c: c.list_tools())
    with pytest.raises(BaseException):
        anyio.run(_with_client, serve_stack.base_url + "/mcp", "wrong-key-000000", lambda c: c.list_tools())
    # The tester's collection, searched over MCP by its owner and by another user.
    with serve_stack.http() as http:
        r = http.post("/v1/rag/mcp-notes/upload", params={"filename": "orion.md"},
                      content=b"# Orion\n\nProject Orion's lead engineer is Dana Whitfield.\n",
                      headers={"content-type": "text/markdown"})
        assert r.status_code == 200, r.text

    async def search(client):
        return await client.call_tool("rag_search", {"collection": "mcp-notes", "question": "Who leads Orion?"})

    mine = anyio.run(_with_client, serve_stack.base_url + "/mcp", serve_stack.api_key, search)
    theirs = anyio.run(_with_client, serve_stack.base_url + "/mcp", OTHER_KEY, search)
    assert not mine.is_error and "Dana Whitfield" in _text(mine)
    assert theirs.is_error and "404" in _text(theirs)


def test_conductor_mcp_serve_over_stdio(serve_stack):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from deployments.secrets import child_env

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cluster.cli", "mcp", "serve", "--url", serve_stack.base_url],
        env=child_env(CONDUCTOR_API_KEY=serve_stack.api_key, PYTHONPATH=str(_root())))

    async def session():
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            return tools, await client.call_tool("calculator", {"expression": "17 * 23 + 5"})

    tools, calc = anyio.run(session)
    assert "run_agent" in tools and _text(calc) == "396"


def test_a_served_agent_uses_an_external_mcp_servers_tool(serve_stack, scripted_chat):
    from tests.agent.scripted import react

    # The served agent drives non-llama.cpp models with JSON steps too (agent.mode auto); one turn per step.
    scripted_chat.turns = [react({"tool": "weather__forecast", "args": {"city": "Oslo", "days": 3}}),
                           react({"final_answer": "Sunny in Oslo for three days."})]
    with serve_stack.http(timeout=300) as http:
        r = http.post("/v1/agent/runs", json={"task": "Weather in Oslo?", "agent": "forecaster",
                                              "model": "scripted", "stream": False})
        assert r.status_code == 200, r.text
        run = r.json()
        listed = http.get("/v1/agent/mcp").json()["servers"]
    calls = [c for s in run["steps"] for c in s.get("calls", [])]
    assert calls
    assert calls and calls[0]["tool"] == "weather__forecast" and calls[0]["result"] == "sunny in Oslo for 3 day(s)"
    assert run["answer"] == "Sunny in Oslo for three days."
    prompt = scripted_chat.requests[-2]["messages"][0]["content"]
    assert "weather__forecast(" in prompt and "weather__evacuate" not in prompt  # the agent's patterns hold
    [weather] = listed
    assert weather["connected"] and "weather__forecast" in weather["tools"]
    log = serve_stack.config.agent.mcp_servers[0].env["MCP_CALL_LOG"]
    assert [json.loads(line)["tool"] for line in open(log)] == ["forecast"]


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
