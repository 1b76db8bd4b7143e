"""Hand each deployment the secrets it uses, and nothing else; read a secret; give a child process none.

The Ray head starts without any credential in its environment (cluster/runtime.head_env), so a hosted-API key
reaches only the replicas of the deployment whose config names it, through that deployment's runtime_env. This
runs where the operator's environment is: the process that builds the applications (`conductor up`).
"""

from __future__ import annotations

import os
from typing import Any


def with_secrets(options: dict[str, Any], names: list[str | None], environ: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """`options` (Serve deployment options) with the named env vars, where set, added to its runtime_env."""
    env = os.environ if environ is None else environ
    found = {n: env[n] for n in names if n and env.get(n)}
    if not found:
        return options
    actor = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **found}
    actor["runtime_env"] = runtime_env
    return {**options, "ray_actor_options": actor}


def read_secret(name: str | None) -> str | None:
    """The value of the environment variable a config names for a credential (None when unnamed or unset).
    The one place code below the CLI reads a secret; the value is never logged or put in an error."""
    return (os.environ.get(name) or None) if name else None


# What a child process that handles untrusted input needs from our environment; credentials are never among them.
_CHILD_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "VIRTUAL_ENV", "OMP_NUM_THREADS",
              "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env(**extra: str) -> dict[str, str]:
    """A minimal environment for a sandboxed child (locale, paths, thread caps) plus `extra`."""
    return {**{k: os.environ[k] for k in _CHILD_ENV if k in os.environ}, **extra}
