"""The client side of a Video-tab upload: one file sent to `/v1/video/ingest` under a job id, and the server's
progress on it polled while it is analysed. The Video tab and `conductor video ingest` (with a server) use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

PREFIX = "/v1/video"


def ingest_file(client, path: str, job: str | None = None) -> dict[str, Any]:
    p = Path(path)
    with p.open("rb") as f:  # streamed from disk in 64 KiB reads, with its Content-Length: never whole in memory
        return client.request("POST", f"{PREFIX}/ingest", params={"name": p.name, **({"job": job} if job else {})},
                              content=f, headers={"content-type": "application/octet-stream"})


def ingest_with_progress(client, path: str, report: Callable[[float, str], Any],
                         every_s: float = 0.5) -> dict[str, Any]:
    """Upload and ingest in a thread while polling `GET /ingest/{job}`; `report(fraction, text)` on each change.
    Decoding is the first 10%, segments the next 85%, indexing the rest."""
    import contextvars
    import threading
    import uuid

    job, box = uuid.uuid4().hex, {}

    def run() -> None:
        try:
            box["result"] = ingest_file(client, path, job)
        except Exception as e:  # re-raised in the caller's thread
            box["error"] = e

    # the caller's context goes along: it says which signed-in user the upload is for (apps/client.py ACTING_FOR)
    t = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    t.start()
    last = None
    while t.is_alive():
        t.join(every_s)
        try:
            state = client.request("GET", f"{PREFIX}/ingest/{job}")
        except Exception:  # not started yet (404 until the upload is claimed), or already finished
            continue
        if state != last:
            last = state
            done, total = state["done"], state["total"]
            frac = 0.02 if state["stage"] == "probing" else 0.1 if not total else 0.1 + 0.85 * done / total
            report(min(frac, 0.95), f"{state['stage']}" + (f": {done} of {total}" if total else ""))
    if "error" in box:
        raise box["error"]
    return box["result"]
