"""Agent benchmark: a fixed task set (multi-step arithmetic, lookups in a small document collection, a code
task) run by the packaged local model (SmolLM2-135M, llama.cpp) with and without constrained decoding, and by a
scripted oracle model that always makes the right call.

Reported: success rate, steps per task, tool-call validity (a step is valid when it parses as a step, names an
allowed tool and its arguments validate), and the loop's own overhead per step vs the model's time per step.
Both models sit behind a loopback OpenAI-compatible HTTP endpoint, so the loop does exactly what it does
against the gateway. The document collection is embedded with the packaged MiniLM and searched by cosine.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from typing import Any

from apps.agent.local_chat_server import json_http_server

DOCS = [
    ("orion.txt", "Project Orion launched on 14 March 2023. Its lead engineer is Dana Whitfield."),
    ("atlas.txt", "The Atlas data center is located in Reykjavik and runs on geothermal power."),
    ("perks.txt", "Employees receive 27 days of paid vacation per year, plus public holidays."),
    ("cafe.txt", "The office cafeteria serves lunch from 11:30 to 14:00 on weekdays."),
    ("fleet.txt", "The delivery fleet has 48 electric vans and 12 cargo bikes."),
]

# (agent, task, expected substring of the answer, oracle's call: (tool, args))
TASKS: list[tuple[str, str, str, tuple[str, dict]]] = [
    ("calc", "What is 17 times 23 plus 5?", "396", ("calculator", {"expression": "17 * 23 + 5"})),
    ("calc", "What is 25 times 4?", "100", ("calculator", {"expression": "25 * 4"})),
    ("calc", "Compute (1234 - 567) * 3.", "2001", ("calculator", {"expression": "(1234 - 567) * 3"})),
    ("calc", "What is 144 divided by 12, plus 7?", "19", ("calculator", {"expression": "144 / 12 + 7"})),
    ("lookup", "Who is the lead engineer of Project Orion?", "Dana Whitfield",
     ("search_documents", {"query": "Project Orion lead engineer", "k": 1})),
    ("lookup", "Where is the Atlas data center?", "Reykjavik",
     ("search_documents", {"query": "Atlas data center location", "k": 1})),
    ("lookup", "How many electric vans are in the delivery fleet?", "48",
     ("search_documents", {"query": "delivery fleet electric vans", "k": 1})),
    ("coder", "Use Python to print the sum of the squares of the numbers 1 to 10.", "385",
     ("python", {"code": "print(sum(i * i for i in range(1, 11)))"})),
]


def _agents():
    from apps.agent.agents import AgentSpec

    # tool_first: these agents' answers must come from their tools (the agent option, not a per-task rule).
    return {"calc": AgentSpec("calc", "You solve arithmetic with the calculator.", tools=["calculator"],
                              tool_first=TOOL_FIRST),
            "lookup": AgentSpec("lookup", "You answer questions by searching the documents, then answering "
                                "from the passage you found.", tools=["search_documents"], tool_first=TOOL_FIRST),
            "coder": AgentSpec("coder", "You solve tasks by writing and running Python code.", tools=["python"],
                               tool_first=TOOL_FIRST)}


TOOL_FIRST = True


def _searcher():
    import numpy as np

    from deployments.embedder_local import shared_embedder

    emb = shared_embedder("packaged:minilm")
    vecs = np.asarray(emb.embed([t for _, t in DOCS]), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def search(query: str, _coll: str, k: int) -> list[dict[str, Any]]:
        q = np.asarray(emb.embed([query])[0], dtype=np.float32)
        order = np.argsort(-(vecs @ (q / np.linalg.norm(q))))[:k]
        return [{"source": DOCS[i][0], "text": DOCS[i][1]} for i in order]

    return search


class OracleServer:
    """OpenAI-compatible endpoint that plays a perfect model: the task's right call, then the observation's key
    fact as the answer. It isolates the loop's own overhead from model time."""

    def __init__(self):
        by_task = {task: (expected, call) for _, task, expected, call in TASKS}
        self.httpd = json_http_server(lambda body, _path, _auth: (200, self.answer(body, by_task)))
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def answer(body: dict[str, Any], by_task: dict[str, Any]) -> dict[str, Any]:
        msgs = body["messages"]
        task = next(m["content"] for m in reversed(msgs) if m["role"] == "user" and m["content"] in by_task)
        expected, (tool, args) = by_task[task]
        last = msgs[-1]["content"]
        if "<tool_output" in last and expected in last:
            step = {"final_answer": expected}
        else:
            step = {"tool": tool, "args": args}
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(step)},
                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_INVALID = re.compile(r"^(invalid arguments|unknown tool|tool '.*' is not available|arguments of)")


def _step_validity(trace) -> tuple[int, int]:
    steps = [s for s in trace.steps if s.kind == "model" and s.note != "model_error"]
    ok = sum(1 for s in steps if s.valid and not any(c.error and _INVALID.match(c.error) for c in s.calls))
    return ok, len(steps)


