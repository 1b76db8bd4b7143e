"""`conductor up --detach` / status / job submit / down as a newcomer runs them: real subprocesses and a HOME with
nothing in it (no ~/.ray token, no caches), so a missing first-run step can never hide behind an earlier test.

Runs in its own pytest invocation after the main suite (`make test` does this): `conductor down` ends with
`ray stop`, which stops every Ray process of this user, the test session's own cluster included.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.lifecycle
BIN = Path(sys.executable).parent
CONDUCTOR = str(BIN / "conductor")
USER_KEY = "plain-user-key-5b1f0e"  # set in the operator's environment; must reach no Ray process in plain text
HOSTED_KEY = "sk-hosted-secret-7c2d9a"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("life")
    home = tmp / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR", "RAY_"))}
    e.update({
        "HOME": str(home),  # a fresh HOME: no ~/.ray/auth_token, no caches
        "CONDUCTOR__SERVER__PORT": str(free_port()), "CONDUCTOR__RAY__DASHBOARD_PORT": str(free_port()),
        "CONDUCTOR__RAY__METRICS_EXPORT_PORT": str(free_port()),
        "CONDUCTOR__RAG__DATA_DIR": str(tmp / "rag"), "CONDUCTOR__VIDEO__DATA_DIR": str(tmp / "video"),
        "CONDUCTOR__AGENT__DATA_DIR": str(tmp / "agent"), "CONDUCTOR__TRAINING__RUNS_DIR": str(tmp / "runs"),
        # Keys are known but not required (loopback): their plain text must still stay out of every Ray process.
        "CONDUCTOR_API_KEYS": f"alice:{USER_KEY}", "CONDUCTOR__SERVER__REQUIRE_API_KEY": "false",
        "OPENAI_API_KEY": HOSTED_KEY,
    })
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=e, capture_output=True)
    assert not (home / ".ray" / "auth_token").exists()
    r = subprocess.run([CONDUCTOR, "up", "--detach"], env=e, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    e["_UP_OUTPUT"] = r.stdout
    yield e
    subprocess.run([CONDUCTOR, "down"], env=e, capture_output=True, timeout=300)


def _base(env) -> str:
    return f"http://127.0.0.1:{env['CONDUCTOR__SERVER__PORT']}"


def test_a_fresh_home_gets_a_private_ray_token(env):
    token = Path(env["HOME"]) / ".ray" / "auth_token"
    assert token.is_file() and len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_up_prints_urls_and_serves_on_loopback(env):
    port = env["CONDUCTOR__SERVER__PORT"]
    assert f"http://127.0.0.1:{port}/ui/" in env["_UP_OUTPUT"]
    base = _base(env)
    assert httpx.get(base + "/healthz").status_code == 200
    # Loopback without required keys: no key needed, and the OpenAI SDK works unchanged.
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
    token = (Path(env["HOME"]) / ".ray" / "auth_token").read_text().strip()
    assert httpx.get(dash + "/api/version", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_every_port_is_loopback_or_refuses_without_the_token(env):
    """Each listening socket of this user's processes: bound to loopback, or it refuses a request with no token."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    exposed = []
    for line in listening.splitlines():
        local, procs = line.split()[3], line.split(None, 5)[-1] if len(line.split()) > 5 else ""
        host, port = local.rsplit(":", 1)
        if host.strip("[]") in ("127.0.0.1", "::1") or host.startswith("127."):
            continue
        if not any(p in procs for p in ("ray", "gcs_server", "raylet", "python", "conductor")):
            continue  # not ours (sshd, the machine's own services)
        exposed.append(int(port))
    for port in exposed:
        for path in ("/", "/metrics", "/api/version"):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
            except httpx.HTTPError:
                continue  # not HTTP, or refused: gRPC ports that need the token
            assert r.status_code in (401, 403, 404), (port, path, r.status_code, r.text[:200])


