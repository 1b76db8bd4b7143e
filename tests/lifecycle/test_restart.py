"""A paused agent run survives a full restart (`conductor down`, `conductor up`) and is approved afterwards.

The agent below may only run Python and must call a tool first (`tool_first`), so the packaged model's first step
is always a sandbox call, which waits for a person's approval: a run that pauses, whatever the model writes.
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests.conftest import free_port
from tests.lifecycle.test_up_down import BIN, CONDUCTOR

pytestmark = pytest.mark.lifecycle
CODER = [{"name": "coder", "instructions": "Solve the task by running Python code.", "tools": ["python"],
          "tool_first": True}]


def _up(env) -> None:
    r = subprocess.run([CONDUCTOR, "up", "--detach"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_a_paused_run_is_approved_after_a_full_restart(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR", "RAY_"))}
    env.update({"HOME": str(home), "CONDUCTOR__SERVER__PORT": str(free_port()),
                "CONDUCTOR__RAY__DASHBOARD_PORT": str(free_port()), "CONDUCTOR__RAY__METRICS_EXPORT_PORT": str(free_port()),
                "CONDUCTOR__RAG__DATA_DIR": str(tmp_path / "rag"), "CONDUCTOR__VIDEO__DATA_DIR": str(tmp_path / "video"),
                "CONDUCTOR__AGENT__DATA_DIR": str(tmp_path / "agent"),
                "CONDUCTOR__TRAINING__RUNS_DIR": str(tmp_path / "runs"), "CONDUCTOR__AGENT__AGENTS": json.dumps(CODER)})
    base = f"http://127.0.0.1:{env['CONDUCTOR__SERVER__PORT']}"
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    try:
        _up(env)
        r = httpx.post(base + "/v1/agent/runs", json={"task": "Use Python to print 6 times 7.", "agent": "coder",
                                                      "stream": False}, timeout=600)
        assert r.status_code == 200, r.text
        paused = r.json()
        assert paused["status"] == "paused" and paused["pending"][0]["tool"] == "python"

        down = subprocess.run([CONDUCTOR, "down"], env=env, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]
        with pytest.raises(httpx.HTTPError):
            httpx.get(base + "/healthz", timeout=3)
        _up(env)

        r = httpx.post(base + f"/v1/agent/runs/{paused['run_id']}/approval", json={"approve": True, "stream": False},
                       timeout=600)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["status"] == "done" and not done["pending"]
        call = next(c for s in done["steps"] for c in s.get("calls", []) if c["tool"] == "python")
        assert call["status"] in ("ok", "error")  # it ran (or the sandbox said why it could not), once approved
        assert any(s["kind"] == "approval" for s in done["steps"])
    finally:
        subprocess.run([CONDUCTOR, "down"], env=env, capture_output=True, timeout=300)
