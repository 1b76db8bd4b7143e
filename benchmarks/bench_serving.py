"""Serving overhead: Conductor's API vs calling the same engine in-process, and embeddings under concurrency.

- LLM: the packaged SmolLM2 (llama.cpp), same prompt, greedy, fixed output length (end tokens banned). Streaming through
  the gateway (HTTP -> proxy -> gateway -> LLM replica) vs `LlamaCppEngine.chat_stream` called directly.
- Embeddings: 16 concurrent clients posting small batches to /v1/embeddings vs one process calling
  sentence-transformers `encode` on the same texts in batches of 64.
- Rerank: /v1/rerank with a GGUF reranker vs the same file scored by llama.cpp in this process. No reranker ships in
  a package, so the model is the tests' stand-in (tests/rag/rerank_model.py, SmolLM2 in a reranker's layout): its
  scores mean nothing, its cost per pair is a small reranker's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
# SmolLM2's end tokens (<|endoftext|>, <|im_end|>) banned: every run generates exactly max_tokens, on both sides,
# through the OpenAI `logit_bias` field (the API refuses engine-specific fields like `ignore_eos`).
NO_EOS = {"0": -100, "2": -100}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DirectLLM:
    """The baseline: the same engine class, called in this process with no Serve or HTTP in between."""

    def __init__(self) -> None:
        from cluster.config import EngineConfig
        from deployments.engines.llamacpp import LlamaCppEngine

        self.loop = asyncio.new_event_loop()
        self.eng = LlamaCppEngine(EngineConfig(name="direct", engine="llamacpp", model="packaged:smollm2"))
        self.loop.run_until_complete(self.eng.start())

    def once(self, n_tokens: int) -> tuple[float, float, float]:
        async def go() -> tuple[float, float, float]:
            t0 = time.perf_counter()
            first, pieces = None, 0
            async for chunk in self.eng.chat_stream({"messages": PROMPT, "max_tokens": n_tokens, "temperature": 0,
                                                     "logit_bias": NO_EOS}):
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    first = first or time.perf_counter()
                    pieces += 1
            return _rates(t0, first, time.perf_counter(), n_tokens)

        return self.loop.run_until_complete(go())


def _rates(t0: float, first: float | None, end: float, n_tokens: int) -> tuple[float, float, float]:
    """(tokens/s end to end, TTFT s, decode tokens/s after the first token)."""
    first = first or end
    return n_tokens / (end - t0), first - t0, (n_tokens - 1) / max(1e-9, end - first)


def _api_llm_once(h, n_tokens: int) -> tuple[float, float, float]:
    body = {"model": "smollm2", "messages": PROMPT, "max_tokens": n_tokens, "temperature": 0, "logit_bias": NO_EOS,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, usage = None, None
    # The same greedy request each run: generated each time, never the exact cache's replay of the first.
    with h.stream("POST", "/v1/chat/completions", json=body, headers={"cache-control": "no-cache, no-store"}) as r:
        assert r.headers.get("x-conductor-cache") is None, r.headers
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and '"content": "' in line:
                first = time.perf_counter()
            if line.startswith("data: {") and '"usage": {' in line:
                usage = json.loads(line[6:])["usage"]
    end = time.perf_counter()
    # Both sides must have generated the same work: exactly n_tokens (end tokens are banned).
    assert usage and usage["completion_tokens"] == n_tokens, f"completion tokens {usage} != {n_tokens}"
    return _rates(t0, first, end, n_tokens)


def _interleaved(a, b, runs: int) -> tuple[list, list]:
    """ABBA (after one warm-up each) so a noisy machine loads both sides alike."""
    a(), b()
    ra, rb = [], []
    for i in range(runs):
        first, second = ((a, ra), (b, rb)) if i % 2 == 0 else ((b, rb), (a, ra))
        first[1].append(first[0]())
        second[1].append(second[0]())
    return ra, rb


def cpu_by_process(fn) -> tuple[Any, str]:
    """Run fn and say which processes spent the CPU meanwhile (the top five, seconds)."""
    import psutil

    def snap() -> dict[int, tuple[str, float]]:
        out = {}
        for p in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            try:
                name = " ".join(p.info["cmdline"] or [])[:60].replace("ray::ServeReplica:", "")
                out[p.pid] = (name, p.info["cpu_times"].user + p.info["cpu_times"].system)
            except (psutil.Error, TypeError, AttributeError):
                continue
        return out

    before = snap()
    result = fn()
    after = snap()
    spent = sorted(((after[k][1] - before[k][1], after[k][0]) for k in after if k in before), reverse=True)[:5]
    return result, "; ".join(f"{name.split()[0] if name else '?'} {dt:.1f} s" for dt, name in spent)


def _texts(n: int) -> list[str]:
    words = "river stone cloud engine garden lantern harbor violin meadow circuit falcon orbit".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 9)) + f" #{i}" for i in range(n)]


def _api_embed(h, texts: list[str], clients: int = 16, per_request: int = 8) -> float:
    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda c: h.post("/v1/embeddings", json={"input": c, "encoding_format": "base64"}).raise_for_status(), chunks))
    return len(texts) / (time.perf_counter() - t0)


def _direct_embed(emb, texts: list[str]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(texts), 64):
        emb.embed(texts[i:i + 64])
    return len(texts) / (time.perf_counter() - t0)


RERANK_QUERY = "how do I reset the router to its factory settings?"


def _rerank_docs() -> list[str]:
    return [f"Step {i}: " + " ".join(_texts(40)[i * 3:i * 3 + 3]) for i in range(8)]


def _api_rerank(h) -> float:
    docs = _rerank_docs()
    t0 = time.perf_counter()
    r = h.post("/v1/rerank", json={"query": RERANK_QUERY, "documents": docs})
    r.raise_for_status()
    assert len(r.json()["results"]) == len(docs)
    return len(docs) / (time.perf_counter() - t0)


def _direct_rerank(model) -> float:
    docs = _rerank_docs()
    t0 = time.perf_counter()
    assert len(model.score(RERANK_QUERY, docs)) == len(docs)
    return len(docs) / (time.perf_counter() - t0)


def _med(xs: list, i: int | None = None) -> float:
    return statistics.median([x[i] if i is not None else x for x in xs])


def run(quick: bool = False) -> list[dict]:
    import httpx
    import ray

    from deployments.embedder_local import LocalEmbedder
    from tests.stack import init_ray, start_stack

    n_tokens, runs, n_texts = (64, 2, 256) if quick else (128, 5, 512)
    texts = _texts(n_texts)
    init_ray()
    try:
        from deployments.rerankers import load_rerank_model
        from tests.rag.rerank_model import write_rerank_gguf

        tmp = Path(tempfile.mkdtemp())
        gguf = str(write_rerank_gguf(tmp / "rerank.gguf"))
        stack = start_stack(tmp, _free_port(), only=["gateway"],
                            reranker={"id": "bench-reranker", "model": gguf, "resources": {"num_cpus": 0.05}})
        import torch

        emb_cfg = stack.config.embeddings
        torch.set_num_threads(emb_cfg.total_threads)  # the baseline gets the replicas' threads, all of them
        direct, emb = _DirectLLM(), LocalEmbedder("packaged:minilm")
        with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.api_key}"},
                      timeout=120, limits=httpx.Limits(max_connections=16)) as h:
            (api, base), llm_cpu = cpu_by_process(
                lambda: _interleaved(lambda: _api_llm_once(h, n_tokens), lambda: direct.once(n_tokens), runs))
            (api_e, base_e), emb_cpu = cpu_by_process(lambda: _interleaved(
                lambda: _api_embed(h, texts), lambda: _direct_embed(emb, texts), max(2, runs // 2)))
            reranker = load_rerank_model(gguf, stack.config.reranker.threads)  # the replica's threads
            (api_r, base_r), rr_cpu = cpu_by_process(lambda: _interleaved(
                lambda: _api_rerank(h), lambda: _direct_rerank(reranker), max(2, runs // 2)))
        stack.stop()
    finally:
        ray.shutdown()
    api_tps, api_ttft, direct_tps, direct_ttft = _med(api, 0), _med(api, 1), _med(base, 0), _med(base, 1)
    api_dec, direct_dec = _med(api, 2), _med(base, 2)
    api_eps, direct_eps = _med(api_e), _med(base_e)
    added_ms = (api_ttft - direct_ttft) * 1000
    load = "load average %.1f/%.1f/%.1f" % os.getloadavg()
    return [
        {"name": f"LLM stream tokens/s end to end (SmolLM2 Q4_1, {n_tokens} tokens)", "conductor": round(api_tps, 1),
         "baseline": round(direct_tps, 1), "unit": "tok/s", "higher_is_better": True, "goal": "≥ 0.95×",
         "notes": f"baseline: LlamaCppEngine in-process; {runs} runs each, ABBA; completion tokens checked = "
                  f"{n_tokens} on the API; CPU during the runs: {llm_cpu}; {load}"},
        {"name": "LLM stream decode tokens/s (after the first token)", "conductor": round(api_dec, 1),
         "baseline": round(direct_dec, 1), "unit": "tok/s", "higher_is_better": True, "goal": "≥ 0.95×",
         "notes": "the same runs, TTFT excluded"},
        {"name": "LLM time to first token", "conductor": round(api_ttft * 1000, 1),
         "baseline": round(direct_ttft * 1000, 1), "unit": "ms", "higher_is_better": False,
         "goal": "≤ +10 ms", "notes": f"added {added_ms:+.1f} ms"},
        {"name": f"Embeddings, 16 concurrent clients ({n_texts} texts)", "conductor": round(api_eps, 1),
         "baseline": round(direct_eps, 1), "unit": "texts/s", "higher_is_better": True, "goal": "≥ 0.9×",
         "notes": "baseline: sentence-transformers encode, batch 64, one process, torch threads "
                  f"{__import__('torch').get_num_threads()} (the API's: {emb_cfg.resources.replicas_at_start} replicas "
                  f"x {emb_cfg.threads} embeddings.threads); API: 8 "
                  f"texts/request, base64 (the openai SDK's default); CPU during the runs: {emb_cpu}"},
        {"name": "Rerank, 8 documents a request (a 135M GGUF reranker)", "conductor": round(_med(api_r), 2),
         "baseline": round(_med(base_r), 2), "unit": "documents/s", "higher_is_better": True, "goal": "≥ 0.95×",
         "notes": "baseline: the same GGUF scored by llama.cpp in this process (LlamaCppRerankModel, the same "
                  f"{stack.config.reranker.threads} threads); API: /v1/rerank, one client; {len(api_r)} runs each, "
                  f"ABBA; CPU during the runs: {rr_cpu}"},
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick=bool(os.environ.get("QUICK"))), indent=2))
