"""The gateway Serve application: one ingress (OpenAI API + Gradio UI at /ui) composed with one deployment per
local engine backend, the embeddings deployment and, when one is configured, the rerank deployment. `build_app` is
what a Serve YAML's import_path names."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from ray import serve

from apps.client import serve_base_url
from apps.gateway.accounting import Accounting
from apps.gateway.cache import ResponseCache
from apps.gateway.metrics import GatewayMetrics
from apps.gateway.responses import ResponseStore
from apps.gateway.rollout import Rollouts
from apps.gateway.router import Backend, HandleBackend, InProcessBackend, RoutedModel, Router, SharedBreakers
from apps.gateway.routing import RoutingState
from apps.gateway.semantic_cache import SemanticCache
from apps.keys import accounting_url
from cluster.config import ConductorConfig, config_from_dict
from deployments.embedder import embedder_deployment
from deployments.engines.base import engine_class
from deployments.llm_server import llm_deployment
from deployments.reranker import reranker_deployment

log = logging.getLogger("conductor.gateway")

# Engines that run inside the gateway process rather than in a deployment of their own.
IN_PROCESS_ENGINES = {"openai", "vllm"}


def _start_engine(engine: Any) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(engine.start())
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@serve.ingress()
class Gateway:
    def __init__(self, config: dict[str, Any], llm_handles: dict[str, Any], embedder: Any, reranker: Any = None):
        self.config = config_from_dict(config)
        server = self.config.server
        self.metrics = GatewayMetrics()
        self.cache = ResponseCache(server.cache_size, server.cache_ttl_s, server.redis_url)
        self.accounting = Accounting(self.config, self.metrics)  # virtual keys' budgets and the spend log
        # The Responses API's stored conversations (previous_response_id), shared by every gateway replica.
        self.responses = ResponseStore(accounting_url(self.config))
        self.embedder = embedder
        self.reranker = reranker  # a handle to deployments/reranker.py when `reranker` is configured
        self.semantic = SemanticCache(server.semantic_cache, embedder)
        models = {m.id: RoutedModel(m, self._backends(m, llm_handles)) for m in self.config.models}
        rollouts = Rollouts(models, accounting_url(self.config), self.metrics)
        self.router = Router(models, self.metrics, server.request_timeout_s, self.config.breaker,
                             SharedBreakers(server.redis_url), RoutingState(server.redis_url), rollouts.by_model)
        self.names = model_names(self.config, self.router)

    def _backends(self, m: Any, llm_handles: dict[str, Any]) -> list[Backend]:
        """A model's backends: a handle to each local engine's deployment, the rest started in this replica."""
        backends: list[Backend] = []
        for b in m.backends:
            if b.name in llm_handles:
                backends.append(HandleBackend(b, llm_handles[b.name]))
                continue
            if b.engine == "vllm":
                b = b.model_copy(update={"options": {**b.options, "serve_base_url": serve_base_url(self.config)}})
            engine = engine_class(b.engine)(b)
            if b.engine == "vllm":
                engine.mount_key = self.config.server.internal_api_key
            _start_engine(engine)
            backends.append(InProcessBackend(b, engine))
        return backends

    def __serve_build_asgi_app__(self) -> Any:
        from apps.gateway.openai_routes import build_api

        app = build_api(self)
        try:
            import gradio as gr

            from apps.gateway.ui import build_ui

            app = gr.mount_gradio_app(app, build_ui(self.config), path="/ui", **ui_mount_options(self.config))
        except Exception:  # the API must come up even if a UI tab is broken; the log says why
            log.exception("Gradio UI failed to build; /ui is unavailable")
        return app

    async def status(self) -> dict[str, Any]:
        try:
            st = serve.status()
            apps = {name: {"status": str(a.status), "deployments": {
                d: {"status": str(ds.status), "replicas": dict(ds.replica_states)}
                for d, ds in a.deployments.items()}} for name, a in st.applications.items()}
        except Exception as e:
            apps = {"error": f"{type(e).__name__}: {e}"}
        backends = [b for m in self.router.models.values() for b in m.backends]
        # Asked together: a restarting replica's 5 s stats timeout must not add up across backends.
        engines = dict(zip((b.name for b in backends), await asyncio.gather(*(b.stats() for b in backends))))
        return {"applications": apps, "router": self.router.status(), "engines": engines, "gateway_pid": os.getpid()}


def model_names(config: ConductorConfig, router: Router) -> dict[str, RoutedModel]:
    """Every name a request may send in `model`: ids, aliases, and tags (a group of models routed least-busy over
    all their backends, each backend's breaker shared with its own model)."""
    from cluster.config import ModelConfig

    names = dict(router.models)
    for m in config.models:
        for alias in m.aliases:
            names[alias] = router.models[m.id]
    for tag in sorted({t for m in config.models for t in m.tags}):
        members = [router.models[m.id] for m in config.models if tag in m.tags]
        backends = [b for r in members for b in r.backends
                    if not (r.config.rollout and b.name == r.config.rollout.shadow)]
        cfg = ModelConfig.model_construct(id=tag, backends=[b.config for b in backends], aliases=[], tags=[],
                                          default_max_tokens=min(r.config.default_max_tokens for r in members),
                                          routing_strategy="least-busy", rollout=None)
        names[tag] = RoutedModel(cfg, backends, {b.name: r.breakers[b.name] for r in members for b in r.backends
                                                 if b in backends}, strategy_override="least-busy")
    return names


def ui_mount_options(config: ConductorConfig) -> dict[str, Any]:
    """Uploads are capped by Gradio before they are stored; when API keys are required the UI asks for one
    (user name free, the key as password) since a browser cannot send a bearer header."""
    from apps.security import INTERNAL_USER, hash_key, keys_required, load_api_keys

    opts: dict[str, Any] = {"max_file_size": config.server.max_upload_bytes, "ssr_mode": False,
                            "footer_links": ["api", "settings"]}
    hashes = load_api_keys(config)
    if keys_required(config, hashes):
        users = {h: u for h, u in hashes.items() if u != INTERNAL_USER}
        # The session's user is the key's user (what the UI's requests are owned by), so the name must match it.
        opts["auth"] = lambda user, password: users.get(hash_key(password or "")) == user
        opts["auth_message"] = "Sign in with your Conductor user name and API key (the password)."
    return opts


def build_gateway(config: ConductorConfig, engine_overrides: dict[str, type] | None = None) -> Any:
    """The bound gateway application. `engine_overrides` injects engine classes by backend name (tests)."""
    engine_overrides = engine_overrides or {}
    handles = {}
    for m in config.models:
        for b in m.backends:
            if b.engine not in IN_PROCESS_ENGINES or b.name in engine_overrides:
                handles[b.name] = llm_deployment(b, engine_overrides.get(b.name))
    from deployments.secrets import with_secrets

    # Hosted engines run inside the gateway replica: it alone receives their keys.
    options = with_secrets(config.server.gateway.serve_options("Gateway"),
                           [b.api_key_env for m in config.models for b in m.backends if b.name not in handles]
                           + [config.server.accounting.db_url_env])
    reranker = reranker_deployment(config.reranker) if config.reranker else None
    return serve.deployment(Gateway).options(**options).bind(config.model_dump(), handles,
                                                             embedder_deployment(config.embeddings), reranker)


def build_app(args: dict[str, Any]) -> Any:
    """Serve YAML entry point: `import_path: apps.gateway.app:build_app`, args: {config: {...}} or {config_path}."""
    from cluster.config import load_config

    config = config_from_dict(args["config"]) if "config" in args else load_config(args.get("config_path"))
    return build_gateway(config)
