"""Canary rollouts through the real Serve stack, against real HTTP backends (tests/fake_openai.py): users stay on
their variant, the shadow's answers never reach a caller, a canary that starts failing is rolled back by the
analysis, and `conductor rollout` changes weights live."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from click.testing import CliRunner

from cluster.cli import cli
from tests.stack import ADMIN_KEY

MODEL = "canaried"


def _rollout(stack, *args: str) -> dict:
    env = {"CONDUCTOR_BASE_URL": stack.base_url, "CONDUCTOR_API_KEY": ADMIN_KEY}
    result = CliRunner().invoke(cli, ["rollout", *args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _ask(stack, user: str) -> tuple[int, str]:
    with stack.http() as h:
        r = h.post("/v1/chat/completions", json={"model": MODEL, "user": user, "max_tokens": 8,
                                                 "messages": [{"role": "user", "content": "hello"}]})
    return r.status_code, r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text


def _control(fake, **state) -> None:
    httpx.post(fake.base_url.removesuffix("/v1") + "/control", json=state, timeout=10).raise_for_status()


def test_users_stay_on_their_variant_and_the_shadow_never_answers(serve_stack, hosted_apis):
    _rollout(serve_stack, "set", MODEL, "50")
    shadow_before = hosted_apis["shadow"].hits
    seen = {}
    for i in range(30):
        first = _ask(serve_stack, f"user-{i}")
        assert first[0] == 200 and _ask(serve_stack, f"user-{i}") == first  # sticky
        seen[f"user-{i}"] = first[1].split(":")[0]
    assert set(seen.values()) == {"hosted stable", "hosted canary"}  # both variants serve someone at 50 %
    deadline = time.monotonic() + 20  # the shadow copies run in the background
    while hosted_apis["shadow"].hits < shadow_before + 60 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hosted_apis["shadow"].hits >= shadow_before + 60  # every request was copied to it ...
    status = _rollout(serve_stack, "status", MODEL)
    compared = status["shadow_comparison"]
    assert compared["different"] >= 60 and compared["recent"][-1]["shadow"].startswith("hosted shadow")
    # ... and none of its answers reached a caller (asserted above: every answer came from stable or canary).


def test_a_canary_that_starts_failing_is_rolled_back_within_the_window(serve_stack, hosted_apis):
    _rollout(serve_stack, "set", MODEL, "50")
    _rollout(serve_stack, "resume", MODEL)  # automatic analysis on, at 50 %
    _control(hosted_apis["canary"], fail=True)
    try:
        t0 = time.monotonic()
        codes = []
        state = {}
        for i in range(200):
            codes.append(_ask(serve_stack, f"failing-{i}")[0])  # canary users are answered by stable (fallback)
            state = _rollout(serve_stack, "status", MODEL)
            if state["state"] == "rolled_back":
                break
        assert state["state"] == "rolled_back" and state["weight"] == 0, state
        assert set(codes) == {200}  # callers never saw the canary fail
        rollback = state["events"][0]
        assert rollback["event"] == "rollback" and "error rate" in rollback["reason"]
        assert time.monotonic() - t0 < 120  # within the analysis window
        assert {_ask(serve_stack, f"user-{i}")[1].split(":")[0] for i in range(10)} == {"hosted stable"}
        with serve_stack.http() as h:
            metrics = h.get("/metrics").text
        assert f'conductor_rollout_events_total{{event="rollback",model="{MODEL}"}}' in metrics
        assert f'conductor_rollout_canary_weight{{model="{MODEL}"}} 0.0' in metrics
        assert 'variant="canary"' in metrics and 'variant="stable"' in metrics
    finally:
        _control(hosted_apis["canary"], fail=False)


def test_rollout_commands_change_weights_live(serve_stack):
    assert _rollout(serve_stack, "set", MODEL, "30")["weight"] == 30
    promoted = _rollout(serve_stack, "promote", MODEL)
    assert promoted["weight"] == 100 and promoted["state"] == "promoted"
    deadline = time.monotonic() + 30  # a canary broken by an earlier test may still have its breaker open
    while _ask(serve_stack, "probe")[1].split(":")[0] != "hosted canary" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {_ask(serve_stack, f"user-{i}")[1].split(":")[0] for i in range(10)} == {"hosted canary"}
    assert _rollout(serve_stack, "rollback", MODEL)["weight"] == 0
    resumed = _rollout(serve_stack, "resume", MODEL)
    assert resumed["weight"] == 50 and resumed["state"] == "progressing"  # after a rollback: from the first step
    _rollout(serve_stack, "pause", MODEL)
    assert [e["event"] for e in _rollout(serve_stack, "status", MODEL)["events"][:5]] == \
        ["pause", "resume", "rollback", "promote", "set"]


@pytest.mark.parametrize("path, body, status, reason", [
    (f"/v1/admin/rollouts/{MODEL}", {"action": "set", "weight": 101}, 400, "weight"),
    (f"/v1/admin/rollouts/{MODEL}", {"action": "set"}, 400, "needs a weight"),
    (f"/v1/admin/rollouts/{MODEL}", {"action": "promote", "weight": 10}, 400, "takes no weight"),
    (f"/v1/admin/rollouts/{MODEL}", {"action": "explode"}, 400, "action"),
    ("/v1/admin/rollouts/echo", {"action": "promote"}, 404, "has no rollout"),
    ("/v1/admin/rollouts/nope", {"action": "promote"}, 404, "does not exist"),
])
def test_a_bad_rollout_request_is_a_4xx_with_its_reason(serve_stack, path, body, status, reason):
    with serve_stack.http(ADMIN_KEY) as h:
        r = h.post(path, json=body)
    assert r.status_code == status and reason in r.json()["error"]["message"]
    with serve_stack.http() as h:  # not an admin
        assert h.post(path, json=body).status_code == 403


def test_aliases_and_tags_route_to_their_models(serve_stack):
    with serve_stack.http() as h:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = h.post("/v1/chat/completions", json={**body, "model": "echo-alias"})
        assert r.status_code == 200 and r.headers["x-conductor-backend"] == "echo-local"
        r = h.post("/v1/chat/completions", json={**body, "model": "demo-group"})
        assert r.status_code == 200 and r.headers["x-conductor-backend"] in {"echo-local", "hosted-a", "hosted-b"}
        r = h.post("/v1/chat/completions", json={**body, "model": "no-such-alias"})
        assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
        listed = {m["id"]: m for m in h.get("/v1/models").json()["data"]}
    assert listed["echo-alias"]["alias_of"] == "echo" and listed["demo-group"]["tag"] is True
