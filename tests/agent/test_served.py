"""The agent through the whole served stack: /v1/agent on the Serve ingress, the gateway's chat API, llama.cpp
with constrained decoding (response_format json_schema passed through the gateway)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def _events(resp) -> list[dict]:
    return [json.loads(line[5:]) for line in resp.iter_lines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_calculator_run_through_the_gateway(serve_stack):
    with serve_stack.http(timeout=600) as http:
        with http.stream("POST", "/v1/agent/runs", json={"task": "What is 17 times 23 plus 5?",
                                                          "agent": "calculator"}) as r:
            assert r.status_code == 200, r.read()
            events = _events(r)
        assert events[0]["type"] == "run" and events[-1]["type"] == "done"
        steps = [e["step"] for e in events if e["type"] == "step" and e["step"]["kind"] == "model"]
        assert steps and all(s["valid"] for s in steps)
        assert any(c["tool"] == "calculator" and c["result"] == "396" for s in steps for c in s["calls"])
        assert events[-1]["stopped_reason"] == "final_answer" and "396" in events[-1]["answer"]
        run = http.get(f"/v1/agent/runs/{events[0]['run_id']}").json()
        assert run["answer"] == events[-1]["answer"] and run["totals"]["model_steps"] == len(steps)


def test_agent_api_needs_a_key_and_rejects_bad_input(serve_stack):
    import httpx

    r = httpx.post(serve_stack.base_url + "/v1/agent/runs", json={"task": "x"}, timeout=30)
    assert r.status_code == 401
    with serve_stack.http() as http:
        r = http.post("/v1/agent/runs", json={"task": "x", "agent": "nope", "stream": False})
        assert r.status_code == 400 and "unknown agent" in r.json()["error"]["message"]
        assert http.get("/v1/agent/runs/missing").status_code == 404
