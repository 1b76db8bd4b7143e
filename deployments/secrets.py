"""Hand each deployment the secrets it uses, and nothing else.

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
