"""`conductor up --detach` / status / job submit / down as a user runs them, in real subprocesses.

Runs in its own pytest invocation after the main suite (`make test` does this): `conductor down` ends with
`ray stop`, which stops every Ray process of this user, the test session's own cluster included.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.lifecycle
CONDUCTOR = str(Path(sys.executable).with_name("conductor"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("life")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR", "RAY_ADDRESS"))}
    e.update({
        "CONDUCTOR__SERVER__PORT": str(_port()), "CONDUCTOR__RAY__DASHBOARD_PORT": str(_port()),
        "CONDUCTOR__RAY__METRICS_EXPORT_PORT": str(_port()), "CONDUCTOR__RAY__NUM_CPUS": "4",
        "CONDUCTOR__RAG__DATA_DIR": str(tmp / "rag"), "CONDUCTOR__VIDEO__DATA_DIR": str(tmp / "video"),
        "CONDUCTOR__AGENT__DATA_DIR": str(tmp / "agent"), "CONDUCTOR__TRAINING__RUNS_DIR": str(tmp / "runs"),
    })
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], env=e, capture_output=True)
    r = subprocess.run([CONDUCTOR, "up", "--detach"], env=e, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    e["_UP_OUTPUT"] = r.stdout
    yield e
    subprocess.run([CONDUCTOR, "down"], env=e, capture_output=True, timeout=300)


def test_up_prints_urls_and_serves_on_loopback(env):
    port = env["CONDUCTOR__SERVER__PORT"]
    assert f"http://127.0.0.1:{port}/ui/" in env["_UP_OUTPUT"]
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/healthz").status_code == 200
    # Loopback without user keys: no key needed, and the OpenAI SDK works unchanged.
    import openai

    out = openai.OpenAI(base_url=base + "/v1", api_key="unused").chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
    assert out.choices[0].message.content
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    binds = [l.split()[3] for l in listening.splitlines() if l.split()[3].endswith(f":{port}")]
    assert binds and all(b.startswith("127.0.0.1:") for b in binds), binds


def test_dashboard_requires_the_ray_token(env):
    dash = f"http://127.0.0.1:{env['CONDUCTOR__RAY__DASHBOARD_PORT']}"
    assert httpx.get(dash + "/api/version").status_code == 401
    token = Path("~/.ray/auth_token").expanduser().read_text().strip()
    assert httpx.get(dash + "/api/version", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_status_json_lists_running_apps(env):
    r = subprocess.run([CONDUCTOR, "status", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout)
    assert info["applications"]["gateway"]["status"].endswith("RUNNING")


def test_job_submit_uses_the_token(env, tmp_path):
    (tmp_path / "hello.py").write_text("print('hello from a ray job')\n")
    r = subprocess.run([CONDUCTOR, "job", "submit", "--working-dir", str(tmp_path), "--", "python", "hello.py"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "hello from a ray job" in r.stdout


def test_down_stops_everything(env):
    r = subprocess.run([CONDUCTOR, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([CONDUCTOR, "status"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "no Conductor cluster" in r.stderr
