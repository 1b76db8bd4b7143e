"""Runs that outlive their process: who is running a run, and whether a `running` run was interrupted.

The loop checkpoints a run to the trace store after every completed step (apps/agent/loop.py). A run whose status
is still `running` but whose process is gone (a killed replica, `conductor down`, a crash) was interrupted: it can
be resumed from its last completed step, by any process that shares the store. A run whose process is alive is
refused, so one run never executes in two places.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LIVE: set[str] = set()  # run ids this process is driving now
_LOCK = threading.Lock()


def _here() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def interruption(trace: Any) -> str | None:
    """Why `trace` cannot be resumed as interrupted (None: it can)."""
    if trace.status != "running":
        return f"run {trace.run_id} is {trace.status}, not interrupted"
    runner = trace.state.get("runner") or {}
    with _LOCK:
        if trace.run_id in _LIVE:
            return f"run {trace.run_id} is running in this process"
    if runner.get("host") == socket.gethostname() and runner.get("pid") not in (None, os.getpid()) \
            and _alive(int(runner["pid"])):
        return f"run {trace.run_id} is still running (process {runner['pid']})"
    return None


@contextmanager
def driving(trace: Any) -> Iterator[None]:
    """Mark `trace` as driven by this process for the duration (recorded in its state, so others can tell)."""
    with _LOCK:
        if trace.run_id in _LIVE:
            raise ValueError(f"run {trace.run_id} is already running in this process")
        _LIVE.add(trace.run_id)
    trace.state["runner"] = _here()
    try:
        yield
    finally:
        with _LOCK:
            _LIVE.discard(trace.run_id)


def finish_interrupted(runner: Any, trace: Any) -> str:
    """Complete the step whose tool calls were running when the process died: idempotent calls run again, the
    others are reported as interrupted (never repeated: they may have taken effect). Returns the trace note."""
    from apps.agent import protocol as P

    st = trace.state
    cut = set(st.pop("in_flight", None) or [])
    if not cut or not trace.steps:
        return f"resumed after an interruption, from step {len(trace.steps)}"
    step = trace.steps[-1]
    again, reported = [], []
    for rec in step.calls:
        if rec.id not in cut:
            continue
        tool = runner.registry.get(rec.tool)
        if tool is not None and tool.idempotent:
            again.append((P.Call(rec.id, rec.tool, rec.args), rec))
        else:
            rec.status = "error"
            rec.error = (f"interrupted while it ran; not repeated because {rec.tool} is not idempotent (it may "
                         "or may not have taken effect)")
            reported.append(rec.tool)
    runner._execute(again, trace)
    obs = [(P.Call(r.id, r.tool, None), r.result if r.status == "ok" else (r.error or ""), r.status != "ok")
           for r in step.calls if r.status != "pending"]
    st["messages"] += P.observation_messages(trace.mode, obs, task=trace.task)
    parts = [f"repeated {', '.join(c.tool for c, _ in again)}" if again else "",
             f"reported {', '.join(reported)} as interrupted" if reported else ""]
    return f"resumed after an interruption in step {step.index}: " + "; ".join(p for p in parts if p)
