"""vLLM on GPU through Ray's own `ray.serve.llm` (LLMConfig / build_openai_app).

vLLM's pins conflict with the CPU stack (torch, transformers, pillow vs gradio), so it never runs in the gateway's
environment: `build_vllm_app` deploys Ray's LLM app as its own Serve application (route prefix
`/engines/<backend name>`), optionally in its own `runtime_env` (e.g. `options.runtime_env: {pip: [vllm==...]}`
or a prepared venv via `py_executable`), and the gateway reaches it as an OpenAI-compatible backend. Nothing here
imports vllm; `ray.serve.llm` itself is imported only when a vllm backend is configured.
"""

from __future__ import annotations

from typing import Any

from cluster.config import EngineConfig
from deployments.engines.base import EngineError
from deployments.engines.openai_engine import OpenAIEngine


def route_prefix(backend_name: str) -> str:
    return f"/engines/{backend_name}"


def llm_config(cfg: EngineConfig) -> Any:
    try:
        from ray.serve.llm import LLMConfig
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("the vllm engine needs `pip install 'conductor[gpu]'` (vllm + ray[llm]) on a GPU "
                           "machine") from e
    # Ray's LLM builder sets the actor resources and name itself; the rest is our one mapping.
    deployment = {k: v for k, v in cfg.resources.serve_options("unused").items()
                  if k in ("num_replicas", "autoscaling_config", "max_ongoing_requests")}
    engine_kwargs = {"max_model_len": cfg.context_length, **cfg.options.get("engine_kwargs", {})}
    if cfg.dtype != "auto":
        engine_kwargs.setdefault("dtype", cfg.dtype)
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": cfg.name, "model_source": cfg.model},
        "deployment_config": deployment,
        "engine_kwargs": engine_kwargs,
    }
    if cfg.options.get("accelerator_type"):
        kwargs["accelerator_type"] = cfg.options["accelerator_type"]
    if cfg.options.get("runtime_env"):
        kwargs["runtime_env"] = cfg.options["runtime_env"]
    return LLMConfig(**kwargs)


def build_vllm_app(cfg: EngineConfig) -> Any:
    """The Serve application for one vllm backend (deployed by cluster/serve_app.py)."""
    from ray.serve.llm import LLMServingArgs, build_openai_app

    return build_openai_app(LLMServingArgs(llm_configs=[llm_config(cfg)]))


class VLLMEngine(OpenAIEngine):
    """The gateway's view of a vllm backend: Ray's OpenAI app on the same Serve proxy. The gateway sets
    `mount_key` (its internal key) before start(): the mount is internal (deployments/mount_guard.py)."""

    mount_key: str | None = None

    async def start(self) -> None:
        base = self.config.options.get("serve_base_url", "http://127.0.0.1:8000")
        self.config = self.config.model_copy(update={
            "base_url": f"{base.rstrip('/')}{route_prefix(self.config.name)}/v1",
            "model": self.config.name,  # LLMConfig's model_id
        })
        await super().start()

    def api_key(self) -> str | None:
        return self.mount_key or super().api_key()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise EngineError(400, "use the embeddings deployment for embeddings", "invalid_request_error")
