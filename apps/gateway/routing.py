"""Which backend a request tries first: the model's routing strategy over what every gateway replica knows.

Strategies (LiteLLM's names): `fallback` (the configured order), `simple-shuffle` (by weight, sticky per user: one
user's requests land on one backend while it is healthy), `least-busy` (fewest requests in flight),
`latency-based-routing` (lowest moving average of latency, or time to first token for streams; untried backends
first, so every backend gets measured) and `cost-based-routing` (cheapest by configured prices). Whatever comes
first, the other backends follow in configured order as the fallback chain; breakers skip broken ones (router.py).

In-flight counts and latency averages are shared through Redis when `server.redis_url` is set, so replicas agree;
otherwise, or while Redis fails, each replica uses its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

from apps.gateway.redis_side import BestEffortRedis

EWMA_ALPHA = 0.3  # weight of the newest latency sample: recent enough to follow a slowing backend, not jittery


def user_bucket(model_id: str, user: str) -> int:
    """0..99, fixed for a (model, user) pair: what makes weighted and canary routing sticky."""
    return int(hashlib.sha256(f"{model_id}\0{user}".encode()).hexdigest()[:8], 16) % 100


def weighted_pick(model_id: str, user: str, names: list[str], weights: list[int]) -> str:
    bucket, edge = user_bucket(model_id, user), 0
    for name, w in zip(names, weights):
        edge += w
        if bucket < edge:
            return name
    return names[-1]


class RoutingState:
    """In-flight requests and latency averages per backend, here and (when configured) in Redis."""

    def __init__(self, redis_url: str | None = None, prefix: str = "conductor:route", timeout_s: float = 0.25):
        self.redis_url, self.prefix, self.timeout_s = redis_url, prefix, timeout_s
        self._inflight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._lock = threading.Lock()
        self._redis = BestEffortRedis(redis_url, timeout_s).value

    async def started(self, backend: str) -> None:
        with self._lock:
            self._inflight[backend] = self._inflight.get(backend, 0) + 1
        await self._redis(lambda r: r.hincrby(f"{self.prefix}:inflight", backend, 1))

    async def ended(self, backend: str, latency_s: float | None) -> None:
        with self._lock:
            self._inflight[backend] = max(0, self._inflight.get(backend, 0) - 1)
        await self._redis(lambda r: r.hincrby(f"{self.prefix}:inflight", backend, -1))
        if latency_s is not None:
            await self.observed(backend, latency_s)

    async def observed(self, backend: str, latency_s: float) -> None:
        """One latency sample into the backend's moving average."""
        with self._lock:
            old = self._latency.get(backend)
            new = self._latency[backend] = latency_s if old is None else \
                EWMA_ALPHA * latency_s + (1 - EWMA_ALPHA) * old
        await self._redis(lambda r: r.hset(f"{self.prefix}:latency", backend, f"{new:.6f}"))

    async def snapshot(self, backends: list[str]) -> tuple[dict[str, int], dict[str, float]]:
        """(in flight, latency average) per backend: every replica's when Redis answers, else this one's."""
        shared = await self._redis(lambda r: asyncio.gather(r.hmget(f"{self.prefix}:inflight", backends),
                                                            r.hmget(f"{self.prefix}:latency", backends)))
        with self._lock:
            inflight = {b: self._inflight.get(b, 0) for b in backends}
            latency = {b: self._latency[b] for b in backends if b in self._latency}
        if shared is not None:
            counts, lats = shared
            inflight = {b: max(0, int(c)) if c is not None else inflight[b] for b, c in zip(backends, counts)}
            latency.update({b: float(v) for b, v in zip(backends, lats) if v is not None})
        return inflight, latency


async def order_backends(model: Any, user: str, state: RoutingState, first: str | None = None) -> list[Any]:
    """The model's backends in the order this request tries them (its shadow, if any, never among them).
    `first` (a rollout's choice) overrides the strategy's."""
    cfg = model.config
    shadow = cfg.rollout.shadow if cfg.rollout else None
    backends = [b for b in model.backends if b.name != shadow]
    strategy = model.strategy
    if first is None and strategy == "simple-shuffle":
        weights = [b.config.weight if b.config.weight is not None else 1 for b in backends]
        first = weighted_pick(cfg.id, user, [b.name for b in backends], weights) if sum(weights) else None
    elif first is None and strategy in ("least-busy", "latency-based-routing"):
        inflight, latency = await state.snapshot([b.name for b in backends])
        if strategy == "least-busy":
            key = {b.name: (inflight[b.name], i) for i, b in enumerate(backends)}
        else:  # untried backends (no average yet) first, then the fastest
            key = {b.name: (latency.get(b.name, -1.0), i) for i, b in enumerate(backends)}
        return sorted(backends, key=lambda b: key[b.name])
    elif first is None and strategy == "cost-based-routing":
        return sorted(backends, key=lambda b: b.config.cost_per_1k_input + b.config.cost_per_1k_output)
    if first is None:
        return backends
    return [b for b in backends if b.name == first] + [b for b in backends if b.name != first]
