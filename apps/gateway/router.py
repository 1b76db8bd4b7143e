"""Model routing: each model's ordered fallback chain, circuit breakers, per-attempt timeouts.

A backend is either a local engine in its own Serve deployment (reached by DeploymentHandle) or an engine running
inside the gateway itself (hosted OpenAI-compatible APIs, the vLLM app's OpenAI endpoint). A 4xx from a backend is
the caller's mistake and is returned as is; a 5xx, a timeout or an open breaker moves on to the next backend while
the request's own deadline allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cluster.config import BreakerConfig, EngineConfig, ModelConfig
from deployments.engines.base import Engine, EngineError


@dataclass
class Breaker:
    """Closed -> (threshold consecutive failures) -> open for `cooldown_s` -> half-open: one trial request."""

    config: BreakerConfig
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def state(self, now: float | None = None) -> str:
        if self.opened_at is None:
            return "closed"
        now = time.monotonic() if now is None else now
        return "half_open" if now - self.opened_at >= self.config.cooldown_s else "open"

    def allow(self) -> bool:
        s = self.state()
        if s == "closed":
            return True
        if s == "half_open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial_in_flight = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.failures >= self.config.failure_threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


class Backend:
    """One way to answer for a model. Methods raise EngineError; streams yield lists of chunks."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.name = config.name

    async def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, kind: str, req: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        raise NotImplementedError

    async def health(self) -> None:
        raise NotImplementedError


def _raise_if_error(result: Any) -> Any:
    if isinstance(result, dict) and "error" in result and "choices" not in result:
        err = result["error"]
        raise EngineError(int(err.get("status", 500)), err.get("message", "backend error"), err.get("type", "server_error"))
    return result


