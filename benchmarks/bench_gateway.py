"""Gateway benchmark: what keys, spend, routing and rollouts cost per request, and how fast a failing canary is
rolled back. In-process, with real engines (the echo engine: no model time, so only our overhead shows), SQLite
and a real PostgreSQL server (Debian's) as the accounting database.

- spend log: the request path's cost of recording a row, and rows/s the background writer sustains;
- budget check: one reserve + settle transaction per request, the atomic part;
- routing: Router.call per strategy against the engine called directly, ABBA-interleaved;
- rollback: traffic at a steady rate, the canary starts failing, seconds until traffic is back on stable;
- cache: exact and semantic hits through the real Serve stack, against the engine called in-process.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REQ = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _databases() -> tuple[list[tuple[str, str]], Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    dbs = [("SQLite", f"sqlite:///{tmp / 'accounting.sqlite3'}")]
    stop = None
    try:
        from tests.pg_server import start_postgres

        started = start_postgres()
    except Exception:  # noqa: BLE001 - no PostgreSQL here: SQLite rows only
        started = None
    if started:
        url, stop = started
        dbs.append(("PostgreSQL", url))
    return dbs, stop


def _spend_rows(dbs: list[tuple[str, str]], n: int) -> list[dict[str, Any]]:
    from apps.gateway.spend import SpendLog, SpendRow

    rows = []
    for label, url in dbs:
        log = SpendLog(url, buffer_rows=n * 2, flush_every_s=0.05)
        log.record(SpendRow(time.time(), "warm", None, None, "m", "b", None, "chat", 1, 1, 0.0, 0.0, None, None, 200))
        log.flush()
        t0 = time.perf_counter()
        for i in range(n):
            log.record(SpendRow(time.time(), f"u{i % 10}", "t", "key_x", "m", "b", None, "chat", 5, 7, 0.001, 0.1,
                                0.05, None, 200))
        path_s = time.perf_counter() - t0
        assert log.flush(timeout_s=120)
        total_s = time.perf_counter() - t0
        rows.append({"name": f"spend log on {label}: request-path cost of one row", "conductor": path_s / n * 1e6,
                     "baseline": None, "unit": "µs/request", "higher_is_better": False, "goal": "off the path",
                     "notes": f"{n} rows; the background writer kept up at {n / total_s:,.0f} rows/s"})
    return rows


def _budget_rows(dbs: list[tuple[str, str]], n: int) -> list[dict[str, Any]]:
    from apps.keys import KeyStore

    rows = []
    for label, url in dbs:
        store = KeyStore(url)
        _, key = store.create("bench", budget_usd=1e6, tpm=10**9)
        store.settle(store.reserve(key, 10, 10), 5, 5)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            store.settle(store.reserve(key, 100, 50), 40, 20)
            times.append(time.perf_counter() - t0)
        times.sort()
        rows.append({"name": f"budget + tpm check on {label} (reserve and settle)", "conductor": times[n // 2] * 1e3,
                     "baseline": None, "unit": "ms/request (p50)", "higher_is_better": False, "goal": "—",
                     "notes": f"p95 {times[int(n * 0.95)] * 1e3:.2f} ms over {n} requests; only keys with a "
                              "budget or tpm pay it"})
    return rows


def _model(strategy: str, n_backends: int = 3) -> Any:
    from apps.gateway.router import InProcessBackend, RoutedModel
    from cluster.config import EngineConfig, ModelConfig
    from deployments.engines.echo import EchoEngine

    cfg = ModelConfig(id="m", routing_strategy=strategy,
                      backends=[EngineConfig(name=f"b{i}", engine="echo", cost_per_1k_input=float(i),
                                             weight=None) for i in range(n_backends)])
    engines = [EchoEngine(b) for b in cfg.backends]
    for e in engines:
        asyncio.run(e.start())
    return RoutedModel(cfg, [InProcessBackend(b, e) for b, e in zip(cfg.backends, engines)])


def _routing_rows(n: int) -> list[dict[str, Any]]:
    from apps.gateway.metrics import GatewayMetrics
    from apps.gateway.router import Router

    rows = []
    for strategy in ("fallback", "simple-shuffle", "least-busy", "latency-based-routing", "cost-based-routing"):
        model = _model(strategy)
        router = Router({"m": model}, GatewayMetrics(use_ray=False), 30.0)
        engine = model.backends[0].engine

        async def direct() -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                await engine.chat(REQ)
            return (time.perf_counter() - t0) / n

        async def routed() -> float:
            t0 = time.perf_counter()
            for i in range(n):
                await router.call(model, "chat", REQ, f"user{i}")
            return (time.perf_counter() - t0) / n

        d, r = [], []
        for order in ("dr", "rd", "rd", "dr"):  # ABBA
            for side in order:
                (d if side == "d" else r).append(asyncio.run(direct() if side == "d" else routed()))
        base, ours = statistics.median(d), statistics.median(r)
        rows.append({"name": f"routing overhead: {strategy}", "conductor": (ours - base) * 1e6, "baseline": None,
                     "unit": "µs/request added", "higher_is_better": False, "goal": "≪ 2 ms (LiteLLM's proxy p50)",
                     "notes": f"engine call alone {base * 1e6:.0f} µs; through the router {ours * 1e6:.0f} µs"})
    return rows


def _rollback_row(url: str) -> dict[str, Any]:
    from apps.gateway.metrics import GatewayMetrics
    from apps.gateway.rollout import Rollouts
    from apps.gateway.router import Router
    from cluster.gateway_config import RolloutConfig

    model = _model("fallback", 2)
    model.config = model.config.model_copy(update={"rollout": RolloutConfig(
        stable="b0", canary="b1", steps=[50, 100], step_interval_s=3600, min_samples=20, window_s=60)})
    metrics = GatewayMetrics(use_ray=False)
    rollouts = Rollouts({"m": model}, url, metrics, every_s=0.25)
    router = Router({"m": model}, metrics, 30.0, rollouts=rollouts.by_model)
    rate = 50.0  # requests per second, users spread over both variants

    async def traffic() -> float:
        i = 0
        failing_since = None
        while True:
            if i == 100:
                model.backends[1].engine.fail = True
                failing_since = time.perf_counter()
            try:
                await router.call(model, "chat", REQ, f"user{i}")
            except Exception:  # noqa: BLE001 - the canary's users fall back; nothing reaches here in practice
                pass
            i += 1
            await asyncio.sleep(1 / rate)
            if failing_since and rollouts.by_model["m"].current.state == "rolled_back":
                return time.perf_counter() - failing_since

    seconds = asyncio.run(asyncio.wait_for(traffic(), timeout=120))
    return {"name": "rollback detection after the canary starts failing", "conductor": seconds, "baseline": None,
            "unit": "s", "higher_is_better": False, "goal": "within the window (60 s here)",
            "notes": f"{rate:.0f} requests/s, half the users on the canary, min_samples 20, analysis every 0.25 s; "
                     "every caller was answered (canary users fell back to stable)"}


def _cache_rows(n: int) -> list[dict[str, Any]]:
    """Exact and semantic hits through the real stack (HTTP, Serve's proxy, the guard, the gateway) against the
    same engine called in-process: what a hit adds on top of an engine that costs nothing."""
    import httpx
    import ray

    from deployments.engines.echo import EchoEngine
    from tests.stack import init_ray, start_stack

    echo = {"id": "echo", "tags": ["semantic-group"],
            "backends": [{"name": "echo-local", "engine": "echo", "resources": {"num_cpus": 0.05}}]}
    init_ray()
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        stack = start_stack(Path(tempfile.mkdtemp()), port, extra_models=[echo], only=["gateway"])
        from cluster.config import EngineConfig

        engine = EchoEngine(EngineConfig(name="direct", engine="echo"))
        asyncio.run(engine.start())

        def body(model: str, text: str) -> dict[str, Any]:
            return {"model": model, "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": text}]}

        with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.api_key}"},
                          timeout=60) as h:
            h.post("/v1/chat/completions", json=body("echo", "cached question"))
            h.post("/v1/chat/completions", json=body("semantic-group", "What is the capital city of France?"))

            def timed(model: str, text: str, expect: str, stream: bool = False) -> float:
                t0 = time.perf_counter()
                r = h.post("/v1/chat/completions", json={**body(model, text), "stream": stream})  # read to the end
                assert r.headers.get("x-conductor-cache") == expect, r.headers
                assert not stream or r.text.endswith("data: [DONE]\n\n")
                return time.perf_counter() - t0

            def direct() -> float:
                t0 = time.perf_counter()
                asyncio.run(engine.chat(body("echo", "cached question")))
                return time.perf_counter() - t0

            exact, streamed, semantic, base = [], [], [], []
            for i in range(n):  # interleaved: the four see the same machine load
                for fn in ((lambda: exact.append(timed("echo", "cached question", "hit"))),
                           (lambda: streamed.append(timed("echo", "cached question", "hit", stream=True))),
                           (lambda: semantic.append(timed("semantic-group", "what is the capital city of France",
                                                          "semantic"))),
                           (lambda: base.append(direct())))[:: 1 if i % 2 else -1]:
                    fn()
        stack.stop()
    finally:
        ray.shutdown()

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1e3

    rows = []
    for label, xs in (("exact cache hit", exact), ("exact cache hit as a stream", streamed),
                      ("semantic cache hit", semantic)):
        rows.append({"name": f"{label} through the API, added latency (p50)",
                     "conductor": pct(xs, 0.5) - pct(base, 0.5), "baseline": None, "unit": "ms",
                     "higher_is_better": False, "goal": "anchor: LiteLLM reports 2 ms p50 proxy overhead",
                     "notes": f"p95 {pct(xs, 0.95) - pct(base, 0.95):.1f} ms added; the hit {pct(xs, 0.5):.1f} ms "
                              f"p50 over HTTP vs the engine in-process {pct(base, 0.5):.3f} ms; {n} requests each"
                              + ("; includes embedding the prompt (MiniLM) and the Qdrant search"
                                 if label.startswith("semantic") else "")
                              + ("; the whole answer read as a stream (SSE to [DONE]), replayed from the cache"
                                 if label.endswith("stream") else "")})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    dbs, stop = _databases()
    try:
        rows = _spend_rows(dbs, 2_000 if quick else 20_000)
        rows += _budget_rows(dbs, 200 if quick else 1_000)
        rows += _routing_rows(500 if quick else 3_000)
        rows.append(_rollback_row(dbs[0][1]))
        rows += _cache_rows(50 if quick else 300)
    finally:
        if stop:
            stop()
    return rows
