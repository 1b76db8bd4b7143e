"""Run untrusted Python in real isolation: bubblewrap namespaces plus hard resource limits.

What the code sees (bubblewrap, Debian's `bubblewrap` package):
- New user, mount, pid, ipc, uts, cgroup and network namespaces (`--unshare-all`): no network at all (its own
  empty loopback: nothing of the host's, 127.0.0.1:8000 included, and no abstract Unix sockets), no other process.
- A read-only root made of the interpreter and its standard library only (`/usr`, or the interpreter's own prefix),
  `/proc` of its own pid namespace, a minimal `/dev`, and one throwaway work dir at /box (deleted afterwards):
  not the service user's home (the Ray token, uploads, the venv), not /etc, not /tmp or Ray's session dir.
- no_new_privs, every capability dropped, a new terminal session, an empty environment, `python -I`.
- When the run ends or its wall time passes, the pid namespace's init dies and the kernel kills every process in
  it, `setsid` children included.

Limits (set before bubblewrap starts, inherited by everything inside): CPU seconds (RLIMIT_CPU), address space
(RLIMIT_AS), file size (RLIMIT_FSIZE: stdout/stderr go to files, so this caps output too), open files, and
processes (RLIMIT_NPROC, counted for the unprivileged user the sandbox runs as: as root it drops to `nobody`).

Where bubblewrap cannot run (not installed, no user namespaces) the tool is unavailable with a clear message;
there is no weaker fallback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

from cluster.config import AgentSandboxConfig
from deployments.limited_exec import LAUNCH_FAILED, Limits, limited_argv

NOBODY_UID = 65534
BOX = "/box"  # where the throwaway work dir appears inside the sandbox
UNAVAILABLE = LAUNCH_FAILED  # the launcher could not apply the limits or drop to nobody

# The limits live in the config so they are documented and validated with the rest of it.
SandboxLimits = AgentSandboxConfig


class SandboxUnavailable(RuntimeError):
    """The isolation this sandbox promises cannot be set up on this host."""


@dataclass
class SandboxResult:
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    killed_reason: str | None  # "wall_time" | "cpu_time" | "memory" | "output" | "processes" | None

    def render(self) -> str:
        lines = [f"exit code: {self.exit_code}"]
        if self.killed_reason:
            lines.append(f"stopped: {self.killed_reason} limit exceeded")
        if self.stdout:
            lines.append("stdout:\n" + self.stdout)
        if self.stderr:
            lines.append("stderr:\n" + self.stderr)
        return "\n".join(lines)


def _interpreter() -> tuple[str, list[str]]:
    """(python path, read-only binds besides /usr) for the sandbox: the system python3 when there is one,
    else our base interpreter with only its own prefix bound. Sandboxed code gets the standard library only."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.isfile(cand):
            return cand, ([] if cand.startswith("/usr/") else [os.path.dirname(os.path.dirname(cand))])
    base = getattr(sys, "_base_executable", sys.executable)
    return base, [sys.base_prefix]


def _user_processes(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                n += os.stat(f"/proc/{pid}").st_uid == uid
            except OSError:
                continue
    return n


def _limits(limits: SandboxLimits, as_nobody: bool, nproc: int) -> Limits:
    """What bwrap and everything under it runs with, set before bwrap starts (deployments/limited_exec.py)."""
    mem = limits.memory_mb * 1024 * 1024
    return Limits(
        rlimits={"RLIMIT_AS": (mem, mem), "RLIMIT_CPU": (limits.cpu_s, limits.cpu_s + 1),
                 "RLIMIT_FSIZE": (limits.max_file_bytes, limits.max_file_bytes), "RLIMIT_NOFILE": (64, 64),
                 "RLIMIT_CORE": (0, 0)},
        uid=NOBODY_UID if as_nobody else None,  # root ignores RLIMIT_NPROC: run as a user it binds
        after_user={"RLIMIT_NPROC": (nproc, nproc)})


def _bwrap_argv(workdir: str, python: str, extra_ro: list[str], script: str) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin"]
    for path in extra_ro:
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--bind", workdir, BOX, "--chdir", BOX,
             "--remount-ro", "/", "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", BOX, "--setenv", "TMPDIR", BOX,
             "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
             python, "-I", "-X", "utf8", f"{BOX}/{os.path.basename(script)}"]
    return argv


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why the sandbox cannot run here, or None. Probed once: a tiny program inside the real sandbox."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian package `bubblewrap`; scripts/system-deps.sh installs it)"
    try:
        r = run_python("print('ok')", SandboxLimits(wall_s=20, cpu_s=10, memory_mb=256), _probe=True)
    except SandboxUnavailable as e:
        return str(e)
    if r.exit_code != 0 or r.stdout.strip() != "ok":
        return f"bubblewrap could not start a sandbox here: {r.stderr.strip()[-300:] or r.exit_code}"
    return None