def _processes() -> dict[str, tuple[bytes, bytes]]:
    """pid -> (command line, environment) of every process still there to read, as /proc holds them."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found[pid] = (Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes())
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_no_ray_process_holds_a_plaintext_key(env):
    found = []
    for pid, (cmd, environ) in _processes().items():
        if b"ray" not in cmd and b"RAY_" not in environ:
            continue
        if pid == str(os.getpid()):
            continue
        for key in (USER_KEY, HOSTED_KEY):
            if key.encode() in environ or key.encode() in cmd:
                found.append((pid, cmd[:80], key))
    assert not found, found


def test_keyless_loopback_refuses_cross_site_requests(env):
    base = _base(env)
    r = httpx.get(base + "/v1/models", headers={"Host": "attacker.example"})
    assert r.status_code == 403  # DNS rebinding: a foreign Host name
    r = httpx.post(base + "/v1/rag/xsite/upload", params={"filename": "a.md"}, content=b"# hi\n\ntext",
                   headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"})
    assert r.status_code == 403  # a page on another site
    r = httpx.post(base + "/v1/rag/xsite/upload", params={"filename": "a.md"}, content=b"# hi\n\ntext",
                   headers={"Origin": base, "Content-Type": "text/plain"})
    assert r.status_code == 415  # a form type: refused even from the UI's own origin
    assert "xsite" not in httpx.get(base + "/v1/rag/collections").text
    assert httpx.get(base + "/v1/models", headers={"Host": "localhost"}).status_code == 200


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


def test_readme_ray_job_submit_works_as_written(env, tmp_path):
    """README: `RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 ...` (our port here)."""
    (tmp_path / "hi.py").write_text("print('plain ray cli job')\n")
    cmd = (f"RAY_AUTH_MODE=token {BIN / 'ray'} job submit --address "
           f"http://127.0.0.1:{env['CONDUCTOR__RAY__DASHBOARD_PORT']} --working-dir {tmp_path} -- python hi.py")
    r = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "plain ray cli job" in r.stdout


def test_training_runs_beside_the_whole_stack(env, tmp_path):
    """Every app deployed on 2 cores, then a training run as a Ray job: it starts and finishes."""
    r = subprocess.run([CONDUCTOR, "job", "submit", "--working-dir", str(tmp_path), "--", "conductor", "train",
                        "--preset", "debug", "--set", "max_iters=6", "--set", "eval_interval=3", "--json"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert '"iters"' in r.stdout or "checkpoint" in r.stdout, r.stdout[-2000:]


def test_cli_goes_through_the_running_server(env, tmp_path):
    """With the server up, the README's CLI examples work through its API (the server owns the embedded
    stores), after an HTTP client (as the UI does) has used the same store, and without loading a model."""
    base = _base(env)
    doc = tmp_path / "docs" / "router.md"
    doc.parent.mkdir()
    doc.write_text("# Zephyr router\n\n## Reset\n\nHold the blue button for ten seconds to reset the router.\n")
    r = httpx.post(base + "/v1/rag/mydocs/upload", params={"filename": "first.md"}, timeout=300,
                   content=b"# First\n\nThe first document.\n", headers={"content-type": "text/markdown"})
    assert r.status_code == 200, r.text
    run = lambda *a: subprocess.run([CONDUCTOR, *a], env=env, capture_output=True, text=True, timeout=300)
    r = run("rag", "ingest", str(doc.parent), "--collection", "mydocs", "--chunking", "structure")
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([CONDUCTOR, "rag", "search", "how do I reset the device?", "--collection", "mydocs",
                        "--k", "5", "--json"], env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)[0]["source"].endswith("router.md")
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "import time:" in line}
    assert "httpx" in imported  # the import log is there ...
    assert not {"torch", "sentence_transformers", "qdrant_client"} & imported  # ... and no local model or store
    r = run("rag", "collections", "--json")
    assert r.returncode == 0 and "mydocs" in r.stdout, r.stderr[-2000:]
    r = run("video", "list", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already accessed" not in r.stderr
    # A video through the server: the bar follows the server's progress on it (segments), not just the upload.
    from tests.video.media import standard_clip

    clip = standard_clip(tmp_path / "talk.mp4", speech=False)
    r = run("video", "ingest", str(clip.path), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = json.loads(r.stdout)
    assert rec["name"] == "talk.mp4" and rec["segments"] == 3, rec
    assert "video ingest" in r.stderr and "100%" in r.stderr and "talk.mp4: " in r.stderr, r.stderr[-2000:]


def test_the_readme_mcp_example_runs_against_a_keyless_server(env):
    """The README's MCP client block, as written (only the port is this server's): loopback, no keys."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "127.0.0.1:8000/mcp" in b]
    code = block.replace("127.0.0.1:8000", f"127.0.0.1:{env['CONDUCTOR__SERVER__PORT']}")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in env.items() if not k.startswith("_")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "396"


def test_the_readme_gateway_example_runs_against_a_keyless_server(env):
    """The README's virtual-key block, as written (only the port is this server's): a key made, used and listed,
    its spend reported."""
    import re

    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text()
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "conductor keys create" in b]
    script = "set -euo pipefail\n" + block.replace("127.0.0.1:8000", f"127.0.0.1:{env['CONDUCTOR__SERVER__PORT']}")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=repo,
                       env={k: v for k, v in env.items() if not k.startswith("_")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"chat.completion"' in r.stdout and "user=alice" in r.stdout
    assert re.search(r"user=alice\s+model=smollm2\s+requests=1", r.stdout), r.stdout
    assert "no rollouts configured" in r.stdout


def test_serve_carries_requests_over_grpc_that_needs_the_ray_token(env):
    """`ray.serve_transport: grpc` (the default) reaches every Serve process, and the gRPC server each replica
    listens on for it (on every interface: Ray binds it so) refuses a call that carries no Ray token."""
    import grpc
    from ray.serve.generated.serve_pb2 import ASGIRequest
    from ray.serve.generated.serve_pb2_grpc import ASGIServiceStub

    procs = {}  # pid -> process title, of every Serve proxy and replica
    for pid, (cmd, environ) in _processes().items():
        title = cmd.split(b"\0")[0].decode(errors="replace")
        if title.startswith(("ray::ServeReplica", "ray::ProxyActor")):
            procs[pid] = title
            env_vars = environ.split(b"\0")
            assert b"RAY_SERVE_USE_GRPC_BY_DEFAULT=1" in env_vars and b"RAY_SERVE_PROXY_USE_GRPC=1" in env_vars, title
    assert any(t.startswith("ray::ProxyActor") for t in procs.values()), procs
    answers: dict[str, list] = {pid: [] for pid, t in procs.items() if t.startswith("ray::ServeReplica")}
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        pid = next((p for p in answers if f"pid={p}," in line), None)
        if pid is None:
            continue
        port = line.split()[3].rsplit(":", 1)[1]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                ASGIServiceStub(channel).HandleRequest(ASGIRequest(), timeout=10)
                answers[pid].append("OK")
            except grpc.RpcError as e:
                answers[pid].append(e.code().name)
    assert answers and all("OK" not in a for a in answers.values()), answers
    assert all("UNAUTHENTICATED" in a for a in answers.values()), {procs[p]: a for p, a in answers.items()}


def test_down_stops_everything(env):
    r = subprocess.run([CONDUCTOR, "down"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([CONDUCTOR, "status"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "no Conductor cluster" in r.stderr
