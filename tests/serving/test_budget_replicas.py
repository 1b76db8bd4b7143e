"""A budget held by two gateway replicas at once: a second gateway application with two replicas (beside the test
stack's), both replicas answering 100 concurrent clients of one virtual key, spend within one request's cost of
the budget. The replicas share the accounting database (a SQLite file here, as `make run` uses)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.stack import ADMIN_KEY

PREFIX = "/gw2"
COST = 0.007  # "one two three" -> "echo: one two three": 3 + 4 tokens at $1 per 1k


@pytest.fixture(scope="module")
def two_replicas(serve_stack, tmp_path_factory):
    from ray import serve

    from apps.common import with_deploy_secrets
    from apps.gateway.app import build_gateway
    from cluster.config import ConductorConfig

    data = serve_stack.config.model_dump()
    data["models"] = [m for m in data["models"] if m["id"] == "echo"]
    data["default_model"] = "echo"
    data["models"][0]["backends"][0]["name"] = "echo-gw2"
    data["server"]["gateway"]["num_replicas"] = 2
    data["server"]["accounting"]["data_dir"] = str(tmp_path_factory.mktemp("gw2"))
    config = with_deploy_secrets(ConductorConfig.model_validate(data))
    serve.run(build_gateway(config), name="gateway2", route_prefix=PREFIX, blocking=False)
    base = serve_stack.base_url + PREFIX
    with httpx.Client(base_url=base, timeout=120) as h:
        for _ in range(240):
            try:
                if h.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            import time

            time.sleep(0.5)
    yield base
    serve.delete("gateway2")


def test_a_budget_holds_across_two_gateway_replicas_under_100_clients(two_replicas):
    budget = 0.05
    with httpx.Client(base_url=two_replicas, timeout=120, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as h:
        created = h.post("/v1/admin/keys", json={"user": "vk-two", "budget_usd": budget, "period": "day"})
        assert created.status_code == 201, created.text
        key = created.json()
        with ThreadPoolExecutor(10) as pool:  # concurrent: the router spreads them (see the test below)
            pids = set(pool.map(lambda _: h.get("/v1/status").json()["gateway_pid"], range(60)))
    assert len(pids) == 2  # both replicas are answering

    def one(client: httpx.Client) -> int:
        r = client.post("/v1/chat/completions", json={"model": "echo", "max_tokens": 8, "temperature": 0.7,
                                                      "messages": [{"role": "user", "content": "one two three"}]})
        assert r.status_code in (200, 429), r.text
        if r.status_code == 429:
            assert "budget" in r.json()["error"]["message"]
        return r.status_code

    clients = [httpx.Client(base_url=two_replicas, timeout=120, headers={"Authorization": f"Bearer {key['key']}"})
               for _ in range(100)]
    try:
        with ThreadPoolExecutor(100) as pool:
            for _ in range(50):  # rounds until one is refused whole, with nothing in flight: the budget is spent
                if 200 not in list(pool.map(one, clients)):
                    break
    finally:
        for c in clients:
            c.close()
    with httpx.Client(base_url=two_replicas, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as h:
        (listed,) = [k for k in h.get("/v1/admin/keys", params={"user": "vk-two"}).json()["data"]]
    assert budget <= listed["spent_usd"] < budget + COST + 1e-9, listed
    assert listed["reserved_usd"] == 0


def test_a_stored_response_is_found_by_either_replica(two_replicas, serve_stack):
    with httpx.Client(base_url=two_replicas, timeout=60,
                      headers={"Authorization": f"Bearer {serve_stack.api_key}"}) as h:
        first = h.post("/v1/responses", json={"model": "echo", "input": "remember this"})
        assert first.status_code == 200, first.text
        # concurrent, so that Serve's router (the shorter of two queues) spreads them over both replicas;
        # one after another, an idle router may send all of them to the same one
        with ThreadPoolExecutor(12) as pool:
            follow = list(pool.map(lambda _: h.post("/v1/responses", json={
                "model": "echo", "input": "and this", "previous_response_id": first.json()["id"]}), range(12)))
            pids = set(pool.map(lambda _: h.get("/v1/status").json()["gateway_pid"], range(60)))
    assert len(pids) == 2 and [r.status_code for r in follow] == [200] * 12  # whichever replica answered
