"""Virtual keys, budgets and spend through the real Serve stack: keys made with `conductor keys`, used with the
official openai SDK, held to their models, budget and tokens per minute, refused once revoked, rotated or
expired; every request in the spend log and `GET /v1/spend`."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from click.testing import CliRunner

from cluster.cli import cli
from tests.stack import ADMIN_KEY


def _conductor(stack, *args: str, key: str = ADMIN_KEY):
    env = {"CONDUCTOR_BASE_URL": stack.base_url, "CONDUCTOR_API_KEY": key}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _new_key(stack, *args: str) -> dict:
    result = _conductor(stack, "keys", "create", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _client(stack, key: str):
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, max_retries=0)


def _chat(client, model: str = "echo", text: str = "one two three", **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=8, temperature=0.7, **kw)


def _spend(stack, key: str = ADMIN_KEY, **params) -> dict:
    with stack.http(key) as h:
        r = h.get("/v1/spend", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_spend(stack, predicate, **params) -> dict:
    deadline = time.monotonic() + 30  # rows are written by a background thread, in batches
    while True:
        doc = _spend(stack, **params)
        if predicate(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.2)


def test_a_created_key_works_with_the_sdk_and_its_requests_are_in_the_spend_log(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-alice", "--team", "research", "--models", "echo")
    assert doc["key"].startswith("sk-cnd-") and doc["user"] == "vk-alice" and doc["models"] == ["echo"]
    client = _client(serve_stack, doc["key"])
    assert _chat(client).choices[0].message.content == "echo: one two three"
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'hosted'"):
        _chat(client, model="hosted")
    rows = _wait_spend(serve_stack, lambda d: any(r["key"] == doc["id"] for r in d["data"]),
                       group_by="key,team,model", user="vk-alice")["data"]
    (row,) = [r for r in rows if r["key"] == doc["id"]]
    assert row["team"] == "research" and row["model"] == "echo" and row["requests"] == 1
    assert row["cost_usd"] == pytest.approx((3 + 4) / 1000)  # 3 prompt words, 4 answer words at $1/1k each
    # The key's user reads their own spend, and no one else's.
    own = _spend(serve_stack, doc["key"], group_by="user")
    assert [r["user"] for r in own["data"]] == ["vk-alice"]
    with serve_stack.http(doc["key"]) as h:
        assert h.get("/v1/spend", params={"user": "tester"}).status_code == 403
        assert h.get("/v1/admin/keys").status_code == 403
    listed = _conductor(serve_stack, "keys", "list", "--user", "vk-alice")
    assert doc["id"] in listed.output and doc["key"] not in listed.output and "spent=$0.0070" in listed.output


def test_revoked_rotated_and_expired_keys_stop_working(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-bob")
    assert _chat(_client(serve_stack, doc["key"])).choices
    rotated = json.loads(_conductor(serve_stack, "keys", "rotate", doc["id"], "--json").output)
    with pytest.raises(openai.AuthenticationError):
        _chat(_client(serve_stack, doc["key"]))
    assert _chat(_client(serve_stack, rotated["key"])).choices
    assert _conductor(serve_stack, "keys", "revoke", doc["id"]).exit_code == 0
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        _chat(_client(serve_stack, rotated["key"]))
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    short = _new_key(serve_stack, "--user", "vk-bob", "--expires", soon)
    time.sleep(3)
    with pytest.raises(openai.AuthenticationError, match="expired at"):
        _chat(_client(serve_stack, short["key"]))


def _key_state(stack, user: str) -> dict:
    (key,) = json.loads(_conductor(stack, "keys", "list", "--user", user, "--json").output)
    return key


def test_every_stream_the_sdk_closes_after_its_last_event_is_charged(serve_stack):
    """The openai SDK closes the connection as soon as it reads `[DONE]`, before the body's end: the gateway sees
    a client that left while it settles the request, and must settle it all the same."""
    doc = _new_key(serve_stack, "--user", "vk-fay", "--budget", "5")
    client = _client(serve_stack, doc["key"])
    for _ in range(30):
        assert "".join(c.choices[0].delta.content or "" for c in _chat(client, stream=True) if c.choices) \
            == "echo: one two three"
    rows = _wait_spend(serve_stack, lambda d: sum(r["requests"] for r in d["data"]) >= 30,
                       group_by="key", user="vk-fay")["data"]
    assert [(r["requests"], r["errors"]) for r in rows] == [(30, 0)]
    assert rows[0]["cost_usd"] == pytest.approx(30 * 0.007)
    key = _key_state(serve_stack, "vk-fay")
    assert key["reserved_usd"] == 0 and key["spent_usd"] == pytest.approx(30 * 0.007, abs=1e-5)


def test_a_client_that_leaves_mid_stream_pays_for_what_it_was_sent_and_frees_its_reservation(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-gil", "--budget", "5")
    words = " ".join(f"w{i}" for i in range(39))  # "echo:" and 39 words, one every 0.1 s
    body = {"model": "echo-drip", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": words}]}
    received = 0
    with serve_stack.http(doc["key"]) as h, h.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                received += 1
                if received == 5:
                    break  # leaving the block closes the connection with the stream half sent
    rows = _wait_spend(serve_stack, lambda d: bool(d["data"]), group_by="key", user="vk-gil")["data"]
    assert [(r["requests"], r["errors"]) for r in rows] == [(1, 1)]  # logged as the client's abort (499)
    assert 5 <= rows[0]["tokens_out"] < 40, rows  # the words it was sent (more may have been on the wire)
    key = _key_state(serve_stack, "vk-gil")
    assert key["reserved_usd"] == 0, key  # the worst case held at admission is given back
    assert key["spent_usd"] == pytest.approx(rows[0]["cost_usd"], abs=1e-5) and rows[0]["cost_usd"] > 0


def test_a_client_that_gives_up_on_a_whole_answer_frees_its_reservation(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-hal", "--budget", "5")
    body = {"model": "echo-drip", "max_tokens": 64, "messages": [{"role": "user", "content": "slow one"}]}
    with serve_stack.http(doc["key"], timeout=1.0) as h, pytest.raises(httpx.ReadTimeout):
        h.post("/v1/chat/completions", json=body)  # the engine answers after 4 s
    rows = _wait_spend(serve_stack, lambda d: bool(d["data"]), group_by="key", user="vk-hal")["data"]
    assert [(r["requests"], r["errors"], r["cost_usd"]) for r in rows] == [(1, 1, 0.0)]  # nothing was delivered
    assert _key_state(serve_stack, "vk-hal")["reserved_usd"] == 0


@pytest.mark.parametrize("body, reason", [
    ({"user": "x", "budget_usd": 0}, "budget_usd"),
    ({"user": "x", "models": ["no-such-model"]}, "do not exist"),
    ({"user": "x", "expires": "2001-01-01T00:00:00Z"}, "in the past"),
    ({"user": "x", "expires": "next tuesday"}, "ISO 8601"),
    ({"user": "x", "period": "week"}, "period"),
    ({"user": "x", "admin": True}, "admin"),
    ({"team": "t"}, "user"),
])
def test_a_malformed_key_request_is_a_400_with_its_reason(serve_stack, body, reason):
    with serve_stack.http(ADMIN_KEY) as h:
        r = h.post("/v1/admin/keys", json=body)
    assert r.status_code == 400 and reason in r.json()["error"]["message"]


def test_only_admins_manage_keys(serve_stack):
    with serve_stack.http() as h:  # the tester is not in server.admin_users
        assert h.post("/v1/admin/keys", json={"user": "tester"}).status_code == 403
        assert h.delete("/v1/admin/keys/key_0000").status_code == 403
    with serve_stack.http(ADMIN_KEY) as h:
        assert h.delete("/v1/admin/keys/key_0000").status_code == 404


def test_a_budget_holds_with_100_concurrent_clients(serve_stack):
    budget = 0.05  # each request really costs $0.007: the budget lasts about 7 of them
    doc = _new_key(serve_stack, "--user", "vk-carol", "--budget", str(budget), "--period", "day")
    client = _client(serve_stack, doc["key"])

    def one(_: int) -> str:
        try:
            _chat(client)
            return "ok"
        except openai.RateLimitError as e:
            assert "budget" in str(e)
            return "refused"

    rounds = 0
    with ThreadPoolExecutor(100) as pool:
        # Until a whole round is refused with nothing in flight, which happens only once the budget is spent.
        while rounds < 50 and "ok" in list(pool.map(one, range(100))):
            rounds += 1
    (key,) = [k for k in json.loads(_conductor(serve_stack, "keys", "list", "--user", "vk-carol", "--json").output)]
    assert budget <= key["spent_usd"] < budget + 0.007 + 1e-9, key
    assert key["reserved_usd"] == 0
    with serve_stack.http() as h:
        metrics = h.get("/metrics").text
    assert 'conductor_budget_refusals_total{kind="budget_exceeded"}' in metrics


def test_tokens_per_minute_are_enforced(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-dan", "--tpm", "20")
    client = _client(serve_stack, doc["key"])
    for _ in range(2):  # 7 tokens each: 14 of 20
        _chat(client)
    _chat(client)  # 14 < 20: admitted, and now 21 are used
    with pytest.raises(openai.RateLimitError, match="tokens for this minute"):
        _chat(client)


def test_a_streamed_request_is_charged_and_logged(serve_stack):
    doc = _new_key(serve_stack, "--user", "vk-erin")
    stream = _chat(_client(serve_stack, doc["key"]), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: one two three"
    rows = _wait_spend(serve_stack, lambda d: bool(d["data"]), group_by="key", user="vk-erin")["data"]
    assert rows[0]["requests"] == 1 and rows[0]["cost_usd"] == pytest.approx(0.007)