def sandbox_available() -> bool:
    return sandbox_problem() is None


network_isolation_available = sandbox_available  # the name older callers use


def _read_capped(path: str, cap: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    over = len(data) > cap
    text = data[:cap].decode("utf-8", errors="replace")
    return (text + "\n[... output truncated]" if over else text), over


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap dies; its pid namespace (every process inside) goes with it
    except ProcessLookupError:
        pass
    proc.wait()


def _killed_reason(rc: int | None, stderr: str, duration: float, limits: SandboxLimits, over: bool) -> str | None:
    if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and duration < limits.wall_s) or rc == 128 + signal.SIGXCPU:
        return "cpu_time"
    if rc in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return "output"
    if "MemoryError" in stderr:
        return "memory"
    if ("BlockingIOError" in stderr or "Resource temporarily unavailable" in stderr) and "fork" in stderr:
        return "processes"
    return "output" if over else None


def run_python(code: str, limits: SandboxLimits | None = None, _probe: bool = False) -> SandboxResult:
    """Run `code` as a script in a fresh sandboxed interpreter and return what happened (never raises on the
    code's own failures; raises SandboxUnavailable when the sandbox itself cannot be set up)."""
    limits = limits or SandboxLimits()
    if not _probe and (problem := sandbox_problem()):
        raise SandboxUnavailable(f"the python sandbox is unavailable: {problem}")
    as_nobody = os.geteuid() == 0
    # RLIMIT_NPROC counts every process of the user (other sandboxes still exiting, Ray's workers when not root),
    # so the budget is what it has now plus the run's own allowance.
    nproc = _user_processes(NOBODY_UID if as_nobody else os.geteuid()) + limits.max_processes
    python, extra_ro = _interpreter()
    workdir = tempfile.mkdtemp(prefix="conductor-sandbox-")
    try:
        script = os.path.join(workdir, "main.py")
        with open(script, "w") as f:
            f.write(code)
        out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
        if as_nobody:
            os.chown(workdir, NOBODY_UID, NOBODY_UID)
            os.chown(script, NOBODY_UID, NOBODY_UID)
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            argv = limited_argv(_bwrap_argv(workdir, python, extra_ro, script), _limits(limits, as_nobody, nproc))
            proc = subprocess.Popen(argv, cwd="/", env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
            killed = None
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                killed = "wall_time"
            _kill_group(proc)
        duration = time.monotonic() - start
        if proc.returncode == UNAVAILABLE and not killed:
            raise SandboxUnavailable("the python sandbox could not drop to an unprivileged user")
        stdout, over_out = _read_capped(out_path, limits.max_output_bytes)
        stderr, over_err = _read_capped(err_path, limits.max_output_bytes)
        if "bwrap:" in stderr and proc.returncode == 1 and not stdout:
            raise SandboxUnavailable(f"bubblewrap failed: {stderr.strip().splitlines()[-1][:300]}")
        killed = killed or _killed_reason(proc.returncode, stderr, duration, limits, over_out or over_err)
        return SandboxResult(proc.returncode, stdout, stderr, round(duration, 3), killed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
