"""Per-key rate limits: shared across replicas through a real Redis server, enforced by the real middleware."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from apps.common import RateLimiter, RedisRateLimiter, hash_key, install_common
from cluster.config import ConductorConfig


def _config(**server) -> ConductorConfig:
    return ConductorConfig.model_validate({"server": {"require_api_key": True,
                                                      "api_key_hashes": {hash_key("k-alice"): "alice",
                                                                         hash_key("k-bob"): "bob"}, **server}})


def test_two_replicas_share_one_budget_in_redis(redis_server):
    a, b = RedisRateLimiter(3, redis_server, prefix="t1"), RedisRateLimiter(3, redis_server, prefix="t1")
    results = [a.allow("alice")[0], b.allow("alice")[0], a.allow("alice")[0], b.allow("alice")[0]]
    assert results == [True, True, True, False]
    assert a.allow("bob")[0]  # budgets are per user


def test_memory_limiter_counts_per_replica():
    a, b = RateLimiter(1), RateLimiter(1)
    assert a.allow("u")[0] and b.allow("u")[0] and not a.allow("u")[0]


def test_middleware_answers_429_with_retry_after(redis_server):
    app = FastAPI()
    install_common(app, _config(rate_limit_per_minute=2, redis_url=redis_server))

    @app.get("/v1/thing")
    def thing() -> dict:
        return {"ok": True}

    c = TestClient(app)
    alice = {"Authorization": "Bearer k-alice"}
    assert [c.get("/v1/thing", headers=alice).status_code for _ in range(3)] == [200, 200, 429]
    r = c.get("/v1/thing", headers=alice)
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) > 0
    assert c.get("/v1/thing", headers={"Authorization": "Bearer k-bob"}).status_code == 200
    assert c.get("/v1/thing", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_redis_outage_fails_open():
    lim = RedisRateLimiter(1, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert lim.allow("u")[0] and lim.allow("u")[0]
