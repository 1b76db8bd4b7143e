"""Structured traces of agent runs, and the store that keeps them (and paused runs) as JSON files.

A run's trace is a list of steps; each step is one model turn (who acted, how big the input was, what came out,
which tools were called with which arguments, their results or errors, timings, tokens) or a loop event
(handoff, approval decision, stop). The same objects are streamed as server-sent events while a run goes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger("conductor.agent")

StopReason = Literal["final_answer", "max_steps", "repeated_call", "budget", "needs_approval", "error", "rejected",
                     "guardrail"]


class CallRecord(BaseModel):
    id: str = Field(description="Call id (the model's tool_call id, or one the loop assigned).")
    tool: str = Field(description="Tool name as the model wrote it.")
    args: Any = Field(None, description="Arguments as the model wrote them.")
    status: Literal["ok", "error", "pending", "rejected", "repeated", "skipped"] = Field("ok")
    result: str | None = Field(None, description="What the tool returned (possibly truncated).")
    error: str | None = Field(None, description="Why the call failed (shown to the model as an observation).")
    attempts: int = Field(0, description="Tries, including retries.")
    duration_ms: float = Field(0.0, description="Tool time including retries.")
    dangerous: bool = Field(False, description="Needed a person's approval.")


class Step(BaseModel):
    index: int = Field(description="Position in the run (0-based, across agents).")
    agent: str = Field(description="Agent that acted in this step.")
    depth: int = Field(0, description="0 for the top-level run; n for agents called as tools.")
    kind: Literal["model", "handoff", "approval", "resume", "stop"] = Field("model")
    input_messages: int = Field(0, description="Messages sent to the model.")
    input_chars: int = Field(0, description="Characters sent to the model.")
    output: str | None = Field(None, description="Raw model output (text content).")
    thought: str | None = Field(None)
    calls: list[CallRecord] = Field(default_factory=list)
    final_answer: str | None = Field(None)
    error: str | None = Field(None, description="Model or protocol error in this step.")
    valid: bool = Field(True, description="Whether the model's output was a well-formed step.")
    model_ms: float = Field(0.0, description="Time waiting for the model.")
    tool_ms: float = Field(0.0, description="Wall time running this step's tools (parallel calls overlap).")
    loop_ms: float = Field(0.0, description="The loop's own time in this step (prompting, parsing, bookkeeping).")
    prompt_tokens: int = Field(0)
    completion_tokens: int = Field(0)
    note: str | None = Field(None, description="Handoff / approval / stop detail.")


class PendingCall(BaseModel):
    id: str
    tool: str
    args: Any
    agent: str
    step: int


class Trace(BaseModel):
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    owner: str = Field("local", description="User of the key that started the run; others get 404.")
    task: str
    agent: str = Field(description="Agent the run started with.")
    model: str | None = None
    mode: str = "react"
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    status: Literal["running", "paused", "done"] = "running"
    stopped_reason: StopReason | None = None
    answer: str | None = None
    steps: list[Step] = Field(default_factory=list)
    pending: list[PendingCall] = Field(default_factory=list, description="Calls waiting for approval.")
    totals: dict[str, float] = Field(default_factory=dict)
    # Everything needed to resume a paused run (messages, counters, the current agent). Not streamed.
    state: dict[str, Any] = Field(default_factory=dict, exclude=False)

    def public(self) -> dict[str, Any]:
        return self.model_dump(exclude={"state"})


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TraceStore:
    """One JSON file per run under `<data_dir>/traces`; writes are atomic (temp file + rename)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(os.path.expanduser(str(data_dir))) / "traces"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str) -> Path:
        if not _ID.match(run_id or ""):
            raise KeyError(f"invalid run id {run_id!r}")
        return self.dir / f"{run_id}.json"

    def save(self, trace: Trace) -> None:
        from cluster.files import atomic_write

        atomic_write(self._path(trace.run_id), trace.model_dump_json())

    def get(self, run_id: str) -> Trace:
        path = self._path(run_id)
        if not path.is_file():
            raise KeyError(f"no run {run_id!r}")
        return Trace.model_validate_json(path.read_text())

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        path = self.dir.parent / "sessions" / f"{session_id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put_session(self, session_id: str, owner: str, turns: list[dict[str, Any]]) -> None:
        from cluster.files import atomic_write

        (self.dir.parent / "sessions").mkdir(exist_ok=True)
        atomic_write(self.dir.parent / "sessions" / f"{session_id}.json", json.dumps({"owner": owner, "turns": turns}))

    def list_sessions(self, owner: str | None, limit: int = 50) -> list[dict[str, Any]]:
        files = sorted((self.dir.parent / "sessions").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        out = []
        for f in files:
            doc = json.loads(f.read_text())
            if owner is None or doc["owner"] == owner:
                out.append({"session_id": f.stem, "owner": doc["owner"], "updated_at": f.stat().st_mtime,
                            "turns": len(doc["turns"])})
        return out[:limit]

    def list(self, limit: int = 50, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest runs, only `owner`'s when given (None: everyone's, for an admin or the local CLI)."""
        files = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        out = []
        for f in files:
            if len(out) >= limit:
                break
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                log.warning("skipping unreadable trace %s", f.name)
                continue
            if owner is not None and d.get("owner", "local") != owner:
                continue
            out.append({k: d.get(k) for k in ("run_id", "owner", "task", "agent", "status", "stopped_reason",
                                              "answer", "started_at")} | {"steps": len(d.get("steps", []))})
        return out
