"""The local Ray head: start it bound to loopback with token auth on, find it, stop it.

`ray start` (not an in-process `ray.init()`) so the cluster outlives the CLI in `--detach` mode and other
processes (`conductor train`, `ray job submit`, the dashboard) can join it with address="auto".
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cluster.config import ConductorConfig

TOKEN_PATH = Path("~/.ray/auth_token").expanduser()  # where Ray reads and writes its token (per HOME)


class ClusterError(RuntimeError):
    pass


def ray_bin() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


# Names that look like credentials: never inherited by the head (so by no worker or job).
_SECRET_NAME = re.compile(r"(?i)(api_?key|secret|passw(or)?d|token|credential)")


def secret_env_names(config: ConductorConfig) -> set[str]:
    """Environment variables the config names as holding secrets (user keys, hosted-API and store keys)."""
    names = {config.server.api_keys_env, "CONDUCTOR_API_KEY", "CONDUCTOR_INTERNAL_KEY", config.rag.qdrant_api_key_env,
             config.video.qdrant_api_key_env, config.video.caption_api_key_env, config.rag.reranker_api_key_env}
    names |= {b.api_key_env for m in config.models for b in m.backends}
    if config.reranker is not None:
        names.add(config.reranker.api_key_env)
    return {n for n in names if n}


def head_env(config: ConductorConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The Ray head's environment, which every worker, replica and job inherits: the operator's, minus every
    secret. User keys reach replicas only as hashes (in the config); each hosted-API key only the deployment
    that uses it (deployments/secrets.py)."""
    src = os.environ if environ is None else environ
    drop = secret_env_names(config)
    return {k: v for k, v in src.items()
            if k not in drop and (k.startswith("RAY_") or not _SECRET_NAME.search(k))}


def ensure_token(path: Path | None = None) -> Path:
    """Token auth refuses to start a head without a token: make one on a fresh HOME (0600, written atomically)."""
    path = path or TOKEN_PATH
    if path.is_file() and path.read_text().strip():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _env(config: ConductorConfig) -> dict[str, str]:
    env = head_env(config)
    # Jobs and workers inherit the head's PATH: put this venv first so `conductor ...` entrypoints resolve.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.ray.token_auth:
        env["RAY_AUTH_MODE"] = "token"  # the 2.60 default; set explicitly so an inherited opt-out can't slip in
    if config.ray.address is None:
        # A one-machine cluster on loopback. Ray turns `--node-ip-address=127.0.0.1` into the machine's routable
        # IP, and then its agents, metrics exporters and client server listen there or on 0.0.0.0, some with no
        # auth (the metrics export answered anyone). This switch (Ray's "single-node" mode, meant for laptops)
        # keeps the node IP, and so GCS, raylet, agents and exporters, on 127.0.0.1 (checked by the lifecycle
        # test that lists every listening socket).
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Serve's proxy checks keys on the engine mounts Conductor did not write (vLLM's Ray LLM apps).
    from deployments.mount_guard import CALLBACK, PROXY_CALLBACK_ENV

    env.setdefault(PROXY_CALLBACK_ENV, CALLBACK)
    env.update(config.ray.serve_env())  # Serve's transport, for every process of the cluster
    return env


def cluster_running() -> bool:
    """True when `ray status` can reach a cluster started by `ray start` on this machine."""
    try:
        r = subprocess.run([ray_bin(), "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def start_head(config: ConductorConfig) -> None:
    rc = config.ray
    cmd = [ray_bin(), "start", "--head", "--node-ip-address=127.0.0.1",
           f"--dashboard-host={rc.dashboard_host}", f"--dashboard-port={rc.dashboard_port}",
           f"--metrics-export-port={rc.metrics_export_port}", "--disable-usage-stats"]
    cmd.append(f"--num-cpus={rc.head_cpus()}")
    if rc.token_auth:
        ensure_token()
    if rc.temp_dir:
        cmd.append(f"--temp-dir={rc.temp_dir}")
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(config), timeout=300)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise ClusterError("`ray start` failed: " + " | ".join(tail))
    print(f"Ray head started in {time.time() - t0:.1f}s (dashboard http://{rc.dashboard_host}:{rc.dashboard_port})",
          file=sys.stderr)


def connect(config: ConductorConfig) -> None:
    # Before `import ray`: Ray reads RAY_AUTH_MODE when it loads, and a client that does not know the cluster
    # uses tokens fails to authenticate.
    os.environ.update({k: v for k, v in _env(config).items() if k.startswith(("RAY_", "HF_", "TOKENIZERS"))})
    import ray

    if ray.is_initialized():
        return
    ray.init(address=config.ray.address or "auto", log_to_driver=False, logging_level="WARNING",
             namespace="conductor")


def stop_head() -> None:
    subprocess.run([ray_bin(), "stop", "--force"], capture_output=True, text=True, timeout=120)
