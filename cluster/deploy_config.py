"""`conductor deploy-config kuberay | ray-up`: the cluster files for running conductor.yaml's stack elsewhere.

- `kuberay`: a KubeRay RayService (ray.io/v1). Its serveConfigV2 deploys the same applications `conductor up` does
  with the config inlined (the builders take it as `args.config`), a head group that runs no replicas of its own
  work beyond Serve's proxy and controller, and a worker group sized from the deployments' CPU and GPU requests. The
  Ray token and the API keys come from a Kubernetes Secret (named, never written here).
- `ray-up`: a `ray up` cluster file (validated against the schema inside the installed `ray` package): head and
  worker node types from the same requests, the package installed by setup commands, the local token mounted.
"""

from __future__ import annotations

import math
from typing import Any

import click
import yaml

from cluster.commands import config_option, _load
from cluster.config import ConductorConfig

SECRET = "conductor-secrets"  # kubectl create secret generic conductor-secrets --from-literal=...


class _Dumper(yaml.SafeDumper):
    """Readable YAML for people to review: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


def _ray_version() -> str:
    import ray

    return ray.__version__


def resource_totals(config: ConductorConfig) -> tuple[float, float]:
    """(CPUs, GPUs) the configured deployments ask for with the replicas they start (autoscaling adds to it)."""
    from cluster.registry import app_registry

    every = [config.embeddings.resources]
    every += [b.resources for m in config.models for b in m.backends if b.engine not in ("openai",)]
    for decl in app_registry(config):
        section = getattr(config, decl.section, None) if decl.section else None
        res = getattr(section, "resources", None)
        if decl.enabled(config) and res is not None:
            every.append(res)
    cpus = config.server.gateway.num_cpus + sum(r.num_cpus * r.replicas_at_start for r in every)
    gpus = config.server.gateway.num_gpus + sum(r.num_gpus * r.replicas_at_start for r in every)
    return cpus, gpus


def serve_config(config: ConductorConfig) -> dict[str, Any]:
    """Serve's config for the cluster: every enabled app, built from the inlined config (no file in the image)."""
    from cluster.serve_app import enabled_apps

    data = config.model_dump(mode="json", exclude={"server": {"api_key_hashes", "internal_api_key"}})
    data["server"]["host"] = "0.0.0.0"  # inside a pod: the Service in front decides who reaches it
    return {"proxy_location": "HeadOnly", "http_options": {"host": "0.0.0.0", "port": config.server.port},
            "applications": [{"name": s.name, "route_prefix": s.route_prefix,
                              "import_path": "cluster.serve_app:build_named_app",
                              "args": {"app": s.name, "config": data}} for s in enabled_apps(config)]}


def _container(config: ConductorConfig, image: str, cpu: float, memory_gi: int, gpus: float,
               head: bool) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": str(max(1, math.ceil(cpu))), "memory": f"{memory_gi}Gi"}
    limits = dict(requests)
    if gpus:
        limits["nvidia.com/gpu"] = str(math.ceil(gpus))
    env = [{"name": "RAY_AUTH_MODE", "value": "token"},
           {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "ray-auth-token"}}}]
    env += [{"name": k, "value": v} for k, v in config.ray.serve_env().items()]  # on every node, as Serve reads them
    if head:  # the Serve builders run on the head: they read the users' keys there (hashed before deploy)
        env.append({"name": "CONDUCTOR_API_KEYS",
                    "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "api-keys", "optional": True}}})
    ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 8000, "name": "serve"}] if head else []
    return {"name": "ray-head" if head else "ray-worker", "image": image, "env": env,
            "resources": {"requests": requests, "limits": limits}, **({"ports": ports} if ports else {})}


