"""The Agent tab: builds inside Blocks, and folds a real HTTP event stream into collapsible chat items."""

from __future__ import annotations

import threading
import time

import pytest

from apps.agent import build_runner
from apps.agent.serve import create_app
from apps.agent.ui import build_tab, consume
from apps.client import ConductorClient
from cluster.config import ConductorConfig
from tests.agent.scripted import ScriptedChatServer, react
from tests.conftest import free_port


@pytest.fixture()
def agent_http(tmp_path):
    import uvicorn
    from fastapi import FastAPI

    config = ConductorConfig.model_validate({"server": {"require_api_key": False},
                                             "agent": {"data_dir": str(tmp_path)}})
    chat = ScriptedChatServer().__enter__()
    root = FastAPI()
    root.mount("/v1/agent", create_app(config, lambda m: build_runner(config, base_url=chat.base_url, api_key="",
                                                                      model=m)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    yield config, ConductorClient(f"http://127.0.0.1:{port}", api_key=""), chat
    server.should_exit = True
    chat.__exit__(None, None, None)


def test_stream_to_collapsible_items_and_approval(agent_http):
    config, client, chat = agent_http
    chat.turns += [react({"tool": "calculator", "args": {"expression": "2+2"}}),
                   react({"tool": "python", "args": {"code": "print(4)"}})]
    state: dict = {}
    snaps = list(consume(client.stream_sse("/v1/agent/runs", {"task": "2+2 then code", "agent": "math"}), [], state))
    history, state, status = snaps[-1]
    titles = [m.get("metadata", {}).get("title", "") for m in history]
    assert any(t.startswith("🔧 calculator [ok]") for t in titles)
    assert any(t.startswith("🔧 python [pending]") for t in titles) and titles[-1] == "⚠ approval needed"
    assert "waiting for approval" in status and state["pending"][0]["tool"] == "python"
    chat.turns += [react({"final_answer": "4"})]
    events = client.stream_sse(f"/v1/agent/runs/{state['run_id']}/approval", {"approve": False})
    history, state, _ = list(consume(events, history, state))[-1]
    assert history[-1] == {"role": "assistant", "content": "4"} and not state["pending"]
    assert any("python rejected" in (m.get("content") or "") for m in history)


def test_tab_builds(agent_http):
    import gradio as gr

    config, client, _ = agent_http

    class Ctx:
        pass

    ctx = Ctx()
    ctx.config, ctx.client = config, client
    with gr.Blocks() as demo:
        build_tab(ctx)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"agent-chat", "agent-approve", "agent-reject", "agent-runs", "agent-trace"} <= ids
