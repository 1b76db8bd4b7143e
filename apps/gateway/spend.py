"""The spend log: one row per gateway request (who, which key, model, backend, tokens, cost, latency, TTFT, cache,
status) in the accounting database (SQLite by default, PostgreSQL for several replicas).

Rows are written by a background thread in batches, off the request path. While the database is down requests go
on being served: rows wait in a bounded buffer (the oldest dropped past `buffer_rows`, counted) and are written
when it answers again; `conductor_spend_rows_buffered` says how many wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import astuple, dataclass
from typing import Any

from deployments.sqldb import SQLDatabase

log = logging.getLogger("conductor.spend")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spend_log (ts DOUBLE PRECISION NOT NULL, user_name TEXT NOT NULL, team TEXT, "
    "key_id TEXT, model TEXT NOT NULL, backend TEXT, variant TEXT, endpoint TEXT NOT NULL, tokens_in INTEGER NOT NULL, "
    "tokens_out INTEGER NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, latency_s DOUBLE PRECISION, "
    "ttft_s DOUBLE PRECISION, cache TEXT, status INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS spend_log_ts ON spend_log (ts)",
)
GROUPS = ("user", "team", "key", "model", "backend", "day", "hour")


@dataclass
class SpendRow:
    ts: float
    user: str
    team: str | None
    key_id: str | None
    model: str
    backend: str | None
    variant: str | None
    endpoint: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float | None
    ttft_s: float | None
    cache: str | None
    status: int


class SpendLog:
    def __init__(self, url: str, buffer_rows: int = 10_000, retention_days: int = 90, metrics: Any = None,
                 flush_every_s: float = 0.5):
        self.db = SQLDatabase(url, connect_timeout_s=3)
        self.retention_days, self.metrics, self.flush_every_s = retention_days, metrics, flush_every_s
        self._rows: deque[tuple[int, SpendRow]] = deque()  # (sequence number, row)
        self._seq = 0
        self.buffer_rows = buffer_rows
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = False
        self._last_prune = self._last_warning = 0.0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="spend-log", daemon=True)
        self._thread.start()

    def record(self, row: SpendRow) -> None:
        with self._lock:
            if len(self._rows) >= self.buffer_rows:
                self._rows.popleft()
                self.dropped += 1
                self._count("spend_dropped")
            self._seq += 1
            self._rows.append((self._seq, row))
            waiting = len(self._rows)
        self._gauge(waiting)
        if waiting >= 200:
            self._wake.set()

    def buffered(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write what waits now; True when nothing is left (tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.buffered() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        return not self.buffered()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            try:
                self._write_batch()
                self._maybe_prune()
            except Exception as e:  # noqa: BLE001 - the database is down: keep the rows, try again soon
                self.db.forget_connection()
                self._count("spend_db_errors")
                if time.monotonic() - self._last_warning > 30:
                    self._last_warning = time.monotonic()
                    log.warning("spend log: database unavailable (%s); %d rows wait", type(e).__name__,
                                self.buffered())
                time.sleep(2.0)

    def _ensure_schema(self) -> None:
        if not self._ready:
            with self.db.tx() as c:
                for statement in _SCHEMA:
                    c.execute(statement)
            self._ready = True

    def _write_batch(self) -> None:
        with self._lock:
            batch = list(self._rows)[:1000]
        if not batch:
            return
        self._ensure_schema()
        with self.db.tx() as c:
            c.cursor().executemany(self.db.sql("INSERT INTO spend_log VALUES (" + ", ".join(["{p}"] * 15) + ")"),
                          [astuple(r) for _, r in batch])
        last = batch[-1][0]
        with self._lock:  # written: drop them (some may have been dropped for space meanwhile)
            while self._rows and self._rows[0][0] <= last:
                self._rows.popleft()
            waiting = len(self._rows)
        self._count("spend_written", len(batch))
        self._gauge(waiting)

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < 3600:
            return
        self._ensure_schema()
        with self.db.tx() as c:
            c.execute(self.db.sql("DELETE FROM spend_log WHERE ts < {p}"),
                      (time.time() - self.retention_days * 86400,))
        self._last_prune = time.monotonic()

    def _count(self, name: str, n: float = 1.0) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).inc(n)

    def _gauge(self, waiting: int) -> None:
        if self.metrics is not None:
            self.metrics.spend_buffered.set(float(waiting))

    # --- reading ------------------------------------------------------------------------------------------------
    def summary(self, group_by: list[str], user: str | None = None, since: float | None = None,
                until: float | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group (any of GROUPS), newest day first; `user` limits it to one user."""
        def when(pg: str, lite: str) -> str:
            return f"to_char(to_timestamp(ts) AT TIME ZONE 'UTC', '{pg}')" if self.db.postgres else \
                f"strftime('{lite}', ts, 'unixepoch')"

        columns = {"user": "user_name", "team": "team", "key": "key_id", "model": "model", "backend": "backend",
                   "day": when("YYYY-MM-DD", "%Y-%m-%d"), "hour": when("YYYY-MM-DD HH24:00", "%Y-%m-%d %H:00")}
        picked = [columns[g] for g in group_by]
        where, args = ["1 = 1"], []
        for clause, value in (("user_name = {p}", user), ("ts >= {p}", since), ("ts < {p}", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        select = ", ".join([f"{c} AS g{i}" for i, c in enumerate(picked)] +
                           ["COUNT(*)", "SUM(tokens_in)", "SUM(tokens_out)", "SUM(cost_usd)",
                            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)"])
        group = (" GROUP BY " + ", ".join(f"g{i}" for i in range(len(picked)))) if picked else ""
        order = " ORDER BY " + ", ".join(f"g{i} DESC" for i in range(len(picked))) if picked else ""
        self._ensure_schema()
        with self.db.tx() as c:
            rows = c.execute(self.db.sql(f"SELECT {select} FROM spend_log WHERE {' AND '.join(where)}"
                                         f"{group}{order}"), args).fetchall()
        n = len(picked)
        return [{**dict(zip(group_by, r[:n])), "requests": int(r[n]), "tokens_in": int(r[n + 1] or 0),
                 "tokens_out": int(r[n + 2] or 0), "cost_usd": float(r[n + 3] or 0.0), "errors": int(r[n + 4] or 0)}
                for r in rows]
