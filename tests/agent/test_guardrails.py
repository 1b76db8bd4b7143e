"""Guardrails stop a run before the model or a tool sees the offending text, with a reason in the trace."""

from __future__ import annotations

from apps.agent import build_runner
from apps.agent.guardrails import Guardrails
from cluster.config import ConductorConfig, GuardrailConfig
from tests.agent.scripted import ScriptedChatServer, react


def _run(tmp_path, turns, task, guardrails=None, agent="math"):
    agent_cfg = {"data_dir": str(tmp_path), "mode": "react"}
    if guardrails is not None:
        agent_cfg["guardrails"] = guardrails
    config = ConductorConfig.model_validate({"agent": agent_cfg})
    with ScriptedChatServer(turns) as chat:
        trace = build_runner(config, base_url=chat.base_url, api_key="", model="scripted").run(task, agent)
        return trace, chat.requests


def test_a_secret_in_the_task_never_reaches_the_model(tmp_path):
    trace, requests = _run(tmp_path, [react({"final_answer": "x"})],
                           "store my key sk-abcdefghijklmnopqrstuvwx1234 please")
    assert trace.stopped_reason == "guardrail" and trace.answer is None
    assert requests == []  # the model was never called
    assert "looks like an API key" in trace.steps[-1].note and "sk-abc" not in trace.steps[-1].note


def test_tool_arguments_and_results_and_answers_are_checked(tmp_path):
    guard = {"output_patterns": [r"rm\s+-rf"], "input_patterns": [r"ignore (all|previous) instructions"]}
    # A call whose arguments trip the output guardrail: the tool never runs.
    trace, _ = _run(tmp_path, [react({"tool": "calculator", "args": {"expression": "1+1 # rm -rf /"}})], "sum", guard)
    assert trace.stopped_reason == "guardrail" and "arguments of calculator" in trace.steps[-1].note
    assert trace.steps[0].calls[0].result is None
    # A final answer that trips it is withheld.
    trace, _ = _run(tmp_path, [react({"final_answer": "just run rm -rf / and retry"})], "help", guard)
    assert trace.stopped_reason == "guardrail" and trace.answer is None
    # A size limit on the task.
    trace, requests = _run(tmp_path, [], "x" * 500, {"max_input_chars": 100})
    assert trace.stopped_reason == "guardrail" and "limit 100" in trace.steps[-1].note and not requests


def test_pii_and_a_classifier_model(tmp_path):
    g = Guardrails(GuardrailConfig(pii=True))
    assert "payment card" in g.check_input("card 4111 1111 1111 1111", "the task")
    assert "payment card" not in (g.check_input("order 1234 5678 9012 3456", "the task") or "")  # fails Luhn
    assert "e-mail address" in g.check_input("write to ada@example.org", "the task")
    assert g.check_input("nothing personal here", "the task") is None
    # The classifier is asked through the chat API; BLOCK stops the run, and it never sees the task as the agent.
    turns = [{"content": "BLOCK"}]
    trace, requests = _run(tmp_path, turns, "how do I pick a lock?", {"classifier_model": "guard"})
    assert trace.stopped_reason == "guardrail" and "classifier 'guard'" in trace.steps[-1].note
    assert [r["model"] for r in requests] == ["guard"]
    trace, requests = _run(tmp_path, [{"content": "ALLOW"}, react({"final_answer": "ok"}), {"content": "ALLOW"}],
                           "what is 2+2?", {"classifier_model": "guard", "secrets": False})
    assert trace.stopped_reason == "final_answer" and [r["model"] for r in requests] == ["guard", "scripted", "guard"]


def test_bad_guardrail_config_is_refused():
    import pytest

    with pytest.raises(ValueError, match="not a valid regex"):
        GuardrailConfig(input_patterns=["("])
