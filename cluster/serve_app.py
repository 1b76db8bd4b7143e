"""Assemble every Serve application from the one config: the gateway (OpenAI API + UI) at "/", each app under
its own prefix, and one Ray LLM app per vLLM backend. Also writes the equivalent `serve deploy` YAML."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from cluster.config import ConductorConfig

log = logging.getLogger("conductor.serve")


@dataclass(frozen=True)
class AppSpec:
    name: str
    import_path: str  # "module:builder" taking {"config": dict}
    route_prefix: str
    section: str | None  # config section with `enabled`, or None for always-on


APPS: list[AppSpec] = [
    AppSpec("gateway", "apps.gateway.app:build_app", "/", None),
    AppSpec("rag", "apps.rag.serve:build_app", "/v1/rag", "rag"),
    AppSpec("agent", "apps.agent.serve:build_app", "/v1/agent", "agent"),
    AppSpec("video", "apps.video.serve:build_app", "/v1/video", "video"),
    AppSpec("detective", "apps.detective.serve:build_app", "/v1/detect", "detective"),
]


def enabled_apps(config: ConductorConfig, only: list[str] | None = None) -> list[AppSpec]:
    out = []
    for spec in APPS:
        if only is not None and spec.name not in only:
            continue
        if spec.section and not getattr(config, spec.section).enabled:
            continue
        out.append(spec)
    return out


def build_applications(config: ConductorConfig, only: list[str] | None = None,
                       engine_overrides: dict[str, type] | None = None) -> list[tuple[AppSpec, Any]]:
    """(spec, bound application) for each enabled app whose code is importable. A missing app is skipped with a
    warning rather than taking the whole platform down."""
    out = []
    args = {"config": config.model_dump()}
    for spec in enabled_apps(config, only):
        if spec.name == "gateway":
            from apps.gateway.app import build_gateway

            out.append((spec, build_gateway(config, engine_overrides)))
            continue
        module, fn = spec.import_path.split(":")
        try:
            builder = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            log.warning("app %s skipped: %s", spec.name, e)
            continue
        out.append((spec, builder(args)))
    for m in config.models:
        for b in m.backends:
            if b.engine == "vllm":
                from deployments.engines.vllm_engine import build_vllm_app, route_prefix

                out.append((AppSpec(f"vllm-{b.name}", "deployments.engines.vllm_engine:build_vllm_app",
                                    route_prefix(b.name), None), build_vllm_app(b)))
    return out


def deploy(config: ConductorConfig, only: list[str] | None = None, engine_overrides: dict[str, type] | None = None,
           blocking: bool = False) -> list[str]:
    """serve.start on the configured host/port, then serve.run each application. Returns the app names."""
    from ray import serve

    from apps.common import with_deploy_secrets

    config = with_deploy_secrets(config)
    _open_engine_mounts(config)
    serve.start(http_options={"host": config.server.host, "port": config.server.port,
                              "request_timeout_s": config.server.proxy_timeout_s})
    names = []
    for spec, app in build_applications(config, only, engine_overrides):
        try:
            serve.run(app, name=spec.name, route_prefix=spec.route_prefix, blocking=False)
        except Exception as e:
            if spec.name == "gateway":
                raise
            # One broken app must not take the platform down; `conductor status` shows it, the log says why.
            log.error("app %s failed to deploy: %s", spec.name, e)
            try:
                serve.delete(spec.name)
            except Exception:
                pass
            continue
        names.append(spec.name)
    return names


def _open_engine_mounts(config: ConductorConfig) -> None:
    """Tell the proxy's mount guard (deployments/mount_guard.py) which key reaches `/engines/...`: the internal
    key the gateway uses, when keys are on."""
    from apps.security import keys_required, load_api_keys
    from deployments.mount_guard import write_digests

    write_digests(keys_required(config, load_api_keys(config)), [config.server.internal_api_key or ""])


def serve_config_yaml(config: ConductorConfig, config_path: str) -> str:
    """A `serve deploy` config equivalent to what `conductor up` runs (builders read the same conductor.yaml)."""
    doc: dict[str, Any] = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": config.server.host, "port": config.server.port},
        "applications": [
            {"name": s.name, "route_prefix": s.route_prefix, "import_path": "cluster.serve_app:build_named_app",
             "args": {"app": s.name, "config_path": config_path}}
            for s in enabled_apps(config)
        ],
    }
    return "# Generated by `conductor serve-config` from " + config_path + "\n" + yaml.safe_dump(doc, sort_keys=False)


def build_named_app(args: dict[str, Any]) -> Any:
    """`serve deploy` entry point: {app: NAME, config_path: PATH} -> that app, built as `conductor up` builds it
    (API keys are read from the environment of the process that runs the builder)."""
    from apps.common import with_deploy_secrets
    from cluster.config import load_config

    config = with_deploy_secrets(load_config(args.get("config_path")))
    for spec, app in build_applications(config, only=[args["app"]]):
        return app
    raise ValueError(f"app {args['app']!r} is disabled or not importable")
