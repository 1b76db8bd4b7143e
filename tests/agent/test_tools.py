"""Built-in tools for real: the AST calculator, the confined file reader, the sandbox limits, the registry."""

from __future__ import annotations

import os
from pathlib import Path
import time

import pytest
from pydantic import BaseModel

from apps.agent.builtin import builtin_registry
from apps.agent.calculator import CalcError, calculate
from apps.agent.sandbox import SandboxLimits, network_isolation_available, run_python
from apps.agent.tools import Tool, ToolError, ToolRegistry


@pytest.mark.parametrize("expr,value", [("17 * 23 + 5", 396), ("2 ** 10", 1024), ("(1 + 2) * 3 / 2", 4.5),
                                        ("sqrt(16) + abs(-2)", 6), ("10 // 3 + 10 % 3", 4), ("-(3) ^ 2", -9),
                                        ("17 * 23 + 5 = 425", 396), ("round(pi, 2)", 3.14)])
def test_calculator_values(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize("expr,msg", [("__import__('os').system('id')", "unsupported"), ("9 ** 9 ** 9", "exponent"),
                                      ("1 / 0", "division by zero"), ("x + 1", "name 'x'"),
                                      ("factorial(100000)", "factorial"), ("2 +", "not a valid"), ("", "empty"),
                                      ("(lambda: 1)()", "unsupported"), ("'a' * 3", "unsupported"),
                                      ("10 ** 999 * 10 ** 999 * 10 ** 999 * 10 ** 999 * 10 ** 999", "too large")])
def test_calculator_refuses(expr, msg):
    with pytest.raises(CalcError, match=msg):
        calculate(expr)


def test_file_reader_is_confined(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("hello world")
    (root / "bin.dat").write_bytes(b"\x00\x01\x02")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    reg = builtin_registry(None, file_roots=[str(root)])
    assert reg.call("read_file", {"path": "a.txt"}).output == "hello world"
    assert reg.call("read_file", {"path": str(root / "a.txt"), "max_chars": 5}).output.startswith("hello\n[...")
    for path, why in [("../secret.txt", "does not exist"), (str(tmp_path / "secret.txt"), "outside the allowed"),
                      ("link.txt", "does not exist"), ("bin.dat", "binary"), ("/etc/passwd", "outside")]:
        res = reg.call("read_file", {"path": path})
        assert res.error and why in res.error, (path, res.error)
    assert "a.txt" in reg.call("list_files", {"folder": "."}).output
    assert "no folders" in builtin_registry(None, file_roots=[]).call("read_file", {"path": "a"}).error


def test_current_time_and_bad_zone():
    reg = builtin_registry(None)
    assert "UTC" in reg.call("current_time", {}).output
    assert "unknown timezone" in reg.call("current_time", {"timezone": "Mars/Base"}).error


def test_search_tools_degrade_with_a_clear_error():
    def broken(q, c, k):
        raise ToolError("RAG search is unavailable: no collection")

    reg = builtin_registry(None, rag=broken, video=lambda q, c, k: [])
    res = reg.call("search_documents", {"query": "x"})
    assert res.error == "RAG search is unavailable: no collection" and res.attempts == 1
    assert reg.call("search_videos", {"query": "x"}).output == "no results"


def test_registry_validation_and_schema():
    class A(BaseModel):
        n: int

    reg = ToolRegistry([Tool("t", "d", A, lambda a: a.n * 2)])
    assert reg.call("t", {"n": 2}).output == "4"
    assert "invalid arguments for t: n: Input should be a valid integer" in reg.call("t", {"n": "x"}).error
    assert "must be a JSON object" in reg.call("t", "n=2").error
    assert "unknown tool 'u'" in reg.call("u", {}).error
    assert reg.get("t").json_schema()["required"] == ["n"]
    with pytest.raises(ValueError):
        reg.register(Tool("t", "dup", A, lambda a: 1))
    with pytest.raises(ValueError):
        reg.register(Tool("bad name!", "x", A, lambda a: 1))


def test_tool_exception_becomes_error_not_crash():
    class A(BaseModel):
        pass

    reg = ToolRegistry([Tool("boom", "d", A, lambda a: 1 / 0, retries=1, retry_backoff_s=0)])
    res = reg.call("boom", {})
    assert res.error == "ZeroDivisionError: division by zero" and res.attempts == 2


LIMITS = SandboxLimits(wall_s=4, cpu_s=2, memory_mb=128, max_output_bytes=2000)


def test_sandbox_runs_code_in_a_throwaway_dir():
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "conductor-sandbox-*")))
    r = run_python("import os; print(6 * 7); print(os.getcwd()); open('f.txt', 'w').write('x')", LIMITS)
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "42" and r.killed_reason is None
    assert r.stdout.splitlines()[1] == "/box"
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "conductor-sandbox-*"))) == before  # deleted afterwards


