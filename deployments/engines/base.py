"""The engine interface every LLM backend implements, and the registry the built-ins register through.

Requests and responses are OpenAI-shaped dicts (the gateway validates them first), so engines that already speak
OpenAI (llama.cpp's server, hosted APIs, vLLM) pass them through, and the others build the same shapes.
An engine is plain Python: `deployments.llm_server.LLMServer` hosts one inside a Serve replica, tests and benchmarks call
one directly.
"""

from __future__ import annotations

import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Callable, TypedDict, Union

from cluster.config import EngineConfig

# What a credential looks like in an upstream's error text: vendor-prefixed keys (sk-..., hf_..., ghp_...), bearer
# values, and long opaque tokens. Upstreams echo keys back ("Incorrect API key provided: sk-..."); we never repeat.
_CREDENTIAL = re.compile(r"(?i)\bbearer\s+\S+|\b(?:sk|pk|rk|ak|hf|gh[pousr]|xox[abpr]|key|tok(?:en)?|api)[-_]"
                         r"[A-Za-z0-9._\-]{6,}|\b[A-Za-z0-9_\-]{32,}\b")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without the given secrets or anything shaped like a credential (for errors and logs)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _CREDENTIAL.sub("[redacted]", text)


class EngineError(Exception):
    """A failure with an HTTP meaning. 4xx: the caller's request is bad (never fail over on it).
    5xx / timeouts: the backend is unwell (fail over, count towards its breaker)."""

    def __init__(self, status: int, message: str, type_: str = "server_error"):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_

    @property
    def caller_fault(self) -> bool:
        """The caller's mistake (a 4xx other than timeouts and rate limits): no failover, no breaker strike."""
        return 400 <= self.status < 500 and self.status not in (408, 429)

    is_client_error = caller_fault  # the older name

    def failure(self) -> "EngineFailure":
        return EngineFailure(self.status, self.message, self.type)


@dataclass(frozen=True)
class EngineFailure:
    """An engine's error as a typed value: what a replica returns or streams across the Serve handle in place of
    a result (a plain dataclass, not a pickled exception or a dict the router must sniff)."""

    status: int
    message: str
    type: str = "server_error"

    @property
    def caller_fault(self) -> bool:
        return self.error().caller_fault

    def error(self) -> EngineError:
        return EngineError(self.status, self.message, self.type)

    @classmethod
    def of(cls, e: BaseException) -> "EngineFailure":
        """Any exception out of an engine: EngineErrors keep their meaning, the rest are the backend's fault."""
        if isinstance(e, EngineError):
            return e.failure()
        return cls(500, f"{type(e).__name__}: {e}"[:500], "server_error")


class _OpenAIObject(TypedDict, total=False):
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]


class ChatCompletion(_OpenAIObject, total=False):
    """OpenAI's chat.completion object, as engines return it (the gateway validated the request first)."""


class ChatCompletionChunk(_OpenAIObject, total=False):
    """OpenAI's chat.completion.chunk (or text_completion for /v1/completions); the last may carry `usage`."""


StreamItem = Union[ChatCompletionChunk, EngineFailure]  # what a replica streams, batched in lists


class Engine(ABC):
    """start() loads the model (may block for seconds); the rest answer one request each."""

    # Engines that speak OpenAI's tool calls themselves (hosted APIs, vLLM) get `tools` as they are; the others
    # are served through deployments/engines/tool_calls.py (constrained JSON, turned back into tool_calls).
    native_tool_calls = False

    def __init__(self, config: EngineConfig):
        self.config = config

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def chat(self, request: dict[str, Any]) -> ChatCompletion:
        """OpenAI chat.completion object (with `usage`). Failures raise EngineError."""

    @abstractmethod
    def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[ChatCompletionChunk]:
        """OpenAI chat.completion.chunk objects; the last carries `usage` when the engine knows it."""

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        raise EngineError(400, f"engine {self.config.engine!r} does not support /v1/completions", "invalid_request_error")

    def complete_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise EngineError(400, f"engine {self.config.engine!r} does not support streaming completions",
                          "invalid_request_error")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise EngineError(400, f"engine {self.config.engine!r} does not produce embeddings", "invalid_request_error")

    @abstractmethod
    async def check_health(self) -> None:
        """Raise if the engine cannot serve."""

    def stats(self) -> dict[str, Any]:
        """What the engine is doing now (`active` generations), for /v1/status and the disconnect tests."""
        return {}

    def count_tokens(self, text: str) -> int:
        """Best-effort prompt size for limits before generation; engines with a tokenizer override this."""
        return max(1, len(text) // 4)

    async def stop(self) -> None:
        return None


_REGISTRY: dict[str, Callable[[], type[Engine]]] = {}


def register_engine(name: str, loader: Callable[[], type[Engine]]) -> None:
    """Register an engine class lazily: `loader` imports it, so heavy deps load only when the engine is used.
    Third-party engines call this too (the same registry the built-ins use)."""
    _REGISTRY[name] = loader


def engine_class(name: str) -> type[Engine]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown engine {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_response(model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int,
                  message_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": text, **(message_extra or {})}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None,
               usage: dict[str, int] | None = None) -> dict[str, Any]:
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _builtin(module: str, cls: str) -> Callable[[], type[Engine]]:
    def load() -> type[Engine]:
        import importlib

        return getattr(importlib.import_module(module), cls)

    return load


register_engine("llamacpp", _builtin("deployments.engines.llamacpp", "LlamaCppEngine"))
register_engine("transformers", _builtin("deployments.engines.transformers_engine", "TransformersEngine"))
register_engine("openai", _builtin("deployments.engines.openai_engine", "OpenAIEngine"))
register_engine("echo", _builtin("deployments.engines.echo", "EchoEngine"))
register_engine("vllm", _builtin("deployments.engines.vllm_engine", "VLLMEngine"))
