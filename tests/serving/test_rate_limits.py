"""Rate limits and key lockouts: atomic across replicas in a real Redis, in-process when Redis fails (never
"unlimited"), and a Redis that accepts connections but never answers cannot stall the event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from apps.common import hash_key, install_common
from apps.limits import LIMITER_FALLBACKS, MemoryCounter, RateLimiter, RedisCounter
from cluster.config import ConductorConfig


def _config(**server) -> ConductorConfig:
    return ConductorConfig.model_validate({"server": {"require_api_key": True,
                                                      "api_key_hashes": {hash_key("k-alice"): "alice",
                                                                         hash_key("k-bob"): "bob"}, **server}})


def _app(**server) -> TestClient:
    app = FastAPI()
    install_common(app, _config(**server))

    @app.get("/v1/thing")
    def thing() -> dict:
        return {"ok": True}

    return TestClient(app)


def test_two_replicas_share_one_budget_in_redis(redis_server):
    async def go() -> list[bool]:
        a = RateLimiter(3, RedisCounter(redis_server, prefix="t1"))
        b = RateLimiter(3, RedisCounter(redis_server, prefix="t1"))
        out = [(await x.allow("alice"))[0] for x in (a, b, a, b)]
        out.append((await a.allow("bob"))[0])  # budgets are per user
        return out

    assert asyncio.run(go()) == [True, True, True, False, True]


def test_hundred_concurrent_clients_through_two_replicas_never_exceed_the_limit(redis_server):
    """INCR and EXPIRE are one Lua script: concurrent admissions through two limiters are counted exactly."""
    async def go() -> int:
        replicas = [RateLimiter(37, RedisCounter(redis_server, prefix="t-race")) for _ in range(2)]
        results = await asyncio.gather(*(replicas[i % 2].allow("carol") for i in range(100)))
        return sum(ok for ok, _ in results)

    assert asyncio.run(go()) == 37


def test_memory_limiter_counts_per_replica():
    async def go() -> tuple[bool, bool, bool]:
        a, b = RateLimiter(1, MemoryCounter()), RateLimiter(1, MemoryCounter())
        return (await a.allow("u"))[0], (await b.allow("u"))[0], (await a.allow("u"))[0]

    assert asyncio.run(go()) == (True, True, False)


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_burst_across_a_minute_boundary_gets_the_limit_not_twice_it(where, request):
    """10 a minute, spent in the last second of one minute: the first seconds of the next admit nothing (fixed
    windows would admit 10 more), half a minute on half the budget has faded back, and the refusal says when the
    next request fits."""
    import uuid

    clock = [0.0]
    before = LIMITER_FALLBACKS.labels(reason="error")._value.get()
    counter = RedisCounter(request.getfixturevalue("redis_server"), prefix=f"t-{uuid.uuid4().hex[:8]}") \
        if where == "redis" else MemoryCounter()
    lim = RateLimiter(10, counter, clock=lambda: clock[0])
    base = 60 * 29_000_000  # a whole minute

    async def burst(at: float, n: int, key: str = "erin") -> list[bool]:
        clock[0] = base + at
        return [(await lim.allow(key))[0] for _ in range(n)]

    async def go() -> None:
        assert await burst(59.0, 12) == [True] * 10 + [False] * 2
        assert await burst(60.5, 3) == [False] * 3
        # 10 × (1 - 0.5/60) = 9.92 still counts; one more fits once it is 9: 0.1 of the minute, at 66 s.
        assert await lim.allow("erin") == (False, 6)
        assert await lim.exhausted("erin") == (True, 6)
        assert await burst(66.1, 2) == [True, False]
        assert await burst(90.0, 6) == [True] * 4 + [False] * 2  # half of 10 faded, 1 spent at 66 s
        assert (await lim.exhausted("erin"))[0] is True
        assert await burst(240.0, 10) == [True] * 10  # both windows are long gone
        assert await burst(240.0, 1, "frank") == [True]  # per key

    asyncio.run(go())  # one event loop: the Redis client belongs to it
    assert LIMITER_FALLBACKS.labels(reason="error")._value.get() == before  # Redis counted, not the fallback


def test_a_client_retrying_past_its_limit_still_gets_the_limit_each_minute():
    """Refused requests are not counted: hammering does not lock a client out of its own budget."""
    clock = [60.0 * 1000]
    lim = RateLimiter(5, MemoryCounter(), clock=lambda: clock[0])
    admitted = []
    for second in range(180):  # 20 requests a second for three minutes
        clock[0] = 60.0 * 1000 + second
        admitted.append(sum(asyncio.run(lim.allow("gina"))[0] for _ in range(20)))
    per_minute = [sum(admitted[i:i + 60]) for i in (0, 60, 120)]
    assert per_minute[0] == 5 and all(4 <= n <= 6 for n in per_minute[1:]), per_minute
    assert all(sum(admitted[i:i + 60]) <= 10 for i in range(121))  # any 60 s, however placed


def test_middleware_answers_429_with_retry_after(redis_server):
    c = _app(rate_limit_per_minute=2, redis_url=redis_server)
    alice = {"Authorization": "Bearer k-alice"}
    assert [c.get("/v1/thing", headers=alice).status_code for _ in range(3)] == [200, 200, 429]
    r = c.get("/v1/thing", headers=alice)
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) > 0
    assert c.get("/v1/thing", headers={"Authorization": "Bearer k-bob"}).status_code == 200
    assert c.get("/v1/thing", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_unreachable_redis_falls_back_to_the_in_process_limit():
    before = LIMITER_FALLBACKS.labels(reason="error")._value.get()
    c = _app(rate_limit_per_minute=2, redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    alice = {"Authorization": "Bearer k-alice"}
    assert [c.get("/v1/thing", headers=alice).status_code for _ in range(3)] == [200, 200, 429]
    assert LIMITER_FALLBACKS.labels(reason="error")._value.get() > before


@pytest.fixture()
def blackholed_redis():
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"
    stop.set()
    t.join(2)
    for s in held:
        s.close()
    srv.close()


def test_blackholed_redis_does_not_stall_the_event_loop(blackholed_redis):
    async def go() -> tuple[list[bool], float, float]:
        lim = RateLimiter(3, RedisCounter(blackholed_redis, timeout_s=0.2))
        ticks: list[float] = []

        async def heartbeat() -> None:  # runs only while the loop is free
            for _ in range(20):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        hb = asyncio.create_task(heartbeat())
        t0 = time.monotonic()
        results = [(await lim.allow("dave"))[0] for _ in range(5)]
        took = time.monotonic() - t0
        await hb
        gap = max(b - a for a, b in zip(ticks, ticks[1:]))
        return results, took, gap

    results, took, gap = asyncio.run(go())
    assert results == [True, True, True, False, False]  # limited in process, not "unlimited"
    assert took < 2.0  # one timeout, then Redis is skipped for a while
    assert gap < 0.3  # the loop kept running while Redis hung


def test_key_guessing_is_locked_out_per_address():
    c = _app(auth_failures_per_minute=5)
    codes = [c.get("/v1/thing", headers={"Authorization": f"Bearer guess-{i}"}).status_code for i in range(40)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    # Locked before the key is looked at: even the right key from that address waits out the window.
    r = c.get("/v1/thing", headers={"Authorization": "Bearer k-alice"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "auth_locked_out"


def test_gateway_replicas_agree_on_an_open_breaker_through_redis(redis_server):
    """Replica A finds a backend broken; replica B, which never called it, skips it too (a real failing engine)."""
    from apps.gateway.metrics import GatewayMetrics
    from apps.gateway.router import AllBackendsFailed, InProcessBackend, RoutedModel, Router, SharedBreakers
    from cluster.config import BreakerConfig, EngineConfig, ModelConfig
    from deployments.engines.echo import EchoEngine

    def replica() -> tuple[Router, RoutedModel, EchoEngine]:
        cfg = EngineConfig(name="shared-broken", engine="echo", options={"fail": True})
        engine = EchoEngine(cfg)
        asyncio.run(engine.start())
        model = RoutedModel(ModelConfig(id="m", backends=[cfg]), [InProcessBackend(cfg, engine)])
        return (Router({"m": model}, GatewayMetrics(use_ray=False), 10, BreakerConfig(failure_threshold=1,
                                                                                      cooldown_s=30),
                       SharedBreakers(redis_server, prefix="t-breaker")), model, engine)

    (a, ma, _), (b, mb, eb) = replica(), replica()
    req = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4}

    async def go() -> tuple[str, str]:
        with pytest.raises(AllBackendsFailed) as first:
            await a.call(ma, "chat", req)
        eb.fail = False  # B's own engine would answer now: only the shared state can make B skip it
        with pytest.raises(AllBackendsFailed) as second:
            await b.call(mb, "chat", req)
        return first.value.message, second.value.message

    first, second = asyncio.run(go())
    assert "configured to fail" in first
    assert "opened by another gateway replica" in second
