"""Redis as a best-effort side store for gateway state that replicas share (cache entries, routing counters):
one client per event loop, short timeouts, and after a failure Redis is skipped for a few seconds so each replica
goes on with its own state instead of waiting on a Redis that does not answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

MISSING = object()  # what `run` returns when Redis is not configured, skipped or failed


class BestEffortRedis:
    def __init__(self, url: str | None, timeout_s: float = 0.25, skip_s: float = 5.0):
        self.url, self.timeout_s, self.skip_s = url, timeout_s, skip_s
        self._clients: dict[int, Any] = {}
        self._down_until = 0.0

    async def run(self, op: Any) -> Any:
        """`await op(client)`, or MISSING."""
        if self.url is None or time.monotonic() < self._down_until:
            return MISSING
        import redis.asyncio as aredis

        loop = id(asyncio.get_running_loop())
        try:
            if loop not in self._clients:
                self._clients[loop] = aredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                             socket_connect_timeout=self.timeout_s)
            return await asyncio.wait_for(op(self._clients[loop]), timeout=self.timeout_s * 2)
        except Exception:  # noqa: BLE001 - Redis trouble: each replica on its own for a while
            self._clients.pop(loop, None)
            self._down_until = time.monotonic() + self.skip_s
            return MISSING

    async def value(self, op: Any) -> Any:
        """`run`, with None for MISSING (where no answer and an empty answer mean the same)."""
        result = await self.run(op)
        return None if result is MISSING else result