def kuberay_manifest(config: ConductorConfig, image: str, name: str = "conductor", max_workers: int = 4,
                     worker_cpus: int = 4, worker_memory_gi: int = 16) -> dict[str, Any]:
    cpus, gpus = resource_totals(config)
    workers = max(1, math.ceil(cpus / worker_cpus))
    worker = {"groupName": "gpu-workers" if gpus else "cpu-workers", "replicas": workers, "minReplicas": workers,
              "maxReplicas": max(workers, max_workers),
              "rayStartParams": {"num-cpus": str(worker_cpus), **({"num-gpus": str(math.ceil(gpus))} if gpus else {})},
              "template": {"spec": {"containers": [_container(config, image, worker_cpus, worker_memory_gi, gpus,
                                                                  False)]}}}
    head = {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "1"},
            "template": {"spec": {"containers": [_container(config, image, 2, 8, 0, True)]}}}
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
            "spec": {"serveConfigV2": dump(serve_config(config)),
                     "rayClusterConfig": {"rayVersion": _ray_version(), "enableInTreeAutoscaling": True,
                                          "headGroupSpec": head, "workerGroupSpecs": [worker]}}}


def ray_up_config(config: ConductorConfig, name: str = "conductor", region: str = "us-west-2",
                  package: str = "conductor", max_workers: int = 4) -> dict[str, Any]:
    cpus, gpus = resource_totals(config)
    worker_type = "g5.xlarge" if gpus else "m5.2xlarge"
    worker_resources: dict[str, Any] = {"CPU": 4 if gpus else 8, **({"GPU": 1} if gpus else {})}
    start = " ".join(["RAY_AUTH_MODE=token", *(f"{k}={v}" for k, v in config.ray.serve_env().items()), "ray start"])
    return {
        "cluster_name": name, "max_workers": max_workers, "idle_timeout_minutes": 10,
        "provider": {"type": "aws", "region": region, "cache_stopped_nodes": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "head": {"node_config": {"InstanceType": "m5.xlarge"}, "resources": {"CPU": 2}},
            "workers": {"node_config": {"InstanceType": worker_type}, "resources": worker_resources,
                        "min_workers": max(1, math.ceil(cpus / worker_resources["CPU"])),
                        "max_workers": max_workers}},
        "head_node_type": "head",
        # The local CLI's token, so `conductor` commands here reach the cluster (and nothing else does).
        "file_mounts": {"~/.ray/auth_token": "~/.ray/auth_token"},
        "setup_commands": [f"pip install -q '{package}'"],
        "head_start_ray_commands": ["ray stop", f"{start} --head --port=6379 --dashboard-host=127.0.0.1 "
                                    "--autoscaling-config=~/ray_bootstrap_config.yaml"],
        "worker_start_ray_commands": ["ray stop", f"{start} --address=$RAY_HEAD_IP:6379"],
    }


@click.group("deploy-config")
def deploy_config() -> None:
    """Cluster files for this config: a KubeRay RayService or a `ray up` cluster."""


@deploy_config.command("kuberay")
@config_option
@click.option("--image", default=None, help="Container image with Conductor installed (default: "
              "rayproject/ray:<installed version>-py311; build yours FROM it with `pip install conductor`).")
@click.option("--name", default="conductor", show_default=True)
@click.option("--max-workers", type=int, default=4, show_default=True)
def kuberay(config_path: str | None, image: str | None, name: str, max_workers: int) -> None:
    """Print a KubeRay RayService (`kubectl apply -f`); secrets come from the `conductor-secrets` Secret."""
    config = _load(config_path)
    image = image or f"rayproject/ray:{_ray_version()}-py311"
    click.echo(dump(kuberay_manifest(config, image, name, max_workers)), nl=False)


@deploy_config.command("ray-up")
@config_option
@click.option("--name", default="conductor", show_default=True)
@click.option("--region", default="us-west-2", show_default=True)
@click.option("--package", default="conductor", show_default=True, help="What the nodes pip-install.")
@click.option("--max-workers", type=int, default=4, show_default=True)
def ray_up(config_path: str | None, name: str, region: str, package: str, max_workers: int) -> None:
    """Print a `ray up` cluster file (AWS) for this config."""
    config = _load(config_path)
    click.echo(dump(ray_up_config(config, name, region, package, max_workers)), nl=False)
