"""One SQL database by URL: a SQLite file (`sqlite:///path`, zero set-up, shared by the replicas of one machine) or
PostgreSQL (`postgresql://...`, shared by replicas on several machines). Stores (agent runs, virtual keys, the
spend log) write portable SQL with `{p}` for the driver's placeholder and run it through `db.tx()`.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any


class SQLDatabase:
    def __init__(self, url: str, connect_timeout_s: float = 10.0):
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.p = "%s" if self.postgres else "?"
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()  # one connection per thread (sqlite3 and psycopg connections are not shared)

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=False, connect_timeout=max(1, int(self.connect_timeout_s)))
        path = self.url.removeprefix("sqlite:///")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer; replicas share the file
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def tx(self) -> "Transaction":
        """`with db.tx() as c:` one transaction, committed on success, rolled back on error. A connection that
        broke (the server restarted) is dropped, so the next transaction reconnects."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return Transaction(self, conn)

    def sql(self, text: str) -> str:
        return text.format(p=self.p)

    def forget_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a connection that already broke
                pass


class Transaction:
    def __init__(self, db: SQLDatabase, conn: Any):
        self.db, self.conn = db, conn

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.conn.commit()
            return
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - the connection itself is what failed
            self.db.forget_connection()
            return
        if getattr(self.conn, "closed", False):  # psycopg: the server went away mid-transaction
            self.db.forget_connection()
