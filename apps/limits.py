"""Sliding-window rate limits and failed-key lockouts, counted in this replica's memory or shared in Redis.

A limit of N per minute admits a request while `current + previous × (1 − elapsed share of the current minute)`
stays within N: the previous minute's count fades out as the current one fills, so a client cannot spend N at the end
of one minute and N more at the start of the next (fixed windows let it: 2N in a second). Only admitted requests
are counted, so a client that keeps retrying past its limit still gets N a minute.

The Redis admission is one Lua script (read both windows, compare, INCR + EXPIRE, in a single atomic step), so any
number of gateway and app replicas admit exactly the budget between them. It uses the asyncio client with short
timeouts: a Redis that accepts connections and never answers costs a request at most `timeout_s`, never the event
loop. When Redis fails, counting falls back to the in-process counter (a limit per replica, not "unlimited"),
counted in `conductor_limiter_fallback_total` and logged, and Redis is retried after `retry_after_s`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
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

# KEYS: this window, the previous one. ARGV: limit, the previous window's weight, TTL. Returns {admitted, cur, prev}.
_ADMIT_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur + 1 + prev * tonumber(ARGV[2]) > tonumber(ARGV[1]) then return {0, cur, prev} end
cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, cur, prev}
"""


def _admissible(cur: int, prev: int, limit: int, weight: float) -> bool:
    return cur + 1 + prev * weight <= limit  # the same test as _ADMIT_SCRIPT's


class MemoryCounter:
    """Window counts in this process; windows older than the previous one are dropped as new ones start."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._newest = 0
        self._lock = threading.Lock()

    def admit_sync(self, key: str, window: int, limit: int, weight: float) -> tuple[bool, int, int]:
        with self._lock:
            if window > self._newest:  # a new window began: only it and the one before can still be asked for
                self._newest = window
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
            cur, prev = self._counts.get((key, window), 0), self._counts.get((key, window - 1), 0)
            if not _admissible(cur, prev, limit, weight):
                return False, cur, prev
            self._counts[(key, window)] = cur + 1
        return True, cur + 1, prev

    def peek_sync(self, key: str, window: int) -> tuple[int, int]:
        with self._lock:
            return self._counts.get((key, window), 0), self._counts.get((key, window - 1), 0)

    async def admit(self, key: str, window: int, limit: int, weight: float, ttl_s: int) -> tuple[bool, int, int]:
        return self.admit_sync(key, window, limit, weight)

    async def peek(self, key: str, window: int) -> tuple[int, int]:
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

    def _keys(self, key: str, window: int) -> tuple[str, str]:
        # one hash tag for both: a script's keys must share a slot on a Redis Cluster
        return f"{self.prefix}:{{{key}}}:{window}", f"{self.prefix}:{{{key}}}:{window - 1}"

    async def admit(self, key: str, window: int, limit: int, weight: float, ttl_s: int) -> tuple[bool, int, int]:
        import asyncio

        if time.monotonic() < self._down_until:
            LIMITER_FALLBACKS.labels(reason="cooldown").inc()
            return self.fallback.admit_sync(key, window, limit, weight)
        try:
            # wait_for bounds the whole call too: a half-open connection cannot outlast the timeout.
            ok, cur, prev = await asyncio.wait_for(
                self._client().eval(_ADMIT_SCRIPT, 2, *self._keys(key, window), limit, repr(weight), ttl_s),
                timeout=self.timeout_s * 2)
            return bool(ok), int(cur), int(prev)
        except Exception as e:  # noqa: BLE001 - any Redis failure means: count here instead
            self._clients.pop(id(asyncio.get_running_loop()), None)
            self._failed(e)
            return self.fallback.admit_sync(key, window, limit, weight)

    async def peek(self, key: str, window: int) -> tuple[int, int]:
        import asyncio

        if time.monotonic() < self._down_until:
            return self.fallback.peek_sync(key, window)
        try:
            cur, prev = await asyncio.wait_for(self._client().mget(*self._keys(key, window)),
                                               timeout=self.timeout_s * 2)
            return int(cur or 0), int(prev or 0)
        except Exception as e:  # noqa: BLE001
            self._clients.pop(id(asyncio.get_running_loop()), None)
            self._failed(e)
            return self.fallback.peek_sync(key, window)


class RateLimiter:
    """`per_minute` admissions per key over a sliding minute (see the module docstring); 0 disables."""

    def __init__(self, per_minute: int, counter: MemoryCounter | RedisCounter | None = None, scope: str = "user",
                 clock: Callable[[], float] = time.time):
        self.per_minute = per_minute
        self.counter = counter or MemoryCounter()
        self.scope = scope
        self.clock = clock

    def _now(self) -> tuple[int, float]:
        """(this minute's window number, the share of it that has passed)."""
        now = self.clock()
        return int(now // 60), (now % 60) / 60

    async def allow(self, key: str) -> tuple[bool, int]:
        """(allowed, seconds until a request would be admitted again); an admitted request is counted."""
        if self.per_minute <= 0:
            return True, 0
        window, elapsed = self._now()
        ok, cur, prev = await self.counter.admit(f"{self.scope}:{key}", window, self.per_minute, 1 - elapsed, 180)
        return ok, 0 if ok else retry_after(cur, prev, self.per_minute, elapsed)

    async def exhausted(self, key: str) -> tuple[bool, int]:
        """Whether the next request would be refused, without counting one (for lockouts checked before the key)."""
        if self.per_minute <= 0:
            return False, 0
        window, elapsed = self._now()
        cur, prev = await self.counter.peek(f"{self.scope}:{key}", window)
        if _admissible(cur, prev, self.per_minute, 1 - elapsed):
            return False, 0
        return True, retry_after(cur, prev, self.per_minute, elapsed)


def retry_after(cur: int, prev: int, limit: int, elapsed: float) -> int:
    """Whole seconds until one more request fits under `limit`, with no other request in between."""
    if cur + 1 <= limit:  # the previous minute's fading share is in the way: wait until enough of it has faded
        at = 1 - (limit - cur - 1) / prev if prev else elapsed
        wait = (at - elapsed) * 60
    else:  # this minute is full: into the next, where this minute's count is the one fading
        wait = (1 - elapsed) * 60 + max(0.0, 1 - (limit - 1) / cur) * 60
    return max(1, math.ceil(wait))


def make_counter(redis_url: str | None) -> MemoryCounter | RedisCounter:
    return RedisCounter(redis_url) if redis_url else MemoryCounter()
