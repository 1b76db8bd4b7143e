"""Run untrusted Python in a separate process with hard limits.

What is enforced, and how:
- CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), file size (RLIMIT_FSIZE: stdout/stderr go to files, so
  this caps output too), open files, and processes (RLIMIT_NPROC, which only binds a non-root user: when we run as
  root the child drops to `nobody`, so a fork bomb hits the limit instead of the machine).
- Wall time: the child runs in its own session; on timeout the whole process group is SIGKILLed.
- Network: the child enters a new, empty network namespace (unshare(CLONE_NEWNET)) before exec: as root
  directly, otherwise through an unprivileged user namespace when the kernel allows it. When neither works the
  sandbox refuses to run unless `allow_network=True` was configured (then the result says it was not isolated).
- A throwaway working directory (deleted afterwards), an empty environment, `python -I` (no user site, no
  PYTHON* variables).
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from cluster.config import AgentSandboxConfig

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NOBODY_UID = 65534


# The limits live in the config so they are documented and validated with the rest of it.
SandboxLimits = AgentSandboxConfig


@dataclass
class SandboxResult:
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    killed_reason: str | None  # "wall_time" | "cpu_time" | "memory" | "output" | None
    network_isolated: bool

    def render(self) -> str:
        lines = [f"exit code: {self.exit_code}"]
        if self.killed_reason:
            lines.append(f"stopped: {self.killed_reason} limit exceeded")
        if self.stdout:
            lines.append("stdout:\n" + self.stdout)
        if self.stderr:
            lines.append("stderr:\n" + self.stderr)
        if not self.network_isolated:
            lines.append("(note: network was not isolated on this host)")
        return "\n".join(lines)


def _unshare(flags: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(flags) == 0


def network_isolation_available() -> bool:
    """Probe once in a throwaway child: can a process here enter a new network namespace?"""
    code = "import ctypes,sys; l=ctypes.CDLL(None); sys.exit(0 if l.unshare(%d)==0 or l.unshare(%d)==0 else 1)" % (
        CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET)
    try:
        return subprocess.run([sys.executable, "-I", "-c", code], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _preexec(limits: SandboxLimits, drop_to_nobody: bool, marker: str):  # runs in the child, before exec
    def fn() -> None:
        isolated = _unshare(CLONE_NEWNET) or _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if not isolated:
            if not limits.allow_network:
                os._exit(97)  # the parent reports "network isolation unavailable"
            open(marker, "w").close()  # tells the parent the run was not isolated
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_to_nobody:
            os.setgroups([])
            os.setgid(NOBODY_UID)
            os.setuid(NOBODY_UID)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

    return fn


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user could exec `path` (root's os.access always says yes, so check the bits)."""
    real = os.path.realpath(path)
    if not os.path.isfile(real) or not os.stat(real).st_mode & 0o001:
        return False
    parent = os.path.dirname(real)
    while parent and parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


def sandbox_python(drop_to_nobody: bool) -> str:
    """The interpreter the child runs: ours, or (when the child runs as `nobody` and ours lives somewhere it
    cannot reach, e.g. under /root) the system python3. Sandboxed code gets the standard library only."""
    if not drop_to_nobody:
        return sys.executable
    for cand in (sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3", "/usr/local/bin/python3"):
        if cand and _world_executable(cand):
            return cand
    raise RuntimeError("no Python interpreter that an unprivileged user can run was found for the sandbox")


def _read_capped(path: str, cap: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    over = len(data) > cap
    text = data[:cap].decode("utf-8", errors="replace")
    return (text + "\n[... output truncated]" if over else text), over


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` as a script in a fresh sandboxed interpreter and return what happened (never raises on the
    code's own failures; raises RuntimeError when the sandbox itself cannot be set up safely)."""
    limits = limits or SandboxLimits()
    root = os.geteuid() == 0
    workdir = tempfile.mkdtemp(prefix="conductor-sandbox-")
    try:
        script = os.path.join(workdir, "main.py")
        with open(script, "w") as f:
            f.write(code)
        out_path, err_path = os.path.join(workdir, ".stdout"), os.path.join(workdir, ".stderr")
        if root:
            os.chown(workdir, NOBODY_UID, NOBODY_UID)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sandbox_python(root), "-I", "-X", "utf8", script], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True, preexec_fn=_preexec(limits, root, os.path.join(workdir, ".no-netns")), close_fds=True)
            killed = None
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                killed = "wall_time"
            _kill_group(proc)  # also reaps anything the code forked into the group
        duration = time.monotonic() - start
        if proc.returncode == 97 and not killed:
            raise RuntimeError("network isolation is unavailable on this host (no network namespaces); "
                               "set agent.options.sandbox.allow_network=true to run without it")
        stdout, over_out = _read_capped(out_path, limits.max_output_bytes)
        stderr, over_err = _read_capped(err_path, limits.max_output_bytes)
        rc = proc.returncode
        if killed is None:
            if rc == -signal.SIGXCPU or rc == -signal.SIGKILL and duration < limits.wall_s:
                killed = "cpu_time"
            elif rc == -signal.SIGXFSZ:
                killed = "output"
            elif "MemoryError" in stderr:
                killed = "memory"
            elif "BlockingIOError" in stderr and "fork" in stderr:
                killed = "processes"
            elif over_out or over_err:
                killed = "output"
        return SandboxResult(rc, stdout, stderr, round(duration, 3), killed,
                             network_isolated=not os.path.exists(os.path.join(workdir, ".no-netns")))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
