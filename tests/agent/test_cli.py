"""`conductor agent` through click's CliRunner against the scripted chat server."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cluster.cli import cli
from tests.agent.scripted import ScriptedChatServer, react


def _env(tmp_path):
    return {"CONDUCTOR__AGENT__DATA_DIR": str(tmp_path), "CONDUCTOR_API_KEY": "sk-cli"}


def test_agent_prints_answer_and_json(tmp_path):
    turns = [react({"tool": "calculator", "args": {"expression": "6*7"}}), react({"final_answer": "42"})]
    with ScriptedChatServer(turns) as srv:
        r = CliRunner().invoke(cli, ["agent", "What is 6*7?", "--agent", "math", "--base-url", srv.base_url],
                               env=_env(tmp_path))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "42"
    assert srv.requests[0]["auth"] == "Bearer sk-cli" and srv.requests[0]["model"] == "smollm2"
    turns = [react({"tool": "calculator", "args": {"expression": "6*7"}}), react({"final_answer": "42"})]
    with ScriptedChatServer(turns) as srv:
        r = CliRunner().invoke(cli, ["agent", "6*7", "--agent", "math", "--json", "--base-url", srv.base_url,
                                     "--model", "other"], env=_env(tmp_path))
    doc = json.loads(r.stdout)
    assert doc["answer"] == "42" and doc["stopped_reason"] == "final_answer"
    assert doc["steps"][0]["calls"][0]["result"] == "42" and srv.requests[0]["model"] == "other"


def test_needs_approval_then_resume(tmp_path):
    turns = [react({"tool": "python", "args": {"code": "print(2+2)"}})]
    with ScriptedChatServer(turns) as srv:
        r = CliRunner().invoke(cli, ["agent", "run code", "--agent", "math", "--json", "--base-url", srv.base_url],
                               env=_env(tmp_path))
    doc = json.loads(r.stdout)
    assert doc["stopped_reason"] == "needs_approval" and doc["pending"][0]["tool"] == "python"
    with ScriptedChatServer([react({"final_answer": "4"})]) as srv:
        r = CliRunner().invoke(cli, ["agent", "--resume", doc["run_id"], "--approve", "--base-url", srv.base_url],
                               env=_env(tmp_path))
    assert r.exit_code == 0 and r.stdout.strip() == "4"
    assert "exit code: 0" in srv.requests[0]["messages"][-1]["content"]


def test_bad_input_is_one_line_error(tmp_path):
    env = _env(tmp_path)
    r = CliRunner().invoke(cli, ["agent"], env=env)
    assert r.exit_code == 2 and "give a TASK" in r.output
    r = CliRunner().invoke(cli, ["agent", "x", "--agent", "nope", "--base-url", "http://127.0.0.1:9"], env=env)
    assert r.exit_code == 2 and "unknown agent 'nope'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["agent", "--resume", "doesnotexist", "--approve"], env=env)
    assert r.exit_code == 1 and "no run 'doesnotexist'" in r.output
    r = CliRunner().invoke(cli, ["agent", "hi", "--base-url", "http://127.0.0.1:9"], env=env)
    assert r.exit_code == 1 and "chat API unreachable" in r.output