def test_the_sandbox_starts_from_a_threaded_server_whatever_its_threads_hold(forked_child_hazard):
    got = []
    assert forked_child_hazard(lambda: got.append(run_python("print(6 * 7)", LIMITS)), seconds=15)
    assert got[0].exit_code == 0 and got[0].stdout.strip() == "42"


@pytest.mark.parametrize("code,reason", [
    ("while True: pass", "cpu_time"),
    ("import time; time.sleep(60)", "wall_time"),
    ("x = bytearray(1 << 30)", "memory"),
    ("print('x' * 10_000_000)", "output"),
    ("import os\nwhile True:\n    os.fork()", "processes"),
])
def test_sandbox_limits(code, reason):
    # For the CPU case the wall limit is generous: on a loaded shared box 1 CPU-second can take many seconds.
    limits = LIMITS.model_copy(update={"cpu_s": 1, "wall_s": 60}) if reason == "cpu_time" else LIMITS
    t0 = time.monotonic()
    r = run_python(code, limits)
    assert r.killed_reason == reason, (r.exit_code, r.stderr[-300:])
    assert time.monotonic() - t0 < limits.wall_s + 3
    assert len(r.stdout) < 2100


@pytest.fixture(scope="module")
def sandbox():
    from apps.agent.sandbox import sandbox_problem

    problem = sandbox_problem()
    if problem:  # the tool then refuses to run at all (tested below); these checks need the real sandbox
        pytest.skip(problem)


def test_without_bubblewrap_the_tool_is_unavailable(monkeypatch):
    from apps.agent import sandbox as sb

    monkeypatch.setattr(sb.shutil, "which", lambda _name: None)
    sb.sandbox_problem.cache_clear()
    try:
        with pytest.raises(sb.SandboxUnavailable, match="bubblewrap is not installed"):
            run_python("print(1)", LIMITS)
    finally:
        monkeypatch.undo()
        sb.sandbox_problem.cache_clear()


@pytest.fixture()
def listener():
    """A real TCP listener and a real Unix socket on the host; the test checks nothing reached them."""
    import socket
    import tempfile

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.settimeout(0.5)
    path = os.path.join(tempfile.mkdtemp(), "s.sock")
    uds = socket.socket(socket.AF_UNIX)
    uds.bind(path)
    uds.listen(4)
    uds.settimeout(0.5)
    yield tcp.getsockname()[1], path, (tcp, uds)
    tcp.close()
    uds.close()


def _nothing_connected(socks) -> bool:
    for s in socks:
        try:
            s.accept()
            return False
        except OSError:
            pass
    return True


def test_sandbox_cannot_reach_the_host(sandbox, listener, tmp_path):
    port, uds_path, socks = listener
    secret = tmp_path / "other-user-upload.md"
    secret.write_text("private")
    checks = {
        "ray token": f"open({str(Path('~/.ray/auth_token').expanduser())!r}).read()",
        "shadow": "open('/etc/shadow').read()",
        "another upload": f"open({str(secret)!r}).read()",
        "ray session": "import os; os.listdir('/tmp/ray')",
        "tcp": f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
        "serve port": "import socket; socket.create_connection(('127.0.0.1', 8000), timeout=2)",
        "unix socket": f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({uds_path!r})",
        "write outside": "open('/usr/evil', 'w').write('x')",
        "write tmp": "open('/tmp/evil', 'w').write('x')",
        "write root": "open('/evil', 'w').write('x')",
    }
    for name, code in checks.items():
        r = run_python(code, LIMITS)
        assert r.exit_code != 0 and ("Error" in r.stderr), (name, r.exit_code, r.stdout, r.stderr[-300:])
    assert _nothing_connected(socks)
    assert not Path("/usr/evil").exists() and not Path("/evil").exists()


def test_a_setsid_child_does_not_outlive_the_run(sandbox, tmp_path):
    import subprocess

    code = ("import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(30)\n"
            "    os._exit(0)\nprint('child', pid)")
    r = run_python(code, LIMITS)
    assert r.exit_code == 0 and r.stdout.startswith("child")
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "time.sleep(30)" not in ps and "/box/main.py" not in ps


def test_sandbox_has_no_network(sandbox):
    r = run_python("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 8000), timeout=2)\n"
                   "    print('online')\nexcept OSError as e:\n    print('offline', e.errno)", LIMITS)
    assert r.stdout.startswith("offline")


def test_python_tool_reports_limits_to_the_model():
    # a wall limit far above the CPU limit: on a loaded machine the loop gets a fraction of a core
    reg = builtin_registry(None, sandbox=LIMITS.model_copy(update={"wall_s": 30, "cpu_s": 1}))
    out = reg.call("python", {"code": "while True: pass"}).output
    assert "cpu_time limit exceeded" in out
    assert reg.get("python").dangerous
