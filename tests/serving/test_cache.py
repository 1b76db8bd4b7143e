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
