"""Fixed-window counters for rate limits and failed-key lockouts, in this replica's memory or shared in Redis.

The Redis counter is one Lua script (INCR + EXPIRE in a single atomic step), so any number of gateway and app
replicas admit exactly the budget between them. It uses the asyncio client with short timeouts: a Redis that
accepts connections and never answers costs a request at most `timeout_s`, never the event loop. When Redis fails,
counting falls back to the in-process counter (a limit per replica, not "unlimited"), counted in
`conductor_limiter_fallback_total` and logged, and Redis is retried after `retry_after_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("conductor.limits")

# Security and limiter metrics of every app replica; the gateway's /metrics appends them.
REGISTRY = CollectorRegistry()
LIMITER_FALLBACKS = Counter("conductor_limiter_fallback_total", "Limiter decisions made in process because Redis "
                            "failed.", ("reason",), registry=REGISTRY)
AUTH_FAILURES = Counter("conductor_auth_failures_total", "Requests refused for a missing or wrong API key.",
                        ("outcome",), registry=REGISTRY)
ORIGIN_REFUSALS = Counter("conductor_cross_site_refusals_total", "Requests refused by the Origin/Host check.",
                          ("reason",), registry=REGISTRY)

_INCR_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class MemoryCounter:
    """Window counts in this process; old windows are dropped as new ones start."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._newest = 0
        self._lock = threading.Lock()

    def incr_sync(self, key: str, window: int) -> int:
        with self._lock:
            if window > self._newest:  # a new window began: the older ones can no longer be asked for
                self._newest = window
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            n = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = n
        return n

    def peek_sync(self, key: str, window: int) -> int:
        with self._lock:
            return self._counts.get((key, window), 0)

    async def incr(self, key: str, window: int, ttl_s: int) -> int:
        return self.incr_sync(key, window)

    async def peek(self, key: str, window: int) -> int:
        return self.peek_sync(key, window)


class RedisCounter:
    """The same windows in Redis (atomic per increment), falling back to memory while Redis misbehaves."""

    def __init__(self, url: str, prefix: str = "conductor:rl", timeout_s: float = 0.25, retry_after_s: float = 5.0):
        import redis.asyncio as aredis

        self.url, self.prefix, self.timeout_s, self.retry_after_s = url, prefix, timeout_s, retry_after_s
        self._make = lambda: aredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._clients: dict[int, Any] = {}  # one client per event loop (Serve replicas and tests use several)
        self.fallback = MemoryCounter()
        self._down_until = 0.0
        self._last_log = 0.0

    def _client(self) -> Any:
        import asyncio

        loop = id(asyncio.get_running_loop())
        if loop not in self._clients:
            self._clients[loop] = self._make()
        return self._clients[loop]

    def _failed(self, e: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_after_s
        reason = "timeout" if "Timeout" in type(e).__name__ else "error"
        LIMITER_FALLBACKS.labels(reason=reason).inc()
        if time.monotonic() - self._last_log > 30:
            self._last_log = time.monotonic()
            log.warning("rate limiter: redis at %s failed (%s); counting in this replica until it answers again",
                        self.url.rsplit("@", 1)[-1], type(e).__name__)

    async def incr(self, key: str, window: int, ttl_s: int) -> int:
        import asyncio

        if time.monotonic() < self._down_until:
            LIMITER_FALLBACKS.labels(reason="cooldown").inc()
            return self.fallback.incr_sync(key, window)
        try:
            # wait_for bounds the whole call too: a half-open connection cannot outlast the timeout.
            n = await asyncio.wait_for(self._client().eval(_INCR_SCRIPT, 1, f"{self.prefix}:{key}:{window}", ttl_s),
                                       timeout=self.timeout_s * 2)
            return int(n)
        except Exception as e:  # noqa: BLE001 - any Redis failure means: count here instead
            self._clients.pop(id(asyncio.get_running_loop()), None)
            self._failed(e)
            return self.fallback.incr_sync(key, window)

    async def peek(self, key: str, window: int) -> int:
        import asyncio

        if time.monotonic() < self._down_until:
            return self.fallback.peek_sync(key, window)
        try:
            raw = await asyncio.wait_for(self._client().get(f"{self.prefix}:{key}:{window}"),
                                         timeout=self.timeout_s * 2)
            return int(raw or 0)
        except Exception as e:  # noqa: BLE001
            self._clients.pop(id(asyncio.get_running_loop()), None)
            self._failed(e)
            return self.fallback.peek_sync(key, window)


class RateLimiter:
    """`per_minute` admissions per key in fixed one-minute windows; 0 disables."""

    def __init__(self, per_minute: int, counter: MemoryCounter | RedisCounter | None = None, scope: str = "user"):
        self.per_minute = per_minute
        self.counter = counter or MemoryCounter()
        self.scope = scope

    async def allow(self, key: str) -> tuple[bool, int]:
        """(allowed, seconds until the window resets)."""
        if self.per_minute <= 0:
            return True, 0
        now = time.time()
        n = await self.counter.incr(f"{self.scope}:{key}", int(now // 60), 120)
        return n <= self.per_minute, 60 - int(now % 60)

    async def exhausted(self, key: str) -> tuple[bool, int]:
        """Whether the budget is already used up, without spending any (for lockouts checked before the key)."""
        if self.per_minute <= 0:
            return False, 0
        now = time.time()
        n = await self.counter.peek(f"{self.scope}:{key}", int(now // 60))
        return n >= self.per_minute, 60 - int(now % 60)


def make_counter(redis_url: str | None) -> MemoryCounter | RedisCounter:
    return RedisCounter(redis_url) if redis_url else MemoryCounter()
