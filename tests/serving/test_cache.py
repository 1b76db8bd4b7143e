"""The exact-match cache: shared by gateway replicas through a real Redis, expiring after its TTL, and answering
from the replica's own LRU while Redis is away."""

from __future__ import annotations

import asyncio
import socket
import time

from apps.gateway.cache import ResponseCache, cache_key

REQ = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}


def test_replicas_share_answers_through_redis_until_they_expire(redis_server):
    one, two = (ResponseCache(8, ttl_s=0.5, redis_url=redis_server, prefix=f"t{time.time()}") for _ in range(2))
    two.prefix = one.prefix
    key = cache_key("chat", "m", REQ, "alice")

    async def run() -> tuple:
        await one.put(key, "b1", {"id": "x"})
        shared = await two.get(key)
        await asyncio.sleep(0.7)
        return shared, await two.get(key)

    shared, expired = asyncio.run(run())
    assert shared == ("b1", {"id": "x"}) and expired is None
    assert cache_key("chat", "m", REQ, "bob") != key  # another user never gets alice's answer
    assert cache_key("chat", "m", {**REQ, "temperature": 0.7}, "alice") is None  # sampling is not cached


def test_the_replicas_lru_answers_while_redis_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    cache = ResponseCache(2, ttl_s=60, redis_url=f"redis://127.0.0.1:{port}/0")

    async def run() -> tuple:
        for i in range(3):
            await cache.put(f"k{i}", "b", {"n": i})
        return await cache.get("k0"), await cache.get("k2")

    oldest, newest = asyncio.run(run())
    assert oldest is None and newest == ("b", {"n": 2})  # bounded: the oldest went


def test_the_semantic_cache_keeps_to_greedy_whole_requests_unless_told():
    from apps.gateway.semantic_cache import SemanticCache, params_key
    from cluster.gateway_config import SemanticCacheConfig

    cache = SemanticCache(SemanticCacheConfig(enabled=True, models=["m"]), embedder=None)
    assert cache.eligible("m", REQ) and not cache.eligible("other", REQ)
    assert not cache.eligible("m", {**REQ, "stream": True}) and not cache.eligible("m", {**REQ, "n": 2})
    assert not cache.eligible("m", {**REQ, "temperature": 0.7})
    assert not cache.eligible("m", {**REQ, "tools": [{"type": "function"}]})
    sampling = SemanticCache(SemanticCacheConfig(enabled=True, allow_sampling=True, allow_tools=True), None)
    assert sampling.eligible("any", {**REQ, "temperature": 0.7, "tools": [{"type": "function"}]})
    assert not SemanticCache(SemanticCacheConfig(), None).eligible("m", REQ)  # off by default
    # Only the prompt may differ between a question and its cached neighbour.
    assert params_key("chat", "m", REQ) == params_key("chat", "m", {**REQ, "messages": [], "user": "x"})
    assert params_key("chat", "m", REQ) != params_key("chat", "m", {**REQ, "max_tokens": 5})


def _ask(stack, text: str, key: str | None = "", temperature: float = 0.0):
    with stack.http(key) as h:
        return h.post("/v1/chat/completions", json={"model": "semantic-group", "temperature": temperature,
                                                     "max_tokens": 16, "messages": [{"role": "user", "content": text}]})


def test_a_prompt_that_means_the_same_gets_the_cached_answer_and_says_so(serve_stack):
    from tests.stack import OTHER_KEY

    first = _ask(serve_stack, "What is the capital city of France?")
    assert first.status_code == 200 and first.headers["x-conductor-cache"] == "miss"
    again = _ask(serve_stack, "what is the capital city of France")
    assert again.headers["x-conductor-cache"] == "semantic", again.headers
    assert 0.9 <= float(again.headers["x-conductor-cache-similarity"]) < 1.0
    # The echo engine repeats its prompt: the answer is the first prompt's, so it came from the cache.
    assert again.json()["choices"][0]["message"]["content"] == "echo: What is the capital city of France?"
    other = _ask(serve_stack, "How tall is Mount Everest?")
    assert other.headers["x-conductor-cache"] == "miss"
    someone_else = _ask(serve_stack, "what is the capital city of France", key=OTHER_KEY)
    assert someone_else.headers["x-conductor-cache"] == "miss"  # one user's answers are never another's
    sampled = _ask(serve_stack, "what is the capital city of France", temperature=0.8)
    assert "x-conductor-cache" not in sampled.headers  # temperature > 0 is meant to vary: not cached
    with serve_stack.http() as h:
        metrics = h.get("/metrics").text
    assert 'conductor_cache_requests_total{model="semantic-group",outcome="semantic"}' in metrics
