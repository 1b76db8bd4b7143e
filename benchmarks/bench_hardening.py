"""Hardening figures: concurrent chats against the same engine in-process, fuzzing every route, a killed replica.

- Concurrency: 1, 8 and 32 streamed chats at once (48 tokens each, end tokens banned so every answer has the same
  length) through the API vs the same llama.cpp engine in-process with the same 8 parallel slots; aggregate
  tokens/s and TTFT p50/p95. Runs alternate API / in-process.
- Fuzz: generated requests (tests/fuzz_requests.py) to every route of every app: how many were answered 5xx or
  outlived their deadline (both must be 0).
- Crash: SIGKILL of the llama.cpp replica twice under 8 clients for 60 s: the fraction answered 200.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

N_TOKENS = 48
NO_EOS = {"0": -100, "2": -100}


def _prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Tell me a story about lighthouse number {i}."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Direct:
    """The baseline: the same engine class with the same slots, driven by N concurrent coroutines."""

    def __init__(self, slots: int) -> None:
        from cluster.config import EngineConfig
        from deployments.engines.llamacpp import LlamaCppEngine

        self.loop = asyncio.new_event_loop()
        self.eng = LlamaCppEngine(EngineConfig(name="direct", engine="llamacpp", model="packaged:smollm2",
                                               parallel_slots=slots))
        self.loop.run_until_complete(self.eng.start())

    def run(self, clients: int) -> tuple[float, list[float]]:
        async def one(i: int) -> float:
            t0, first = time.perf_counter(), None
            req = {"messages": _prompt(i), "max_tokens": N_TOKENS, "temperature": 0.7, "logit_bias": NO_EOS}
            async for chunk in self.eng.chat_stream(req):
                if first is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - t0
            return first or 0.0

        async def go() -> tuple[float, list[float]]:
            t0 = time.perf_counter()
            ttfts = await asyncio.gather(*(one(i) for i in range(clients)))
            return clients * N_TOKENS / (time.perf_counter() - t0), list(ttfts)

        return self.loop.run_until_complete(go())


def api_run(http: list, clients: int) -> tuple[float, list[float]]:
    """`clients` streamed chats at once, each thread on its own kept-alive connection (`http`, made once outside
    the timing, as a real client keeps its pool: an httpx.Client costs ~30 ms of CPU to make, which 8 threads
    making theirs at once would add to every first token, and take from the engine's cores)."""
    def one(i: int) -> float:
        t0, first = time.perf_counter(), None
        body = {"model": "smollm2", "messages": _prompt(i), "max_tokens": N_TOKENS, "temperature": 0.7,
                "logit_bias": NO_EOS, "stream": True}
        with http[i].stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if first is None and '"content": "' in line:
                    first = time.perf_counter() - t0
        return first or 0.0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ttfts = list(pool.map(one, range(clients)))
    return clients * N_TOKENS / (time.perf_counter() - t0), ttfts


def concurrency_rows(stack, runs: int) -> list[dict]:
    from benchmarks.bench_serving import cpu_by_process

    direct = Direct(slots=8)
    http = [stack.http(timeout=600) for _ in range(32)]
    rows, single_api = [], None
    for clients in (1, 8, 32):
        api_tps, base_tps, api_ttft, base_ttft = [], [], [], []
        api_run(http, clients), direct.run(clients)  # warm both
        api_cpu = ""
        for i in range(runs):
            pair = [("api", lambda: api_run(http, clients)), ("direct", lambda: direct.run(clients))]
            for side, fn in (pair if i % 2 == 0 else pair[::-1]):  # alternate the order
                if side == "api":  # where the two cores go while the API serves (the last run's split is shown)
                    (tps, ttfts), api_cpu = cpu_by_process(fn)
                else:
                    tps, ttfts = fn()
                (api_tps if side == "api" else base_tps).append(tps)
                (api_ttft if side == "api" else base_ttft).extend(ttfts)
        a, b = statistics.median(api_tps), statistics.median(base_tps)
        single_api = single_api or a
        rows.append({"name": f"{clients} concurrent streamed chats, aggregate", "conductor": round(a, 1),
                     "baseline": round(b, 1), "unit": "tok/s", "higher_is_better": True,
                     "goal": "≥ 0.9×" + ("; ≥ 1.3× Conductor's 1-client rate at 8" if clients == 8 else ""),
                     "notes": f"TTFT p50/p95 API {_pct(api_ttft, .5) * 1000:.0f}/{_pct(api_ttft, .95) * 1000:.0f} ms, "
                              f"in-process {_pct(base_ttft, .5) * 1000:.0f}/{_pct(base_ttft, .95) * 1000:.0f} ms"
                              + (f"; {a / single_api:.2f}× the 1-client rate" if clients > 1 else "")
                              + f"; CPU during one API run: {api_cpu}"})
    for c in http:
        c.close()
    return rows


def fuzz_row(stack, count: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from cluster.serve_app import enabled_apps
    from tests.fuzz_requests import requests_for, send, served_routes

    client = stack.http(source="127.0.9.8", timeout=60)
    routes = served_routes(client, [s.route_prefix for s in enabled_apps(stack.config)])
    statuses: list[int] = []

    @settings(max_examples=count, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=["generate"])
    @given(data=st.data())
    def fuzz(data) -> None:  # type: ignore[no-untyped-def]
        statuses.append(send(client, data.draw(requests_for(routes)), 60.0))

    t0 = time.perf_counter()
    fuzz()
    took = time.perf_counter() - t0
    client.close()
    bad, hung = sum(500 <= s < 599 for s in statuses), statuses.count(599)
    with stack.http() as c:
        healthy = c.get("/healthz").status_code == 200
    return {"name": f"fuzz: generated requests over {len(routes)} routes of every app", "conductor": len(statuses),
            "baseline": None, "unit": "requests", "higher_is_better": True, "goal": "0 answered 5xx, 0 hung",
            "notes": f"{bad} answered 5xx, {hung} past the 60 s deadline, /healthz {'ok' if healthy else 'DOWN'} "
                     f"after; {sum(400 <= s < 500 for s in statuses)} 4xx; {took:.0f} s"}


def kill_row(stack, seconds: float = 60) -> dict:
    from tests.stack import kill_under_load

    codes, kills = kill_under_load(stack, seconds=seconds, clients=8, kills=2)
    ok = codes.count(200)
    return {"name": f"replica SIGKILLed {kills}× under 8 clients for {seconds:.0f} s",
            "conductor": round(ok / len(codes), 4), "baseline": None, "unit": "answered 200",
            "higher_is_better": True, "goal": "≥ 0.99",
            "notes": f"{ok} of {len(codes)} requests answered 200 (main before: 130 of 3,762)"}


def run(quick: bool = False) -> list[dict]:
    import ray

    from tests.stack import init_ray, start_stack

    init_ray()
    try:
        stack = start_stack(Path(tempfile.mkdtemp()), _free_port(),
                            extra_models=[{"id": "echo", "backends": [{"name": "echo-local", "engine": "echo",
                                                                       "resources": {"num_cpus": 0.05}}]}])
        rows = concurrency_rows(stack, 1 if quick else 3)
        rows.append(fuzz_row(stack, 1000 if quick else int(os.environ.get("CONDUCTOR_FUZZ_EXAMPLES", "10000"))))
        rows.append(kill_row(stack, 30 if quick else 60))
        stack.stop()
    finally:
        ray.shutdown()
    return rows
