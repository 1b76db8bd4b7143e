"""Start a throwaway PostgreSQL server (Debian's postgresql) on a free loopback port, for tests and benchmarks.

Run as the `postgres` user when we are root (initdb refuses root), in a folder outside pytest's 0700 tmp so that
user can reach it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres() -> tuple[str, Callable[[], None]] | None:
    """(URL, stop) of a fresh server, or None when PostgreSQL is not installed."""
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        return None
    bindir = Path(os.path.realpath(initdb)).parent
    root = Path(tempfile.mkdtemp(prefix="conductor-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(root, 0o777)
    port = _free_port()
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "conductor"],
                   check=True, capture_output=True)
    proc = subprocess.Popen(as_user + [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                                       "-c", "listen_addresses=127.0.0.1", "-k", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql://conductor@127.0.0.1:{port}/postgres"
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("PostgreSQL did not start") from None
            time.sleep(0.3)

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    return url, stop
