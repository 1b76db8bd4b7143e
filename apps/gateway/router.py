"""Model routing: each model's ordered fallback chain, circuit breakers, per-attempt timeouts.

A backend is either a local engine in its own Serve deployment (reached by DeploymentHandle) or an engine running
inside the gateway itself (hosted OpenAI-compatible APIs, the vLLM app's OpenAI endpoint). A 4xx from a backend is
the caller's mistake and is returned as is; a 5xx, a timeout or an open breaker moves on to the next backend while
the request's own deadline allows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cluster.config import BreakerConfig, EngineConfig, ModelConfig
from deployments.engines.base import Engine, EngineError, EngineFailure


@dataclass
class Breaker:
    """Closed -> (threshold consecutive failures) -> open for `cooldown_s` -> half-open: one trial request."""

    config: BreakerConfig
    failures: int = 0
    opened_at: float | None = None
    # When the half-open trial went out. A trial that never reports (its caller cancelled where no handler ran)
    # is taken as lost after another cooldown, so one lost trial cannot keep the backend out for good.
    trial_since: float | None = None

    def state(self, now: float | None = None) -> str:
        if self.opened_at is None:
            return "closed"
        now = time.monotonic() if now is None else now
        return "half_open" if now - self.opened_at >= self.config.cooldown_s else "open"

    def allow(self) -> bool:
        now = time.monotonic()
        s = self.state(now)
        if s == "closed":
            return True
        if s == "half_open" and (self.trial_since is None or now - self.trial_since >= self.config.cooldown_s):
            self.trial_since = now
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial_since = 0, None, None

    def release(self) -> None:
        """The trial request ended without judging the backend (the caller's mistake, an overload, a caller that
        left, a deadline spent before it ran)."""
        self.trial_since = None

    def failure(self) -> None:
        self.failures += 1
        self.trial_since = None
        if self.failures >= self.config.failure_threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()


class SharedBreakers:
    """Open breakers published in Redis (as LiteLLM's cooldown cache does), so every gateway replica skips a
    backend that any replica found broken. A key per backend lives for the cooldown; a success clears it. Without
    Redis, or while it fails (short timeouts, then skipped for a few seconds), each replica decides alone."""

    def __init__(self, url: str | None, prefix: str = "conductor:breaker", timeout_s: float = 0.25):
        from apps.gateway.redis_side import BestEffortRedis

        self.url, self.prefix = url, prefix
        self._do = BestEffortRedis(url, timeout_s).value

    async def is_open(self, backend: str) -> bool:
        return bool(await self._do(lambda r: r.exists(f"{self.prefix}:{backend}")))

    async def opened(self, backend: str, cooldown_s: float) -> None:
        await self._do(lambda r: r.set(f"{self.prefix}:{backend}", "open", px=max(1, int(cooldown_s * 1000))))

    async def closed(self, backend: str) -> None:
        await self._do(lambda r: r.delete(f"{self.prefix}:{backend}"))


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

    async def stats(self) -> dict[str, Any]:
        """What the engine is doing (`active` generations, `pid` of its process); {} when it cannot say."""
        return {}


def _raise_if_failed(result: Any) -> Any:
    """A replica answers with its result or a typed EngineFailure (deployments/llm_server.py); the latter is raised."""
    if isinstance(result, EngineFailure):
        raise result.error()
    return result


class HandleBackend(Backend):
    """A local engine in its own Serve deployment."""

    def __init__(self, config: EngineConfig, handle: Any):
        super().__init__(config)
        self.handle = handle

    async def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        return _raise_if_failed(await self.handle.chat.remote(req))

    async def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        return _raise_if_failed(await self.handle.complete.remote(req))

    async def stream(self, kind: str, req: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        method = self.handle.options(stream=True)
        gen = (method.chat_stream if kind == "chat" else method.complete_stream).remote(req)
        try:
            async for batch in gen:
                failure = next((c for c in batch if isinstance(c, EngineFailure)), None)
                if failure is None:
                    yield batch
                    continue
                if len(batch) > 1:  # what the engine said before it failed still reaches the caller
                    yield [c for c in batch if not isinstance(c, EngineFailure)]
                raise failure.error()
        finally:
            gen.cancel()  # the caller stopped reading (or left): stop the generation in the replica too

    async def health(self) -> None:
        _raise_if_failed(await self.handle.health.remote())

    async def stats(self) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.handle.stats.remote(), timeout=5)
        except Exception as e:  # noqa: BLE001 - a restarting replica has no stats to give
            return {"error": type(e).__name__}


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
    strategy_override: str | None = None  # a tag's group routes least-busy whatever its members say

    @property
    def strategy(self) -> str:
        from cluster.gateway_config import strategy_name

        return self.strategy_override or strategy_name(self.config.routing_strategy)


class AllBackendsFailed(EngineError):
    def __init__(self, model: str, attempts: list[Attempt], retry_after_s: int = 1):
        detail = "; ".join(f"{a.backend}: {a.error}" for a in attempts) or "every backend's circuit breaker is open"
        super().__init__(503, f"no backend of model {model!r} could answer ({detail})", "service_unavailable")
        self.attempts = attempts
        self.retry_after_s = retry_after_s


def replica_gone(e: BaseException) -> bool:
    """A Serve replica died or is restarting: the backend is not broken, Serve is bringing it back."""
    try:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError,
                          DeploymentUnavailableError))


class RestartWait:
    """Asking a deployment again while its replica is gone: Serve restarts it, or its other replicas take the call.
    Up to `grace_s` from the first loss, pauses doubling from 0.1 s to 1 s. The router's fallback loop and the calls
    that have no fallback chain (the embeddings deployment) wait the same way."""

    def __init__(self, grace_s: float):
        self.grace_s, self.since, self.pause = grace_s, None, 0.1

    def within_grace(self) -> bool:
        self.since = self.since or time.monotonic()
        return time.monotonic() - self.since < self.grace_s

    async def sleep(self, deadline: float) -> None:
        await asyncio.sleep(min(self.pause, max(0.0, deadline - time.monotonic())))
        self.pause = min(self.pause * 2, 1.0)

    async def call(self, fn: Any, deadline: float) -> Any:
        """`await fn()`, again after each replica loss within the grace and the deadline; the last error raises."""
        while True:
            try:
                return await fn()
            except Exception as e:
                if not (replica_gone(e) and self.within_grace() and time.monotonic() < deadline):
                    raise
            await self.sleep(deadline)


class Unanswered(Exception):
    """A deployment with no fallback chain (the embedder, the reranker) gave no answer: 503 while it restarts or
    its queue is full (retry), 504 past the request's deadline."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> Any:
        from fastapi.responses import JSONResponse

        from apps.common import error_body

        kind, retry = ("timeout", None) if self.status == 504 else ("service_unavailable", {"Retry-After": "1"})
        return JSONResponse(error_body(self.message, kind), status_code=self.status, headers=retry)


async def call_deployment(fn: Any, what: str, grace_s: float, timeout_s: float) -> Any:
    """`await fn()` (a handle call) within the request's deadline, asked again while the replica restarts. Past the
    deadline the call is cancelled, which Serve passes on to the replica."""
    deadline = time.monotonic() + timeout_s
    try:
        return await asyncio.wait_for(RestartWait(grace_s).call(fn, deadline), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise Unanswered(504, f"the {what} took longer than the request deadline ({timeout_s:g} s)") from None
    except Exception as e:
        if replica_gone(e) or overloaded(e):
            raise Unanswered(503, f"the {what} deployment is restarting or full; retry shortly") from None
        raise


def overloaded(e: BaseException) -> bool:
    """The backend's queue is full (max_queued_requests): shed load, no strike against the backend."""
    try:
        from ray.serve.exceptions import BackPressureError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, BackPressureError) or (isinstance(e, EngineError) and e.status == 429)


class Router:
    def __init__(self, models: dict[str, RoutedModel], metrics: Any, request_timeout_s: float,
                 breaker: BreakerConfig | None = None, shared: SharedBreakers | None = None,
                 state: Any = None, rollouts: dict[str, Any] | None = None):
        from apps.gateway.routing import RoutingState

        self.models = models
        self.shared = shared or SharedBreakers(None)
        self.state = state or RoutingState(None)  # in-flight counts and latency averages (routing.py)
        self.rollouts = rollouts or {}  # model id -> Rollout (rollout.py)
        self._shadow_tasks: set[asyncio.Task] = set()
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        # How long requests wait for a dead replica to come back before that counts as the backend failing.
        self.restart_grace_s = (breaker or BreakerConfig()).restart_grace_s
        for m in models.values():
            for b in m.backends:
                m.breakers.setdefault(b.name, Breaker(breaker or BreakerConfig()))

    async def _candidates(self, model: RoutedModel, attempts: list[Attempt], order: list[Backend]
                          ) -> AsyncIterator[Backend]:
        """Backends in routing order whose breaker lets a request through, asked lazily so a half-open
        breaker's single trial is only spent when that backend is really tried. A breaker another replica
        opened (shared through Redis) counts as open here too."""
        for b in order:
            breaker = model.breakers[b.name]
            if breaker.state() == "closed" and await self.shared.is_open(b.name):
                attempts.append(Attempt(b.name, "circuit breaker open (opened by another gateway replica)"))
            elif breaker.allow():
                yield b
            else:
                attempts.append(Attempt(b.name, "circuit breaker open"))

    async def _record_failure(self, model: RoutedModel, backend: Backend, endpoint: str, err: EngineError) -> None:
        breaker = model.breakers[backend.name]
        breaker.failure()
        if breaker.state() != "closed":
            await self.shared.opened(backend.name, breaker.config.cooldown_s)
        kind = "timeout" if err.status == 504 else "backend_error"
        self.metrics.errors.inc(model=model.config.id, backend=backend.name, endpoint=endpoint, kind=kind,
                                variant=self.variant_of(model, backend.name))
        self._publish_breaker(model, backend)

    async def _record_success(self, model: RoutedModel, backend: Backend) -> None:
        was_open = model.breakers[backend.name].opened_at is not None
        model.breakers[backend.name].success()
        if was_open:
            await self.shared.closed(backend.name)
        self._publish_breaker(model, backend)

    def variant_of(self, model: RoutedModel, backend: str) -> str:
        """The backend's part in its model's rollout (stable, canary, shadow), "" without one."""
        rollout = self.rollouts.get(model.config.id)
        return rollout.variant_of(backend) if rollout else ""

    async def plan(self, model: RoutedModel, user: str) -> tuple[list[Backend], str | None]:
        """(the order this request tries backends in, its rollout variant or None)."""
        from apps.gateway.routing import order_backends

        rollout = self.rollouts.get(model.config.id)
        variant = rollout.variant_for(user) if rollout else None
        first = rollout.backend_of(variant) if rollout else None
        return await order_backends(model, user, self.state, first), variant

    def _publish_breaker(self, model: RoutedModel, backend: Backend) -> None:
        state = model.breakers[backend.name].state()
        self.metrics.breaker_open.set(0.0 if state == "closed" else 1.0, model=model.config.id, backend=backend.name)

    async def _failover(self, model: RoutedModel, endpoint: str, attempt: Any, deadline: float | None = None,
                        user: str = "", hold: bool = False) -> tuple[Backend, Any]:
        """`_try_in_order` over this request's routing plan; the rollout variant it was routed to learns whether
        its backend answered (and how fast)."""
        order, variant = await self.plan(model, user)
        t0 = time.monotonic()
        backend: Backend | None = None
        try:
            backend, result = await self._try_in_order(model, endpoint, attempt, deadline, order, hold)
            if backend.name != order[0].name:
                self.metrics.fallbacks.inc(model=model.config.id, from_backend=order[0].name, to_backend=backend.name)
            return backend, result
        finally:
            if variant is not None:
                primary = self.rollouts[model.config.id].backend_of(variant)
                answered = backend is not None and backend.name == primary
                self.rollouts[model.config.id].observe(variant, answered, time.monotonic() - t0 if answered else None)

    async def _measured(self, backend: Backend, attempt: Any, timeout: float, hold: bool) -> Any:
        """One attempt, counted in flight and timed for the routing strategies. A held attempt (an opened stream)
        stays in flight until `release`."""
        started = time.monotonic()
        await self.state.started(backend.name)
        try:
            result = await attempt(backend, timeout)
        except BaseException:
            await self.state.ended(backend.name, None)
            raise
        if hold:
            await self.state.observed(backend.name, time.monotonic() - started)
        else:
            await self.state.ended(backend.name, time.monotonic() - started)
        return result

    async def release(self, backend: Backend) -> None:
        """A held stream ended."""
        await self.state.ended(backend.name, None)

    async def _try_in_order(self, model: RoutedModel, endpoint: str, attempt: Any, deadline: float | None,
                            order: list[Backend], hold: bool) -> tuple[Backend, Any]:
        """Try backends in order: `attempt(backend, timeout)` either returns or raises. Client errors (4xx) go
        straight back to the caller with no strike; a replica that died is waited for (Serve restarts it) for up to
        `restart_grace_s`, an overloaded one is skipped without a strike; anything else counts against that backend
        and moves on. All of it within the request's one deadline."""
        deadline = deadline or time.monotonic() + self.request_timeout_s
        attempts: list[Attempt] = []
        shed = False
        async for backend in self._candidates(model, attempts, order):
            restart = RestartWait(self.restart_grace_s)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    model.breakers[backend.name].release()  # a trial taken and never sent judges nothing
                    break
                try:
                    result = await self._measured(backend, attempt, min(backend.config.timeout_s, left), hold)
                except asyncio.CancelledError:
                    model.breakers[backend.name].release()  # the caller left: the backend was not judged
                    raise
                except EngineError as e:
                    if e.caller_fault:
                        model.breakers[backend.name].release()
                        raise
                    err = e
                except Exception as e:  # a dead replica, an actor error: the backend's problem, not the caller's
                    if replica_gone(e) and restart.within_grace():
                        self.metrics.errors.inc(model=model.config.id, backend=backend.name, endpoint=endpoint,
                                                kind="replica_restarting")
                        await restart.sleep(deadline)
                        continue
                    err = EngineError(503, f"{type(e).__name__}: {e}"[:300])
                    if overloaded(e):
                        err = EngineError(429, "queue full")
                else:
                    await self._record_success(model, backend)
                    return backend, result
                if overloaded(err):
                    shed = True
                    model.breakers[backend.name].release()
                    attempts.append(Attempt(backend.name, "overloaded (queue full)"))
                    self.metrics.errors.inc(model=model.config.id, backend=backend.name, endpoint=endpoint,
                                            kind="overloaded")
                else:
                    attempts.append(Attempt(backend.name, err.message))
                    await self._record_failure(model, backend, endpoint, err)
                break
            if deadline - time.monotonic() <= 0:
                attempts.append(Attempt(backend.name, "request deadline exceeded"))
                break
        raise AllBackendsFailed(model.config.id, attempts, retry_after_s=1 if shed else 5)

    async def call(self, model: RoutedModel, endpoint: str, req: dict[str, Any], user: str = ""
                   ) -> tuple[Backend, dict[str, Any]]:
        """Non-streaming: the first backend that answers within its timeout and the request's deadline."""
        async def attempt(backend: Backend, timeout: float) -> dict[str, Any]:
            fn = backend.chat if endpoint == "chat" else backend.complete
            try:
                return await asyncio.wait_for(fn(req), timeout=timeout)
            except asyncio.TimeoutError:
                raise EngineError(504, f"timed out after {timeout:.1f}s") from None

        backend, result = await self._failover(model, endpoint, attempt, user=user)
        self._shadow(model, endpoint, req, _answer_text(result))
        return backend, result

    async def open_stream(self, model: RoutedModel, endpoint: str, req: dict[str, Any], user: str = ""
                          ) -> tuple[Backend, list[dict[str, Any]], AsyncIterator[list[dict[str, Any]]], float]:
        """Streaming: fail over until a backend yields its first batch; after that the stream is committed. The
        backend stays in flight (least-busy) until the caller's `release(backend)`."""
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

        deadline = time.monotonic() + self.request_timeout_s
        backend, (first, gen) = await self._failover(model, endpoint, attempt, deadline, user, hold=True)
        self._shadow(model, endpoint, {k: v for k, v in req.items() if k not in ("stream", "stream_options")}, None)
        return backend, first, gen, deadline

    def _shadow(self, model: RoutedModel, endpoint: str, req: dict[str, Any], answer: str | None) -> None:
        """A copy of the request to the rollout's shadow backend, in the background; its answer is compared with
        `answer` (what the caller got; None for streams) and dropped."""
        rollout = self.rollouts.get(model.config.id)
        if rollout is None or not rollout.config.shadow or random.randrange(100) >= rollout.config.shadow_percent:
            return
        shadow = next(b for b in model.backends if b.name == rollout.config.shadow)

        async def run() -> None:
            fn = shadow.chat if endpoint == "chat" else shadow.complete
            try:
                result = await asyncio.wait_for(fn(req), timeout=shadow.config.timeout_s)
            except Exception as e:  # noqa: BLE001 - a shadow's failure is recorded, never the caller's
                rollout.record_shadow(answer, None, f"{type(e).__name__}: {e}"[:200])
                return
            rollout.record_shadow(answer, _answer_text(result), None)

        task = asyncio.get_running_loop().create_task(run())
        self._shadow_tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._shadow_tasks.discard)

    async def stream_failed(self, model: RoutedModel, backend: Backend, endpoint: str, err: EngineError) -> None:
        """A committed stream broke: nothing can fail over any more, but the backend is charged for it."""
        if not err.caller_fault:
            await self._record_failure(model, backend, endpoint, err)

    def status(self) -> dict[str, Any]:
        return {mid: {b.name: {"engine": b.config.engine, "breaker": m.breakers[b.name].state(),
                               "failures": m.breakers[b.name].failures} for b in m.backends}
                for mid, m in self.models.items()}


def _answer_text(result: Any) -> str | None:
    try:
        choice = result["choices"][0]
        return choice["message"].get("content") if "message" in choice else choice.get("text")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


async def _aclose(gen: Any) -> None:
    try:
        await gen.aclose()
    except Exception:
        pass
