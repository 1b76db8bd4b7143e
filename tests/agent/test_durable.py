"""Runs survive their process: checkpointed after every completed step, a run whose process is SIGKILLed mid-step
resumes from its last completed step in another process, and no completed step's tool runs twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from apps.agent.trace import TraceStore
from tests.agent.scripted import ScriptedChatServer, react

ROOT = Path(__file__).resolve().parents[2]

# The run's process: a real AgentRunner with two tools, `count` (logs each call) and `block` (never returns).
WORKER = textwrap.dedent('''
    import json, sys, time
    from pydantic import BaseModel
    from apps.agent.agents import AgentSpec
    from apps.agent.chat_model import ChatModel
    from apps.agent.loop import AgentRunner
    from apps.agent.tools import Tool, ToolRegistry
    from apps.agent.trace import TraceStore
    from cluster.config import AgentConfig

    base, data, log, url, idempotent = sys.argv[1:6]

    class NoArgs(BaseModel):
        pass

    def count(_):
        open(log, "a").write("count\\n")
        return "counted"

    def block(_):
        open(log, "a").write("block\\n")
        time.sleep(600)

    reg = ToolRegistry([Tool("count", "count once", NoArgs, count),
                        Tool("block", "never returns", NoArgs, block, timeout_s=900, idempotent=idempotent == "1")])
    agents = {"worker": AgentSpec("worker", "Work.", tools=["count", "block"])}
    conf = AgentConfig(mode="react", data_dir=data)
    from apps.agent.run_store import SQLRunStore

    store = TraceStore(data) if url == "file" else SQLRunStore(url)
    runner = AgentRunner(ChatModel(base, None, "scripted"), reg, agents, conf, store)
    runner.run("count, then block", "worker", on_event=lambda e: print(json.dumps(e), flush=True))
''')


def _registry(log: Path, idempotent: bool):
    from pydantic import BaseModel

    from apps.agent.tools import Tool, ToolRegistry

    class NoArgs(BaseModel):
        pass

    def count(_):
        with open(log, "a") as f:
            f.write("count\n")
        return "counted"

    def block(_):
        with open(log, "a") as f:
            f.write("block-again\n")
        return "unblocked"

    return ToolRegistry([Tool("count", "count once", NoArgs, count),
                         Tool("block", "returns at once now", NoArgs, block, idempotent=idempotent)])


@pytest.fixture(params=["sqlite", "postgres", "file"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return "file"


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_killed_run_resumes_from_its_last_completed_step(tmp_path, store_url, idempotent):
    """The run's process is SIGKILLed while a tool runs; another process resumes it from the shared store: the
    completed step is not run again, the cut-short call is repeated only if its tool is idempotent."""
    from apps.agent.run_store import SQLRunStore

    from apps.agent.agents import AgentSpec
    from apps.agent.chat_model import ChatModel
    from apps.agent.loop import AgentRunner
    from cluster.config import AgentConfig

    data, log = tmp_path / "agent", tmp_path / "calls.log"
    turns = [react({"tool": "count", "args": {}}), react({"tool": "block", "args": {}}),
             react({"final_answer": "done after the restart"})]
    with ScriptedChatServer(turns) as chat:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, chat.base_url, str(data), str(log), store_url,
                                 "1" if idempotent else "0"], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        run_id = json.loads(proc.stdout.readline())["run_id"]  # the "run" event comes first
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and "block" in log.read_text():
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-step: the block tool is running
        proc.wait(timeout=30)
        store = TraceStore(data) if store_url == "file" else SQLRunStore(store_url)
        saved = store.get(run_id)
        assert saved.status == "running" and [c.tool for s in saved.steps for c in s.calls] == ["count", "block"]
        assert saved.state["in_flight"] == [saved.steps[-1].calls[0].id]

        agents = {"worker": AgentSpec("worker", "Work.", tools=["count", "block"])}
        runner = AgentRunner(ChatModel(chat.base_url, None, "scripted"), _registry(log, idempotent), agents,
                             AgentConfig(mode="react", data_dir=str(data)), store)
        trace = runner.resume_interrupted(run_id)
    assert trace.stopped_reason == "final_answer" and trace.answer == "done after the restart"
    assert [s.kind for s in trace.steps][-2:] == ["resume", "model"]
    block = trace.steps[1].calls[0]
    if idempotent:  # cut short, safe to repeat: repeated
        assert log.read_text().splitlines() == ["count", "block", "block-again"] and block.result == "unblocked"
    else:  # cut short, maybe took effect: reported, never repeated
        assert log.read_text().splitlines() == ["count", "block"] and "not idempotent" in block.error
    assert "interruption in step 1" in trace.steps[-2].note
    assert store.get(run_id).status == "done"
    with pytest.raises(ValueError, match="is done, not interrupted"):
        runner.resume_interrupted(run_id)


def test_a_live_run_is_not_resumed_elsewhere(tmp_path):
    from apps.agent.durable import interruption
    from apps.agent.trace import Trace

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        trace = Trace(task="t", agent="a", state={"runner": {"host": socket.gethostname(), "pid": sleeper.pid}})
        assert "still running" in interruption(trace)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert interruption(trace) is None  # its process is gone: interrupted