def run_suite(base_url: str, constrained: bool, tasks, data_dir: str, mode: str = "react") -> dict[str, Any]:
    from apps.agent import build_runner
    from apps.agent.builtin import builtin_registry
    from cluster.config import ConductorConfig

    config = ConductorConfig()
    reg = builtin_registry(config, rag=_searcher(), video=lambda q, c, k: [])
    runner = build_runner(config, base_url=base_url, api_key="", model="smollm2", registry=reg, agents=_agents(),
                          data_dir=data_dir, constrained=constrained, max_steps=4, step_max_tokens=128,
                          max_seconds=300, mode=mode)
    wins, steps, valid, total, loop_ms, model_ms, rows = 0, [], 0, 0, [], [], []
    for agent, task, expected, _ in tasks:
        trace = runner.run(task, agent=agent, auto_approve={"python"})
        ok = trace.stopped_reason == "final_answer" and expected.lower() in (trace.answer or "").lower()
        wins += ok
        v, n = _step_validity(trace)
        valid, total = valid + v, total + n
        model_steps = [s for s in trace.steps if s.kind == "model"]
        steps.append(len(model_steps))
        loop_ms += [s.loop_ms for s in model_steps]
        model_ms += [s.model_ms for s in model_steps]
        rows.append({"task": task, "ok": ok, "answer": trace.answer, "stopped": trace.stopped_reason,
                     "steps": len(model_steps)})
    return {"success": wins / len(tasks), "steps": statistics.mean(steps), "validity": valid / max(total, 1),
            "loop_ms": statistics.mean(loop_ms) if loop_ms else 0.0,
            "model_ms": statistics.mean(model_ms) if model_ms else 0.0, "tasks": rows}


def run(quick: bool = False) -> list[dict[str, Any]]:
    import tempfile

    from apps.agent.local_chat_server import LocalChatServer

    tasks = TASKS[::2] if quick else TASKS
    with tempfile.TemporaryDirectory() as tmp:
        oracle = OracleServer()
        try:
            o = run_suite(oracle.base_url, True, tasks, tmp)
        finally:
            oracle.close()
        t0 = time.perf_counter()
        with LocalChatServer(n_ctx=2048) as local:
            c = run_suite(local.base_url, True, tasks, tmp)
            u = run_suite(local.base_url, False, tasks, tmp)
            nat = run_suite(local.base_url, True, tasks, tmp, mode="native")  # OpenAI tools / tool_calls
        wall = time.perf_counter() - t0
    n = len(tasks)
    detail = "; ".join(f"{r['task'][:28]}…={'ok' if r['ok'] else r['stopped']}" for r in c["tasks"])
    return [
        {"name": "agent: tool-call validity, SmolLM2 constrained vs unconstrained", "conductor": c["validity"],
         "baseline": u["validity"], "unit": "valid steps / steps", "higher_is_better": True,
         "goal": "constrained decoding makes every step a valid call", "notes": f"{n} tasks"},
        {"name": "agent: task success, SmolLM2 constrained vs unconstrained", "conductor": c["success"],
         "baseline": u["success"], "unit": "fraction", "higher_is_better": True,
         "goal": "constrained >= unconstrained", "notes": detail},
        {"name": "agent: task success, SmolLM2 constrained vs scripted oracle", "conductor": c["success"],
         "baseline": o["success"], "unit": "fraction", "higher_is_better": True,
         "goal": "oracle = 1.0 proves the loop and tools; the gap is the 135M model",
         "notes": f"oracle steps/task {o['steps']:.2f}"},
        {"name": "agent: task success, SmolLM2 native tool calls vs JSON-step protocol", "conductor": nat["success"],
         "baseline": c["success"], "unit": "fraction", "higher_is_better": True,
         "goal": "native (tools/tool_calls, what frameworks use) works with the packaged model",
         "notes": f"native validity {nat['validity']:.2f}, steps/task {nat['steps']:.2f}; JSON-step validity "
                  f"{c['validity']:.2f}, steps/task {c['steps']:.2f}"},
        {"name": "agent: steps per task, SmolLM2 constrained vs oracle", "conductor": c["steps"],
         "baseline": o["steps"], "unit": "model steps", "higher_is_better": False,
         "goal": "close to the oracle's 2 (call, answer)", "notes": f"unconstrained {u['steps']:.2f}"},
        {"name": "agent: loop overhead per step vs model time per step (SmolLM2)", "conductor": c["loop_ms"],
         "baseline": c["model_ms"], "unit": "ms", "higher_is_better": False,
         "goal": "loop overhead negligible next to the model",
         "notes": f"oracle run: loop {o['loop_ms']:.2f} ms vs model+HTTP {o['model_ms']:.2f} ms per step; "
                  f"local suites wall {wall:.0f} s on a shared 2-core box"},
    ]


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
