"""The agent's HTTP app (FastAPI, as built inside the Serve replica) against the scripted chat server."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from apps.agent import build_runner
from apps.agent.builtin import builtin_registry
from apps.agent.serve import create_app
from apps.agent.trace import TraceStore
from cluster.config import ConductorConfig
from tests.agent.scripted import ScriptedChatServer, react


@pytest.fixture()
def served(tmp_path):
    config = ConductorConfig.model_validate({"server": {"require_api_key": False},
                                             "agent": {"data_dir": str(tmp_path)}})
    srv = ScriptedChatServer().__enter__()
    reg = builtin_registry(config)
    store = TraceStore(tmp_path)
    app = create_app(config, lambda model: build_runner(config, base_url=srv.base_url, api_key="k",
                                                        model=model, registry=reg, store=store))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, srv
    srv.__exit__(None, None, None)


def _events(resp) -> list[dict]:
    out = []
    for line in resp.iter_lines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def test_streamed_run_then_get(served):
    client, srv = served
    srv.turns += [react({"tool": "calculator", "args": {"expression": "7*6"}}), react({"final_answer": "42"})]
    with client.stream("POST", "/runs", json={"task": "7*6?", "agent": "math"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
    assert [e["type"] for e in events] == ["run", "step", "step", "done"]
    assert events[1]["step"]["calls"][0]["result"] == "42"
    assert events[-1]["answer"] == "42" and events[-1]["stopped_reason"] == "final_answer"
    run = client.get(f"/runs/{events[0]['run_id']}").json()
    assert run["answer"] == "42" and len(run["steps"]) == 2 and "state" not in run
    assert client.get("/runs").json()["runs"][0]["run_id"] == events[0]["run_id"]


def test_pause_for_approval_and_resume_over_http(served):
    client, srv = served
    srv.turns += [react({"tool": "python", "args": {"code": "print(40+2)"}})]
    run = client.post("/runs", json={"task": "run it", "agent": "math", "stream": False}).json()
    assert run["stopped_reason"] == "needs_approval" and run["status"] == "paused"
    call_id = run["pending"][0]["id"]
    bad = client.post(f"/runs/{run['run_id']}/approval", json={"decisions": {"nope": True}, "stream": False})
    assert bad.status_code == 400 and "not pending" in bad.json()["error"]["message"]
    srv.turns += [react({"final_answer": "42"})]
    with client.stream("POST", f"/runs/{run['run_id']}/approval", json={"decisions": {call_id: True}}) as r:
        events = _events(r)
    assert events[0]["step"]["kind"] == "approval" and events[-1]["answer"] == "42"
    again = client.post(f"/runs/{run['run_id']}/approval", json={"approve": True})
    assert again.status_code == 409
    assert "exit code: 0" in srv.requests[-1]["messages"][-1]["content"]


def test_bad_requests_are_4xx(served):
    client, _ = served
    assert client.post("/runs", json={"task": ""}).status_code == 400
    r = client.post("/runs", json={"task": "x", "agent": "nope"})
    assert r.status_code == 400 and "unknown agent" in r.json()["error"]["message"]
    assert client.post("/runs", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.get("/runs/zzz").status_code == 404
    assert client.get("/runs/..%2F..%2Fetc").status_code == 404
    assert client.post("/runs/zzz/approval", json={"approve": True}).status_code == 404
    agents = client.get("/agents").json()
    assert {"assistant", "triage", "research", "math"} <= {a["name"] for a in agents["agents"]}
    assert next(a for a in agents["agents"] if a["name"] == "math")["dangerous"] == ["python"]


def test_model_down_streams_a_clean_stop(served):
    client, srv = served
    srv.turns += [{"status": 500}, {"status": 500}]
    with client.stream("POST", "/runs", json={"task": "hi"}) as r:
        events = _events(r)
    assert events[-1]["type"] == "done" and events[-1]["stopped_reason"] == "error"


def test_resume_route_continues_an_interrupted_run_and_refuses_others(served, tmp_path):
    client, srv = served
    store = TraceStore(tmp_path)
    from apps.agent.trace import Trace

    # A run its process left behind mid-run (the runner recorded is a pid that no longer exists).
    dead = Trace(task="7*6?", agent="math", mode="react", state={
        "agent": "math", "messages": [{"role": "system", "content": "Reply with JSON."},
                                      {"role": "user", "content": "7*6?"}],
        "sigs": [], "results": {}, "tokens": 0, "elapsed_s": 0.0, "model_steps": 0, "force_final": False,
        "auto_approve": [], "runner": {"host": "elsewhere", "pid": 1}})
    store.save(dead)
    srv.turns += [react({"final_answer": "42"})]
    r = client.post(f"/runs/{dead.run_id}/resume", json={"stream": False})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == "42" and r.json()["steps"][0]["kind"] == "resume"
    again = client.post(f"/runs/{dead.run_id}/resume", json={"stream": False})
    assert again.status_code == 409 and "not interrupted" in again.json()["error"]["message"]
    assert client.post("/runs/nope/resume", json={}).status_code == 404
    assert client.post(f"/runs/{dead.run_id}/resume", json={"surprise": 1}).status_code == 400


def test_sessions_keep_a_conversation_and_belong_to_their_user(served, tmp_path):
    from apps.agent.sessions import history_messages

    client, srv = served
    srv.turns += [react({"final_answer": "Ada Lovelace."}), react({"final_answer": "In 1843."})]
    first = client.post("/runs", json={"task": "Who wrote the first program?", "agent": "math", "stream": False,
                                       "session_id": "chat-1"})
    assert first.status_code == 200 and first.json()["answer"] == "Ada Lovelace."
    second = client.post("/runs", json={"task": "When?", "agent": "math", "stream": False, "session_id": "chat-1"})
    assert second.json()["answer"] == "In 1843."
    seen = [m["content"] for m in srv.requests[-1]["messages"]]
    assert seen[-3:] == ["Who wrote the first program?", "Ada Lovelace.", "When?"]  # the earlier turn, then the new
    assert client.get("/sessions").json()["sessions"][0]["turns"] == 2
    TraceStore(tmp_path).put_session("theirs", "bob", [])
    r = client.post("/runs", json={"task": "hi", "agent": "math", "session_id": "theirs"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    assert client.post("/runs", json={"task": "hi", "session_id": "no/slashes"}).status_code == 400
    # Only the newest turns that fit the budget are carried.
    turns = [{"task": f"q{i}", "answer": "a" * 400} for i in range(10)]
    kept = history_messages(turns, 300)
    assert [m["content"] for m in kept if m["role"] == "user"] == ["q8", "q9"]
