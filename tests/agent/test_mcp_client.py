"""Agents use external MCP servers' tools: real servers (tests/agent/mcp_servers.py) over stdio and streamable HTTP,
the official SDK as the client, a scripted chat model as the only stand-in (the network edge)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from apps.agent import build_runner
from apps.agent.builtin import builtin_registry
from cluster.config import ConductorConfig
from tests.agent.mcp_servers import HTTPServer
from tests.agent.scripted import ScriptedChatServer

pytest.importorskip("mcp")


def _config(tmp_path, servers: list[dict], mcp_tools: list[str], mcp_deny: list[str] | None = None,
            **agent) -> ConductorConfig:
    return ConductorConfig.model_validate({"agent": {
        "data_dir": str(tmp_path / "agent"), "mode": "native", "mcp_servers": servers,
        "agents": [{"name": "forecaster", "instructions": "Use the weather tools.", "mcp_tools": mcp_tools,
                    "mcp_deny": mcp_deny or []}], **agent}})


def _stdio(tmp_path, **kw) -> dict:
    return {"name": "weather", "command": [sys.executable, "-m", "tests.agent.mcp_servers"],
            "env": {"MCP_CALL_LOG": str(tmp_path / "calls.jsonl"), "PYTHONPATH": str(_root())}, **kw}


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def _calls(tmp_path) -> list[dict]:
    p = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _run(config, turns, task="weather in Oslo?"):
    with ScriptedChatServer(turns) as chat:
        runner = build_runner(config, base_url=chat.base_url, api_key="", model="scripted")
        try:
            return runner.run(task, "forecaster"), chat.requests, runner
        finally:
            runner.registry.close()


def test_stdio_tools_are_namespaced_filtered_called_and_validated(tmp_path):
    config = _config(tmp_path, [_stdio(tmp_path, deny=["explode"])], ["weather.*"], ["weather.add"])
    turns = [{"tool_calls": [("weather__forecast", {"city": "Oslo", "days": 2})]},
             {"tool_calls": [("weather__forecast", {"city": 7})]},  # wrong type: refused before it is sent
             {"content": "Sunny in Oslo."}]
    trace, requests, runner = _run(config, turns)
    assert trace.stopped_reason == "final_answer", trace.steps
    offered = {t["function"]["name"] for t in requests[0]["tools"]}
    # Namespaced; the agent's deny pattern and the server's deny list both hold.
    assert {"weather__forecast", "weather__hang", "weather__garbled", "weather__evacuate"} <= offered
    assert "weather__add" not in offered and "weather__explode" not in offered
    schema = next(t for t in requests[0]["tools"] if t["function"]["name"] == "weather__forecast")["function"]
    assert schema["parameters"]["required"] == ["city"]
    first, second = trace.steps[0].calls[0], trace.steps[1].calls[0]
    assert first.status == "ok" and first.result == "sunny in Oslo for 2 day(s)"
    assert second.status == "error" and "invalid arguments for weather__forecast" in second.error
    assert [c["tool"] for c in _calls(tmp_path)] == ["forecast"]  # the invalid call never reached the server


def test_http_server_with_a_bearer_token(tmp_path, monkeypatch):
    monkeypatch.setenv("WEATHER_TOKEN", "mcp-secret")
    with HTTPServer("mcp-secret") as srv:
        config = _config(tmp_path, [{"name": "wx", "url": srv.url, "bearer_token_env": "WEATHER_TOKEN"}], ["wx.*"])
        trace, _, runner = _run(config, [{"tool_calls": [("wx__add", {"a": 17, "b": 396})]}, {"content": "413"}])
        assert trace.steps[0].calls[0].status == "ok" and trace.steps[0].calls[0].result == "413"
        # The same server without the token: unavailable, said so, and the run still ends with an answer.
        monkeypatch.setenv("WEATHER_TOKEN", "wrong")
        config = _config(tmp_path, [{"name": "wx", "url": srv.url, "bearer_token_env": "WEATHER_TOKEN"}], ["wx.*"])
        trace, requests, runner = _run(config, [{"content": "no tools today"}])
        assert trace.stopped_reason == "final_answer"
        assert not any(t["function"]["name"].startswith("wx__") for t in requests[0].get("tools") or [])
        [status] = runner.registry.providers[0].status()
        assert status["connected"] is False and status["error"]


def test_hanging_failing_and_malformed_tools_become_observations(tmp_path, monkeypatch):
    monkeypatch.setenv("WEATHER_TOKEN", "mcp-secret")
    with HTTPServer("mcp-secret") as srv:
        config = _config(tmp_path, [{"name": "wx", "url": srv.url, "bearer_token_env": "WEATHER_TOKEN",
                                     "timeout_s": 2}], ["wx.*"])
        turns = [{"tool_calls": [("wx__hang", {})]}, {"tool_calls": [("wx__explode", {})]},
                 {"tool_calls": [("wx__garbled", {})]}, {"tool_calls": [("wx__forecast", {"city": "Rome"})]},
                 {"content": "done"}]
        t0 = time.monotonic()
        trace, _, _ = _run(config, turns)
    calls = [s.calls[0] for s in trace.steps if s.calls]
    assert trace.stopped_reason == "final_answer"
    assert calls[0].status == "error" and "did not answer within 2 s" in calls[0].error
    assert calls[1].status == "error" and "barometer broke" in calls[1].error
    assert calls[2].status == "error" and "wx.garbled failed" in calls[2].error
    assert calls[3].status == "ok" and calls[3].result == "sunny in Rome for 1 day(s)"  # the server still serves
    assert time.monotonic() - t0 < 60  # a hung server never holds the run past its per-call timeout (no hang)


def test_missing_command_and_refused_url_are_reported_not_raised(tmp_path):
    servers = [{"name": "ghost", "command": ["/nonexistent/mcp-server"], "startup_timeout_s": 5},
               {"name": "closed", "url": "http://127.0.0.1:9/mcp", "startup_timeout_s": 5}]
    config = _config(tmp_path, servers, ["ghost.*", "closed.*"])
    trace, requests, runner = _run(config, [{"content": "nothing to use"}])
    assert trace.stopped_reason == "final_answer"
    assert not (requests[0].get("tools") or [])
    status = {s["name"]: s for s in runner.registry.providers[0].status()}
    assert status["ghost"]["connected"] is False and status["ghost"]["error"]
    assert status["closed"]["connected"] is False and status["closed"]["error"]


def test_dangerous_mcp_tools_wait_for_approval(tmp_path):
    config = _config(tmp_path, [_stdio(tmp_path, dangerous=["evacuate"])], ["weather.evacuate"])
    trace, _, _ = _run(config, [{"tool_calls": [("weather__evacuate", {"city": "Pompeii"})]}])
    assert trace.status == "paused" and trace.pending[0].tool == "weather__evacuate"
    assert _calls(tmp_path) == []  # nothing ran without a person


def test_config_refuses_bad_mcp_declarations():
    with pytest.raises(ValueError, match="exactly one of"):
        ConductorConfig.model_validate({"agent": {"mcp_servers": [{"name": "x"}]}})
    with pytest.raises(ValueError, match="names no configured MCP server"):
        ConductorConfig.model_validate({"agent": {"agents": [{"name": "a", "instructions": "i",
                                                              "mcp_tools": ["nope.*"]}]}})
    with pytest.raises(ValueError, match="unique"):
        ConductorConfig.model_validate({"agent": {"mcp_servers": [{"name": "x", "url": "http://a"},
                                                                  {"name": "x", "url": "http://b"}]}})


def test_a_malformed_tool_schema_is_refused_with_a_reason(tmp_path):
    from types import SimpleNamespace

    from apps.agent.mcp_client import MCPToolProvider
    from apps.agent.tools import ToolRegistry

    cfg = SimpleNamespace(name="odd", allow=[], deny=[], dangerous=False, timeout_s=5, startup_timeout_s=5)
    defs = [SimpleNamespace(name="ok", description="fine", input_schema={"type": "object"}),
            SimpleNamespace(name="broken", description="", input_schema={"type": "object", "properties": 5}),
            SimpleNamespace(name="not.allowed", description="", input_schema={"type": "object"}),
            SimpleNamespace(name="ok", description="again", input_schema={"type": "object"})]
    conn = SimpleNamespace(cfg=cfg, tools=lambda: defs, status=lambda: {"name": "odd"}, close=lambda: None)
    reg = ToolRegistry()
    provider = MCPToolProvider([cfg], reg, connect=lambda _: conn)
    assert [t.name for t in provider.tools(["odd.*"], [])] == ["odd__ok"]
    assert "invalid" in provider.refused["odd__broken"]
    assert "letters" in provider.refused["odd__not.allowed"]
    assert "already registered" in provider.refused["odd__ok"]


def test_builtin_registry_without_mcp_servers_has_no_provider():
    assert builtin_registry(ConductorConfig()).providers == []