class HandleBackend(Backend):
    """A local engine in its own Serve deployment."""

    def __init__(self, config: EngineConfig, handle: Any):
        super().__init__(config)
        self.handle = handle

    async def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        return _raise_if_error(await self.handle.chat.remote(req))

    async def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        return _raise_if_error(await self.handle.complete.remote(req))

    async def stream(self, kind: str, req: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        method = self.handle.options(stream=True)
        gen = (method.chat_stream if kind == "chat" else method.complete_stream).remote(req)
        async for batch in gen:
            for chunk in batch:
                _raise_if_error(chunk)
            yield batch

    async def health(self) -> None:
        _raise_if_error(await self.handle.health.remote())


class InProcessBackend(Backend):
    """An engine that lives in the gateway replica (hosted APIs, the vLLM app's OpenAI endpoint)."""

    def __init__(self, config: EngineConfig, engine: Engine):
        super().__init__(config)
        self.engine = engine

    async def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self.engine.chat(req)

    async def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self.engine.complete(req)

    async def stream(self, kind: str, req: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        gen = self.engine.chat_stream(req) if kind == "chat" else self.engine.complete_stream(req)
        async for chunk in gen:
            yield [chunk]

    async def health(self) -> None:
        await self.engine.check_health()


@dataclass
class Attempt:
    backend: str
    error: str


@dataclass
class RoutedModel:
    config: ModelConfig
    backends: list[Backend]
    breakers: dict[str, Breaker] = field(default_factory=dict)


class AllBackendsFailed(EngineError):
    def __init__(self, model: str, attempts: list[Attempt]):
        detail = "; ".join(f"{a.backend}: {a.error}" for a in attempts) or "every backend's circuit breaker is open"
        super().__init__(503, f"no backend of model {model!r} could answer ({detail})", "service_unavailable")
        self.attempts = attempts


class Router:
    def __init__(self, models: dict[str, RoutedModel], metrics: Any, request_timeout_s: float,
                 breaker: BreakerConfig | None = None):
        self.models = models
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        for m in models.values():
            for b in m.backends:
                m.breakers.setdefault(b.name, Breaker(breaker or BreakerConfig()))

    @staticmethod
    def _candidates(model: RoutedModel, attempts: list[Attempt]):  # -> Iterator[Backend]
        """Backends in fallback order whose breaker lets a request through, asked lazily so a half-open
        breaker's single trial is only spent when that backend is really tried."""
        for b in model.backends:
            if model.breakers[b.name].allow():
                yield b
            else:
                attempts.append(Attempt(b.name, "circuit breaker open"))

    def _record_failure(self, model: RoutedModel, backend: Backend, endpoint: str, err: EngineError) -> None:
        model.breakers[backend.name].failure()
        kind = "timeout" if err.status == 504 else "backend_error"
        self.metrics.errors.inc(model=model.config.id, backend=backend.name, endpoint=endpoint, kind=kind)
        self._publish_breaker(model, backend)

    def _record_success(self, model: RoutedModel, backend: Backend) -> None:
        model.breakers[backend.name].success()
        self._publish_breaker(model, backend)
        first = model.backends[0].name
        if backend.name != first:
            self.metrics.fallbacks.inc(model=model.config.id, from_backend=first, to_backend=backend.name)

    def _publish_breaker(self, model: RoutedModel, backend: Backend) -> None:
        state = model.breakers[backend.name].state()
        self.metrics.breaker_open.set(0.0 if state == "closed" else 1.0, model=model.config.id, backend=backend.name)

    async def _failover(self, model: RoutedModel, endpoint: str, attempt: Any) -> tuple[Backend, Any]:
        """Try backends in order: `attempt(backend, timeout)` either returns or raises. Client errors (4xx) go
        straight back to the caller; anything else counts against that backend and moves on, within the
        request's own deadline."""
        deadline = time.monotonic() + self.request_timeout_s
        attempts: list[Attempt] = []
        for backend in self._candidates(model, attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                result = await attempt(backend, min(backend.config.timeout_s, left))
            except EngineError as e:
                if e.is_client_error:
                    raise
                err = e
            except Exception as e:  # a dead replica, an actor error: the backend's problem, not the caller's
                err = EngineError(503, f"{type(e).__name__}: {e}"[:300])
            else:
                self._record_success(model, backend)
                return backend, result
            attempts.append(Attempt(backend.name, err.message))
            self._record_failure(model, backend, endpoint, err)
        raise AllBackendsFailed(model.config.id, attempts)

    async def call(self, model: RoutedModel, endpoint: str, req: dict[str, Any]) -> tuple[Backend, dict[str, Any]]:
        """Non-streaming: the first backend that answers within its timeout and the request's deadline."""
        async def attempt(backend: Backend, timeout: float) -> dict[str, Any]:
            fn = backend.chat if endpoint == "chat" else backend.complete
            try:
                return await asyncio.wait_for(fn(req), timeout=timeout)
            except asyncio.TimeoutError:
                raise EngineError(504, f"timed out after {timeout:.1f}s") from None

        return await self._failover(model, endpoint, attempt)

    async def open_stream(self, model: RoutedModel, endpoint: str, req: dict[str, Any]
                          ) -> tuple[Backend, list[dict[str, Any]], AsyncIterator[list[dict[str, Any]]]]:
        """Streaming: fail over until a backend yields its first batch; after that the stream is committed."""
        async def attempt(backend: Backend, timeout: float) -> tuple[list[dict[str, Any]], Any]:
            gen = backend.stream(endpoint, req)
            try:
                first = await asyncio.wait_for(gen.__anext__(), timeout=timeout)
            except StopAsyncIteration:
                first = []
            except asyncio.TimeoutError:
                await _aclose(gen)
                raise EngineError(504, f"no first token after {timeout:.1f}s") from None
            except BaseException:
                await _aclose(gen)
                raise
            return first, gen

        backend, (first, gen) = await self._failover(model, endpoint, attempt)
        return backend, first, gen

    def status(self) -> dict[str, Any]:
        return {mid: {b.name: {"engine": b.config.engine, "breaker": m.breakers[b.name].state(),
                               "failures": m.breakers[b.name].failures} for b in m.backends}
                for mid, m in self.models.items()}


async def _aclose(gen: Any) -> None:
    try:
        await gen.aclose()
    except Exception:
        pass
