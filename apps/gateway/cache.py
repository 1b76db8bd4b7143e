"""Exact-match response cache for deterministic requests (temperature 0), shared through Redis when configured.

Sampling at temperature > 0 is meant to differ between calls, so only greedy requests are cached. A streamed request
has the same key as the same request asked whole: the cache holds whole answers, and a stream is put together from
its chunks and replayed from one (stream_cache.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

from apps.gateway.redis_side import MISSING, BestEffortRedis

_IGNORED = {"stream", "stream_options", "user"}


def cache_key(endpoint: str, model: str, req: dict[str, Any], user: str) -> str | None:
    """Keyed by user too: one user's cached answer is never served to another (it may carry their data)."""
    if req.get("temperature") is None or float(req["temperature"]) != 0.0:
        return None
    body = {k: v for k, v in req.items() if k not in _IGNORED}
    raw = json.dumps([user, endpoint, model, body], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache:
    """Answers by key for `ttl_s`: in Redis when `redis_url` is set (every gateway replica shares one cache), else
    in this replica's LRU of `size` entries. While Redis fails, the LRU answers (and Redis is retried after 5 s)."""

    def __init__(self, size: int, ttl_s: float = 600.0, redis_url: str | None = None,
                 prefix: str = "conductor:cache", timeout_s: float = 0.25):
        self.size, self.ttl_s, self.redis_url, self.prefix, self.timeout_s = size, ttl_s, redis_url, prefix, timeout_s
        self._data: OrderedDict[str, tuple[float, str, dict[str, Any]]] = OrderedDict()
        self._redis = BestEffortRedis(redis_url, timeout_s).run

    async def get(self, key: str | None) -> tuple[str, dict[str, Any]] | None:
        if key is None:
            return None
        raw = await self._redis(lambda r: r.get(f"{self.prefix}:{key}"))
        if raw is not MISSING:
            if raw is None:
                return None
            doc = json.loads(raw)
            return doc["backend"], doc["response"]
        found = self._data.get(key)
        if found is None or time.monotonic() - found[0] > self.ttl_s:
            self._data.pop(key, None)
            return None
        self._data.move_to_end(key)
        return found[1], found[2]

    async def put(self, key: str | None, backend: str, response: dict[str, Any]) -> None:
        if key is None or self.size <= 0:
            return
        doc = json.dumps({"backend": backend, "response": response})
        stored = await self._redis(lambda r: r.set(f"{self.prefix}:{key}", doc, px=max(1, int(self.ttl_s * 1000))))
        if stored is not MISSING:
            return
        self._data[key] = (time.monotonic(), backend, response)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

