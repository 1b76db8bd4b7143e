"""deployments/limited_exec.py: limits applied by a fresh launcher interpreter, never by Python in a forked child."""

from __future__ import annotations

import resource
import subprocess
import sys

from deployments.limited_exec import LAUNCH_FAILED, Limits, limited_argv

SHOW = "import resource as r; print(r.getrlimit(r.RLIMIT_AS), r.getrlimit(r.RLIMIT_NOFILE), r.getrlimit(r.RLIMIT_CPU))"


def test_the_command_runs_under_the_limits():
    mem = 512 * 1024 * 1024
    limits = Limits({"RLIMIT_AS": (mem, mem), "RLIMIT_NOFILE": (32, 32), "RLIMIT_CPU": (5, 6)})
    out = subprocess.run(limited_argv([sys.executable, "-c", SHOW], limits), capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == f"({mem}, {mem}) (32, 32) (5, 6)"
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (32, 32)  # the caller keeps its own


def test_a_limit_it_cannot_apply_stops_before_the_command():
    r = subprocess.run(limited_argv([sys.executable, "-c", "print('ran')"], Limits({"RLIMIT_NOFILE": (64, 32)})),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == LAUNCH_FAILED and "ran" not in r.stdout and "launcher:" in r.stderr


def test_a_threaded_caller_whose_thread_locals_hang_a_forked_child_still_gets_its_child(forked_child_hazard):
    """The hazard fixture hangs any child that runs Python between fork and exec (subprocess's preexec_fn did,
    and hung video uploads); the launcher's child does not."""
    argv = limited_argv([sys.executable, "-c", "print('ran')"], Limits({"RLIMIT_CORE": (0, 0)}))
    got = []
    assert forked_child_hazard(lambda: got.append(subprocess.run(argv, capture_output=True, text=True, timeout=60)),
                               seconds=15)
    assert got[0].stdout.strip() == "ran"
    # The hazard is real: the same call with a preexec_fn stalls before exec.
    assert not forked_child_hazard(lambda: subprocess.run([sys.executable, "-c", "pass"], timeout=60,
                                                          preexec_fn=lambda: None), seconds=5)
