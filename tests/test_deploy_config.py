"""`conductor deploy-config`: a KubeRay RayService checked against the structure the RayService CRD requires (a
schema written here from the CRD's required fields), and a `ray up` file checked by the cluster-config schema
inside the installed ray package."""

from __future__ import annotations

import jsonschema
import yaml
from click.testing import CliRunner

from cluster.cli import cli
from cluster.config import ConductorConfig, load_config
from cluster.serve_app import enabled_apps

_POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["containers"], "properties": {"containers": {
        "type": "array", "minItems": 1, "items": {"type": "object", "required": ["name", "image"], "properties": {
            "name": {"type": "string"}, "image": {"type": "string"},
            "resources": {"type": "object", "properties": {"requests": {"type": "object"},
                                                           "limits": {"type": "object"}}}}}}}}}}
RAYSERVICE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": {
            "type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}},
        "spec": {"type": "object", "required": ["serveConfigV2", "rayClusterConfig"], "properties": {
            "serveConfigV2": {"type": "string"},
            "rayClusterConfig": {"type": "object", "required": ["headGroupSpec"], "properties": {
                "rayVersion": {"type": "string"},
                "headGroupSpec": {"type": "object", "required": ["template"], "properties": {
                    "rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
                    "template": _POD_TEMPLATE}},
                "workerGroupSpecs": {"type": "array", "items": {
                    "type": "object", "required": ["groupName", "template"], "properties": {
                        "groupName": {"type": "string"}, "replicas": {"type": "integer", "minimum": 0},
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
                        "template": _POD_TEMPLATE}}}}}}},
    },
}


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["deploy-config", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_rayservice_has_the_structure_kuberay_requires_and_deploys_every_app():
    doc = yaml.safe_load(_run("kuberay", "--image", "registry.example/conductor:1"))
    jsonschema.validate(doc, RAYSERVICE_SCHEMA)
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    config = load_config()
    assert [a["name"] for a in serve["applications"]] == [s.name for s in enabled_apps(config)]
    for app in serve["applications"]:
        assert app["import_path"] == "cluster.serve_app:build_named_app"
        inlined = ConductorConfig.model_validate(app["args"]["config"])  # the builders' own config model
        assert inlined.server.internal_api_key is None and not inlined.server.api_key_hashes
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "registry.example/conductor:1"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in head["env"] if "valueFrom" in e}
    assert secrets == {"RAY_AUTH_TOKEN": "conductor-secrets", "CONDUCTOR_API_KEYS": "conductor-secrets"}


def test_the_ray_up_file_passes_rays_own_cluster_schema():
    import json
    from pathlib import Path

    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    doc = yaml.safe_load(_run("ray-up", "--name", "conductor-test", "--max-workers", "3"))
    jsonschema.validate(doc, schema)
    assert doc["available_node_types"]["workers"]["max_workers"] == 3
    bad = {**doc, "provider": {"region": "us-west-2"}}  # the schema does bite: a provider needs a type
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("ray's schema accepted a provider without a type")


def test_every_node_gets_the_configured_serve_transport(monkeypatch):
    """`ray.serve_transport` reaches each pod's and each `ray up` node's environment (Serve reads it there), and
    `actor` turns gRPC off on both."""
    for transport, flag in (("grpc", "1"), ("actor", "0")):
        monkeypatch.setenv("CONDUCTOR__RAY__SERVE_TRANSPORT", transport)
        doc = yaml.safe_load(_run("kuberay", "--image", "registry.example/conductor:1"))
        cluster = doc["spec"]["rayClusterConfig"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
            assert env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == env["RAY_SERVE_PROXY_USE_GRPC"] == flag
        up = yaml.safe_load(_run("ray-up"))
        for cmd in up["head_start_ray_commands"][1:] + up["worker_start_ray_commands"][1:]:
            assert f"RAY_SERVE_USE_GRPC_BY_DEFAULT={flag} RAY_SERVE_PROXY_USE_GRPC={flag} ray start" in cmd


def test_the_readme_deploy_config_commands_run_as_written(tmp_path):
    import re
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    lines = [ln for ln in (repo / "README.md").read_text().splitlines()
             if ln.startswith(".venv/bin/conductor deploy-config")]
    assert len(lines) == 2
    for line in lines:
        cmd = line.replace(".venv/bin/conductor", str(repo / ".venv" / "bin" / "conductor"))
        r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load((tmp_path / "rayservice.yaml").read_text())["kind"] == "RayService"
    assert yaml.safe_load((tmp_path / "cluster.yaml").read_text())["provider"]["region"] == "us-west-2"
    assert re.search(r"image: registry.example/conductor:latest", (tmp_path / "rayservice.yaml").read_text())
