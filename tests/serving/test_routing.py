"""Routing strategies over real engines of different speed and price (the echo engine in the router, as hosted
engines run), the routing state shared through a real Redis, and the config refusals of bad routing setups."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from apps.gateway.metrics import GatewayMetrics
from apps.gateway.router import InProcessBackend, RoutedModel, Router
from apps.gateway.routing import RoutingState
from cluster.config import BreakerConfig, ConductorConfig, EngineConfig, ModelConfig
from deployments.engines.base import EngineError
from deployments.engines.echo import EchoEngine


def _model(strategy: str, *backends: dict) -> RoutedModel:
    cfg = ModelConfig(id="m", routing_strategy=strategy,
                      backends=[EngineConfig(engine="echo", **b) for b in backends])
    engines = [EchoEngine(b) for b in cfg.backends]
    for e in engines:
        asyncio.run(e.start())
    return RoutedModel(cfg, [InProcessBackend(b, e) for b, e in zip(cfg.backends, engines)])


def _router(model: RoutedModel, state: RoutingState | None = None) -> Router:
    return Router({"m": model}, GatewayMetrics(use_ray=False), 30.0, state=state)


REQ = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def _answers(router: Router, model: RoutedModel, n: int, user: str = "u") -> Counter:
    got = Counter()
    for i in range(n):
        backend, _ = await router.call(model, "chat", REQ, f"{user}{i}")
        got[backend.name] += 1
    return got


def test_cost_based_routing_takes_the_cheapest_healthy_backend():
    model = _model("cost-based-routing",
                   {"name": "dear", "cost_per_1k_input": 5.0, "cost_per_1k_output": 5.0},
                   {"name": "cheap", "cost_per_1k_input": 0.1, "cost_per_1k_output": 0.1},
                   {"name": "middle", "cost_per_1k_input": 1.0, "cost_per_1k_output": 1.0})
    router = _router(model)
    assert asyncio.run(_answers(router, model, 5)) == {"cheap": 5}
    model.backends[1].engine.fail = True  # the cheapest breaks: the next cheapest, not the configured first
    assert asyncio.run(_answers(router, model, 4)) == {"middle": 4}


def test_latency_based_routing_learns_the_faster_backend():
    model = _model("latency", {"name": "slow", "options": {"delay_s": 0.3}}, {"name": "fast"})
    got = asyncio.run(_answers(_router(model), model, 10))
    assert got["fast"] >= 8 and got["slow"] >= 1  # each measured once, then the fast one


def test_least_busy_routing_avoids_the_backend_with_requests_in_flight():
    model = _model("least-busy", {"name": "a", "options": {"delay_s": 1.0}}, {"name": "b", "options": {"delay_s": 1.0}})
    router = _router(model)

    async def run() -> list[str]:
        done = await asyncio.gather(*(router.call(model, "chat", REQ, "u") for _ in range(6)))
        return [b.name for b, _ in done]

    assert Counter(asyncio.run(run())) == {"a": 3, "b": 3}  # the fallback order would have sent all six to a


def test_weighted_routing_follows_the_weights_and_sticks_to_each_user():
    model = _model("simple-shuffle", {"name": "big", "weight": 80}, {"name": "small", "weight": 20})
    router = _router(model)
    got = asyncio.run(_answers(router, model, 400))
    assert 0.7 < got["big"] / 400 < 0.9
    again = asyncio.run(_answers(router, model, 400))
    assert again == got  # the same users land on the same backends


def test_routing_state_is_shared_by_replicas_through_redis(redis_server):
    one, two = RoutingState(redis_server, prefix="t:route"), RoutingState(redis_server, prefix="t:route")

    async def run() -> tuple:
        await one.started("x")
        await one.started("x")
        await one.ended("x", 0.5)
        return await two.snapshot(["x", "y"])

    inflight, latency = asyncio.run(run())
    assert inflight == {"x": 1, "y": 0} and latency == {"x": 0.5}


@pytest.mark.parametrize("models, reason", [
    ([{"id": "m", "backends": [{"name": "a", "engine": "echo", "weight": 70},
                               {"name": "b", "engine": "echo", "weight": 20}]}], "sum to 100"),
    ([{"id": "m", "backends": [{"name": "a", "engine": "echo"}],
       "rollout": {"stable": "a", "canary": "b"}}], "at least two backends"),
    ([{"id": "m", "backends": [{"name": "a", "engine": "echo"}, {"name": "b", "engine": "echo"}],
       "rollout": {"stable": "a", "canary": "c"}}], "does not have"),
    ([{"id": "m", "backends": [{"name": "a", "engine": "echo"}, {"name": "b", "engine": "echo"}],
       "rollout": {"stable": "a", "canary": "b", "steps": [50, 10]}}], "must rise"),
    ([{"id": "m", "aliases": ["n"], "backends": [{"name": "a", "engine": "echo"}]},
      {"id": "n", "backends": [{"name": "b", "engine": "echo"}]}], "already a model id"),
    ([{"id": "m", "routing_strategy": "random", "backends": [{"name": "a", "engine": "echo"}]}], "routing_strategy"),
])
def test_a_bad_routing_config_is_refused_with_its_reason(models, reason):
    with pytest.raises(ValueError, match=reason):
        ConductorConfig.model_validate({"models": models})


def test_a_half_open_trial_whose_caller_leaves_does_not_keep_the_backend_out():
    """The one trial request of a half-open breaker is cancelled (its client hung up): the backend is not judged,
    and the next request is its trial, not refused for as long as the gateway runs."""
    cfg = ModelConfig(id="m", backends=[EngineConfig(engine="echo", name="only")])
    engine = EchoEngine(cfg.backends[0])
    asyncio.run(engine.start())
    model = RoutedModel(cfg, [InProcessBackend(cfg.backends[0], engine)])
    router = Router({"m": model}, GatewayMetrics(use_ray=False), 30.0,
                    breaker=BreakerConfig(failure_threshold=1, cooldown_s=0.3))

    async def run() -> str:
        engine.fail = True
        with pytest.raises(EngineError):
            await router.call(model, "chat", REQ)
        assert model.breakers["only"].state() == "open"
        engine.fail, engine.delay_s = False, 5.0
        await asyncio.sleep(0.35)  # half-open: the next request is the trial
        trial = asyncio.ensure_future(router.call(model, "chat", REQ))
        await asyncio.sleep(0.1)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        engine.delay_s = 0.0
        backend, _ = await router.call(model, "chat", REQ)  # at once, not after another cooldown
        return backend.name

    assert asyncio.run(run()) == "only"
    assert model.breakers["only"].state() == "closed"


def test_a_deployment_call_past_the_deadline_is_a_504_and_is_cancelled():
    """The embeddings and rerank routes have no fallback chain; their one call still ends at the request's
    deadline, and the call is cancelled (Serve passes that on to the replica)."""
    from apps.gateway.router import Unanswered, call_deployment

    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def scenario():
        with pytest.raises(Unanswered) as e:
            await call_deployment(slow, "rerank", grace_s=5, timeout_s=0.2)
        assert e.value.status == 504 and "deadline" in e.value.message
        assert e.value.response().status_code == 504
        assert await call_deployment(lambda: asyncio.sleep(0, "ok"), "rerank", 5, 1) == "ok"

    asyncio.run(scenario())
    assert cancelled == [True]
