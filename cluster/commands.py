"""`conductor up | down | status | serve-config | job` — the cluster lifecycle from the command line."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from cluster.config import DEFAULT_CONFIG_PATH, ConductorConfig, load_config

config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                              help="Config file (default: cluster/conductor.yaml or $CONDUCTOR_CONFIG).")


def _load(config_path: str | None) -> ConductorConfig:
    try:
        return load_config(config_path)
    except ValueError as e:
        raise click.ClickException(f"invalid config: {e}".replace("\n", " ")) from None


def urls(config: ConductorConfig) -> dict[str, str]:
    from apps.client import serve_base_url

    base = serve_base_url(config)
    return {"api": f"{base}/v1", "ui": f"{base}/ui/", "metrics": f"{base}/metrics",
            "dashboard": f"http://{config.ray.dashboard_host}:{config.ray.dashboard_port}",
            "ray_metrics": f"http://127.0.0.1:{config.ray.metrics_export_port}/metrics"}


def _wait_healthy(config: ConductorConfig, timeout_s: float = 600) -> None:
    import httpx

    from apps.client import serve_base_url

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.get(serve_base_url(config) + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise click.ClickException(f"the gateway did not answer /healthz within {timeout_s:.0f}s; see `conductor status`")


@click.command()
@config_option
@click.option("--detach", is_flag=True, help="Return once everything is up; `conductor down` stops it.")
@click.option("--only", default=None, help="Comma-separated apps to deploy (gateway,rag,agent,video,detective).")
def up(config_path: str | None, detach: bool, only: str | None) -> None:
    """Start the local Ray head, deploy every Serve application, print the URLs."""
    from cluster import runtime
    from cluster.serve_app import deploy

    config = _load(config_path)
    started = False
    if config.ray.address is None and not runtime.cluster_running():
        try:
            runtime.start_head(config)
        except runtime.ClusterError as e:
            raise click.ClickException(str(e)) from None
        started = True
    runtime.connect(config)
    t0 = time.time()
    apps = deploy(config, only=[a.strip() for a in only.split(",")] if only else None)
    _wait_healthy(config)
    click.echo(f"Conductor is up ({', '.join(apps)}) in {time.time() - t0:.0f}s")
    for name, url in urls(config).items():
        click.echo(f"  {name:<12}{url}")
    click.echo(f"  Ray token:  {runtime.TOKEN_PATH} (dashboard and job API need it)")
    if detach:
        return
    click.echo("Press Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    click.echo("Shutting down…")
    _shutdown(stop_ray=started or config.ray.address is None)


def _shutdown(stop_ray: bool) -> None:
    from cluster import runtime

    try:
        from ray import serve

        serve.shutdown()
    except Exception as e:  # the cluster may already be gone
        click.echo(f"serve shutdown: {e}", err=True)
    if stop_ray:
        runtime.stop_head()
    click.echo("Stopped.")


@click.command()
@config_option
def down(config_path: str | None) -> None:
    """Remove every Serve application and stop the local Ray head."""
    from cluster import runtime

    config = _load(config_path)
    if not runtime.cluster_running():
        click.echo("No Conductor cluster is running.")
        return
    runtime.connect(config)
    _shutdown(stop_ray=config.ray.address is None)


def _status(config: ConductorConfig) -> dict[str, Any]:
    from ray import serve

    from cluster.registry import app_registry

    prefixes = {d.name: d.route_prefix for d in app_registry(config)}
    st = serve.status()
    return {
        "applications": {name: {"status": str(a.status), "route_prefix": prefixes.get(name),
                                "deployments": {d: {"status": str(ds.status),
                                                    "replicas": {str(k): v for k, v in ds.replica_states.items()}}
                                                for d, ds in a.deployments.items()}}
                         for name, a in st.applications.items()},
        "urls": urls(config),
    }


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(config_path: str | None, as_json: bool) -> None:
    """Show applications, deployments and replicas. Exit 1 when no cluster is running."""
    from cluster import runtime

    config = _load(config_path)
    if config.ray.address is None and not runtime.cluster_running():
        raise click.ClickException("no Conductor cluster is running (start one with `conductor up`)")
    runtime.connect(config)
    info = _status(config)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for name, app in info["applications"].items():
        click.echo(f"{name:<12}{app['status']:<12}{app['route_prefix'] or ''}")
        for d, ds in app["deployments"].items():
            reps = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in ds["replicas"].items())
            click.echo(f"  {d:<30}{ds['status'].split('.')[-1]:<12}{reps}")
    for name, url in info["urls"].items():
        click.echo(f"{name:<12}{url}")


@click.command("serve-config")
@config_option
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def serve_config(config_path: str | None, out: str | None) -> None:
    """Print the `serve deploy` YAML equivalent to `conductor up` (same builders, same config file)."""
    from cluster.serve_app import serve_config_yaml

    config = _load(config_path)
    text = serve_config_yaml(config, str(Path(config_path or DEFAULT_CONFIG_PATH).resolve()))
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@click.group()
def job() -> None:
    """Submit and follow Ray jobs on the running cluster (the token is sent for you)."""


def _jobs_client(config: ConductorConfig) -> Any:
    from ray.job_submission import JobSubmissionClient

    from cluster import runtime

    runtime.connect(config)  # sets RAY_AUTH_MODE so the client attaches ~/.ray/auth_token
    return JobSubmissionClient(f"http://{config.ray.dashboard_host}:{config.ray.dashboard_port}")


@job.command("submit", context_settings={"ignore_unknown_options": True})
@config_option
@click.option("--working-dir", default=".", show_default=True, help="Uploaded to the cluster for the job.")
@click.option("--wait/--no-wait", default=True, help="Follow the logs until the job ends.")
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def job_submit(config_path: str | None, working_dir: str, wait: bool, entrypoint: tuple[str, ...]) -> None:
    """conductor job submit -- conductor train --preset debug"""
    import shlex

    config = _load(config_path)
    client = _jobs_client(config)
    excludes = [".venv", ".git", "**/__pycache__", "runs", "*.gguf", "*.safetensors"]
    job_id = client.submit_job(entrypoint=shlex.join(entrypoint),
                               runtime_env={"working_dir": working_dir, "excludes": excludes})
    click.echo(f"submitted {job_id}", err=True)
    if not wait:
        click.echo(job_id)
        return
    sys.exit(_follow(client, job_id))


def _follow(client: Any, job_id: str) -> int:
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            click.echo(lines, nl=False)

    asyncio.run(tail())
    st = str(client.get_job_status(job_id))
    click.echo(f"job {job_id}: {st}", err=True)
    return 0 if st.endswith("SUCCEEDED") else 1


@job.command("list")
@config_option
def job_list(config_path: str | None) -> None:
    for j in _jobs_client(_load(config_path)).list_jobs():
        click.echo(f"{j.submission_id}\t{j.status}\t{j.entrypoint}")


@job.command("logs")
@config_option
@click.argument("job_id")
def job_logs(config_path: str | None, job_id: str) -> None:
    click.echo(_jobs_client(_load(config_path)).get_job_logs(job_id), nl=False)
