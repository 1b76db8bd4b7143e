"""Exact-match response cache for deterministic requests (temperature 0, not streamed).

Sampling at temperature > 0 is meant to differ between calls, so only greedy requests are cached.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

_IGNORED = {"stream", "stream_options", "user"}


def cache_key(endpoint: str, model: str, req: dict[str, Any], user: str) -> str | None:
    """Keyed by user too: one user's cached answer is never served to another (it may carry their data)."""
    if req.get("stream") or req.get("temperature") is None or float(req["temperature"]) != 0.0:
        return None
    body = {k: v for k, v in req.items() if k not in _IGNORED}
    raw = json.dumps([user, endpoint, model, body], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache:
    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def get(self, key: str | None) -> tuple[str, dict[str, Any]] | None:
        if key is None or key not in self._data:
            return None
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key: str | None, backend: str, response: dict[str, Any]) -> None:
        if key is None or self.size <= 0:
            return
        self._data[key] = (backend, response)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
