"""Conductor's agent: a tool-using ReAct / function-calling loop that is a client of the OpenAI-compatible chat API.

`build_runner(config, ...)` wires the pieces: the chat model (chat_model.py), the built-in tools (builtin.py) in their
registry (tools.py), the agent definitions (agents.py), the loop (loop.py) and the trace store (trace.py).
"""

from __future__ import annotations

from typing import Any


def build_runner(config: Any, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 registry: Any = None, agents: Any = None, store: Any = None, **cfg_overrides: Any):
    """An AgentRunner for `config` (a ConductorConfig). Without `base_url` the chat model is the configured
    gateway, reached with the internal key (inside the stack; None elsewhere)."""
    from apps.agent.agents import configured_agents
    from apps.agent.builtin import builtin_registry
    from apps.agent.chat_model import ChatModel
    from apps.agent.loop import AgentRunner
    from apps.agent.run_store import open_run_store

    cfg = config.agent.model_copy(update=cfg_overrides) if cfg_overrides else config.agent
    from apps.client import serve_base_url

    if base_url is None:
        base_url, api_key = serve_base_url(config), api_key if api_key is not None else config.server.internal_api_key
    chat = ChatModel(base_url, api_key, model or cfg.chat_model, timeout=cfg.max_seconds)
    reg = registry or builtin_registry(config, max_output_chars=cfg.max_observation_chars)
    return AgentRunner(chat, reg, agents or configured_agents(cfg.agents), cfg,
                       store if store is not None else open_run_store(cfg))
