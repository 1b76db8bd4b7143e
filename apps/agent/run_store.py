"""Agent runs in a database every agent replica shares: SQLite by default (a file under agent.data_dir, zero set-up),
PostgreSQL by URL (`agent.store_url: postgresql://...`) for replicas on several machines.

The same interface as the JSON-file TraceStore (apps/agent/trace.py): save / get / list. A save is one upsert of
the whole trace, done after every completed step, so a run killed mid-step is resumable from the last one.
"""

from __future__ import annotations

import time
from typing import Any

from apps.agent.trace import _ID, Trace

_SCHEMA = ("CREATE TABLE IF NOT EXISTS agent_runs (run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
           "status TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, "
           "summary TEXT NOT NULL, doc TEXT NOT NULL)")
_SESSIONS = ("CREATE TABLE IF NOT EXISTS agent_sessions (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
             "updated_at DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL)")
_UPSERT_SESSION = ("INSERT INTO agent_sessions (session_id, owner, updated_at, doc) VALUES ({p}, {p}, {p}, {p}) "
                   "ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at, doc = excluded.doc")
_UPSERT = ("INSERT INTO agent_runs (run_id, owner, status, started_at, updated_at, summary, doc) "
           "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
           "status = excluded.status, updated_at = excluded.updated_at, summary = excluded.summary, "
           "doc = excluded.doc")


class SQLRunStore:
    """Runs as rows: the trace's JSON plus the columns the run list filters and sorts on."""

    def __init__(self, url: str):
        from deployments.sqldb import SQLDatabase

        self.db = SQLDatabase(url)
        self.url, self.postgres, self._p = url, self.db.postgres, self.db.p
        with self._conn() as c:
            c.execute(_SCHEMA)
            c.execute(_SESSIONS)

    def _conn(self) -> Any:
        return self.db.tx()

    def save(self, trace: Trace) -> None:
        summary = {"run_id": trace.run_id, "owner": trace.owner, "task": trace.task, "agent": trace.agent,
                   "status": trace.status, "stopped_reason": trace.stopped_reason, "answer": trace.answer,
                   "started_at": trace.started_at, "steps": len(trace.steps)}
        import json

        with self._conn() as c:
            c.execute(_UPSERT.format(p=self._p), (trace.run_id, trace.owner, trace.status, trace.started_at,
                                                  time.time(), json.dumps(summary), trace.model_dump_json()))

    def get(self, run_id: str) -> Trace:
        if not _ID.match(run_id or ""):
            raise KeyError(f"invalid run id {run_id!r}")
        with self._conn() as c:
            row = c.execute(f"SELECT doc FROM agent_runs WHERE run_id = {self._p}", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return Trace.model_validate_json(row[0])

    def list(self, limit: int = 50, owner: str | None = None) -> list[dict[str, Any]]:
        import json

        where, args = ("WHERE owner = " + self._p, (owner,)) if owner is not None else ("", ())
        with self._conn() as c:
            rows = c.execute(f"SELECT summary FROM agent_runs {where} ORDER BY updated_at DESC LIMIT {int(limit)}",
                             args).fetchall()
        return [json.loads(r[0]) for r in rows]


    # --- sessions (apps/agent/sessions.py) -------------------------------------------------------------------
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        import json

        with self._conn() as c:
            row = c.execute(f"SELECT owner, doc FROM agent_sessions WHERE session_id = {self._p}",
                            (session_id,)).fetchone()
        return None if row is None else {"owner": row[0], "turns": json.loads(row[1])}

    def put_session(self, session_id: str, owner: str, turns: list[dict[str, Any]]) -> None:
        import json

        with self._conn() as c:
            c.execute(_UPSERT_SESSION.format(p=self._p), (session_id, owner, time.time(), json.dumps(turns)))

    def list_sessions(self, owner: str | None, limit: int = 50) -> list[dict[str, Any]]:
        import json

        where, args = ("WHERE owner = " + self._p, (owner,)) if owner is not None else ("", ())
        with self._conn() as c:
            rows = c.execute(f"SELECT session_id, owner, updated_at, doc FROM agent_sessions {where} "
                             f"ORDER BY updated_at DESC LIMIT {int(limit)}", args).fetchall()
        return [{"session_id": r[0], "owner": r[1], "updated_at": r[2], "turns": len(json.loads(r[3]))}
                for r in rows]


def open_run_store(agent_cfg: Any) -> SQLRunStore:
    """The configured store: the URL in $`agent.store_url_env` (PostgreSQL, or sqlite:///path; a secret, so it
    stays out of the config), else SQLite under agent.data_dir."""
    from cluster.config import expand_path
    from deployments.secrets import read_secret

    url = read_secret(agent_cfg.store_url_env) or f"sqlite:///{expand_path(agent_cfg.data_dir) / 'runs.sqlite3'}"
    return SQLRunStore(url)
