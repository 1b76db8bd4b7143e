"""Start a child process under resource limits without running Python between fork and exec.

`subprocess`'s `preexec_fn` runs Python in the forked child of a threaded server, and before it CPython tears down
the state of every other thread: a thread-local object whose destructor waits on a lock or a condition variable
that one of those threads owned waits forever, so the child never reaches exec and the caller blocks with it. Seen
in the video service: PyAV's scaler context, kept in a thread-local, was freed in the forked child of a probe and
waited for its worker threads' condition variable (the upload hung; `tests/video/test_probe.py` reproduces it).

Here the child is a fresh interpreter instead (`python -I -S -c LAUNCHER`): one thread, nothing to tear down. It
sets the limits on itself, drops to another user if asked, and execs the real command, which inherits all of it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

# Exit status of the launcher when it cannot apply what it was asked to (a limit refused, a user it cannot become).
LAUNCH_FAILED = 97

# Runs in the fresh interpreter: argv[1] is the JSON spec, argv[2:] the command. stdlib only (-S: no site-packages).
_LAUNCHER = """
import json, os, resource, sys
spec, prog = json.loads(sys.argv[1]), sys.argv[2]
if os.sep not in prog:  # found on PATH now: once it runs as another user this interpreter may not import a thing
    found = [os.path.join(d, prog) for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    prog = next((f for f in found if os.access(f, os.X_OK)), prog)
try:
    for name, (soft, hard) in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if spec["uid"] is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    for name, (soft, hard) in spec["after_user"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
except (OSError, ValueError) as e:
    sys.stderr.write("launcher: " + str(e) + "\\n")
    os._exit(EXIT)
os.execv(prog, sys.argv[2:])
""".replace("EXIT", str(LAUNCH_FAILED))


@dataclass
class Limits:
    """rlimits by `resource` name (e.g. "RLIMIT_AS") -> (soft, hard); `after_user` ones are set once the process
    runs as `uid` (RLIMIT_NPROC counts the processes of the user it ends up as)."""

    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    after_user: dict[str, tuple[int, int]] = field(default_factory=dict)


def limited_argv(command: list[str], limits: Limits) -> list[str]:
    """`command`, run under `limits`: pass the result to subprocess in place of `command`, with no preexec_fn."""
    spec = {"rlimits": limits.rlimits, "uid": limits.uid, "gid": limits.gid if limits.gid is not None else limits.uid,
            "after_user": limits.after_user}
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec), *command]
