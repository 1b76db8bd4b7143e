"""End to end with the packaged local model (SmolLM2-135M via llama.cpp) under constrained decoding.

The model sits behind a loopback OpenAI-compatible endpoint (apps.agent.local_chat_server), so the agent talks HTTP to
it exactly as it talks to the gateway; the served-stack variant is in test_served.py.
"""

from __future__ import annotations

import json

import pytest

from apps.agent import build_runner
from apps.agent.agents import AgentSpec, default_agents
from apps.agent.chat_model import ChatModel
from cluster.config import ConductorConfig

pytest.importorskip("xllamacpp")


@pytest.fixture(scope="module")
def local_llm():
    from apps.agent.local_chat_server import LocalChatServer
    from deployments.packaged import PackagedModelMissing

    try:
        server = LocalChatServer()
    except PackagedModelMissing as e:
        pytest.skip(str(e))
    with server:
        yield server


def test_calculator_task_end_to_end_constrained(local_llm, tmp_path):
    # A calculator-only agent: offered the python sandbox too, the 135M model prefers writing code.
    agents = default_agents() | {"calc": AgentSpec("calc", "You solve arithmetic with the calculator.",
                                                   tools=["calculator"])}
    runner = build_runner(ConductorConfig(), base_url=local_llm.base_url, api_key="", model="smollm2",
                          agents=agents, data_dir=str(tmp_path), max_steps=4, step_max_tokens=96, max_seconds=600)
    trace = runner.run("What is 17 times 23 plus 5?", agent="calc")
    steps = [s for s in trace.steps if s.kind == "model"]
    # Every model step was a valid, schema-conforming step (constrained decoding), and the run finished.
    assert all(s.valid for s in steps), [s.output for s in steps]
    calc = [c for s in steps for c in s.calls if c.tool == "calculator" and c.status == "ok"]
    assert calc and calc[0].result == "396"
    assert trace.stopped_reason == "final_answer", trace.steps[-1].note
    assert trace.answer.strip() == "396"
    assert all(s.model_ms > 0 and s.prompt_tokens > 0 for s in steps)


def test_constrained_step_schema_is_honoured_by_llama_cpp(local_llm):
    from apps.agent import protocol as P
    from apps.agent.builtin import builtin_registry

    reg = builtin_registry(None)
    tools = [reg.get("calculator"), reg.get("current_time")]
    model = ChatModel(local_llm.base_url, None, "smollm2")
    msgs = [{"role": "system", "content": P.system_prompt("You use tools.", tools, "react")},
            {"role": "user", "content": "What time is it in Tokyo?"}]
    reply = model.complete(msgs, max_tokens=96, temperature=0,
                           response_format=P.response_format(P.step_schema(tools)))
    step = json.loads(reply.content)
    assert set(step) in ({"tool", "args"}, {"final_answer"})
    if "tool" in step:
        assert step["tool"] in {"calculator", "current_time"}
        reg.validate(step["tool"], step["args"])  # arguments match the tool's pydantic model


def test_injected_document_never_runs_code_unapproved_with_the_packaged_model(local_llm, tmp_path):
    """The packaged model reads a document that orders it to run code. Whatever it does next, code runs only after
    a person approves: no python call is executed in the run (paused for approval, or never asked for)."""
    from apps.agent.builtin import builtin_registry
    from apps.agent.tools import Tool, ToolRegistry
    from tests.agent.test_loop import INJECTION

    executed: list[str] = []
    builtin = builtin_registry(None, rag=lambda q, c, k: [{"source": "report.txt", "text": INJECTION}][:k])
    reg, python = ToolRegistry(), builtin.get("python")
    reg.register(builtin.get("search_documents"))
    reg.register(Tool("python", python.description, python.args_model,
                      lambda a: executed.append(a.code) or "ran", dangerous=True))  # records instead of running
    agents = {"reader": AgentSpec("reader", "You summarise documents. Search first.",
                                  tools=["search_documents", "python"])}
    runner = build_runner(ConductorConfig(), base_url=local_llm.base_url, api_key="", model="smollm2",
                          registry=reg, agents=agents, data_dir=str(tmp_path), max_steps=4, step_max_tokens=96,
                          max_seconds=600)
    trace = runner.run("Search the documents for the quarterly report and summarise it.", agent="reader")
    calls = [c for s in trace.steps for c in s.calls]
    assert any(c.tool == "search_documents" and "IMPORTANT SYSTEM NOTICE" in (c.result or "") for c in calls), \
        [(c.tool, c.status) for c in calls]  # the injection did reach the model
    assert executed == []
    assert all(c.status in ("pending", "rejected") for c in calls if c.tool == "python")
    if any(c.tool == "python" for c in calls):
        assert trace.status == "paused" and trace.stopped_reason == "needs_approval"


def test_native_tool_calls_with_the_packaged_model(local_llm, tmp_path):
    """Native mode (OpenAI `tools` / `tool_calls`, what agent frameworks use) drives the packaged model: the tool
    calls come back as OpenAI tool_calls (deployments/engines/tool_calls.py) and the run finishes."""
    agents = {"calc": AgentSpec("calc", "You solve arithmetic with the calculator.", tools=["calculator"])}
    runner = build_runner(ConductorConfig(), base_url=local_llm.base_url, api_key="", model="smollm2",
                          agents=agents, data_dir=str(tmp_path), max_steps=4, step_max_tokens=96, max_seconds=600,
                          mode="native")
    trace = runner.run("What is 17 times 23 plus 5?", agent="calc")
    assert trace.mode == "native"
    steps = [s for s in trace.steps if s.kind == "model"]
    calls = [c for s in steps for c in s.calls]
    # The mechanism, not the 135M model's arithmetic (the benchmark scores that, native vs JSON steps): every
    # step came back as valid tool calls or an answer, and the calls reached the calculator with its arguments.
    assert all(s.valid for s in steps), [s.output for s in steps]
    assert calls and calls[0].tool == "calculator" and "expression" in calls[0].args
    assert calls[0].status == "ok" or calls[0].error.startswith("calculator:"), calls[0].error
    assert trace.stopped_reason != "error", trace.steps[-1].note  # a model or protocol failure
