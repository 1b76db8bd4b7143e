"""The Serve deployment that hosts one local engine (llama.cpp, transformers, or an injected test engine).

The engine class is injected (`engine_cls`) or looked up in the engine registry by name, so tests run the real
Serve machinery around any engine. Streams are coalesced: each item sent to the caller is a *list* of the chunks
that piled up while the previous item was in flight, so per-item transport overhead never caps tokens/s.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from cluster.config import EngineConfig
from deployments.engines.base import ChatCompletion, Engine, EngineFailure, StreamItem, engine_class
from deployments.engines.tool_calls import ToolPlan, plan_for

_END = object()


class LLMServer:
    def __init__(self, engine_config: dict[str, Any], engine_cls: type[Engine] | None = None):
        self.config = EngineConfig.model_validate(engine_config)
        cls = engine_cls or engine_class(self.config.engine)
        self.engine = cls(self.config)
        # After the first token, send at most one batch per interval: on a small CPU box every hop (replica ->
        # gateway -> proxy -> client) costs CPU per message that the engine's own threads would otherwise use.
        # 0.1 s (ten updates a second) against 0.05 s: 8 and 32 streamed chats 0.80-0.81x -> 0.86-0.89x and
        # 0.84-0.95x -> 0.91-0.96x of the engine in-process, two alternated runs each (BENCHMARKS.md).
        self.stream_interval_s = float(self.config.options.get("stream_interval_s", 0.1))
        # Engines start with async code but the constructor stays sync (no `async def __init__`); a private loop
        # in a helper thread works whether or not Serve runs this constructor inside its own event loop.
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: _run_catching(self.engine.start(), errors), daemon=True)
        t.start()
        t.join()
        if errors:
            raise errors[0]

    def _tool_plan(self, request: dict[str, Any]) -> ToolPlan | None:
        return None if self.engine.native_tool_calls else plan_for(request)

    async def chat(self, request: dict[str, Any]) -> ChatCompletion | EngineFailure:
        try:
            plan = self._tool_plan(request)
            if plan is not None:
                return plan.finish(await self.engine.chat(plan.engine_request))
            return await self.engine.chat(request)
        except Exception as e:
            return EngineFailure.of(e)

    async def complete(self, request: dict[str, Any]) -> ChatCompletion | EngineFailure:
        try:
            return await self.engine.complete(request)
        except Exception as e:
            return EngineFailure.of(e)

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[list[StreamItem]]:
        plan = self._tool_plan(request)
        chunks = self.engine.chat_stream(request if plan is None else plan.engine_request)
        async for batch in coalesce(chunks if plan is None else plan.stream(chunks), self.stream_interval_s):
            yield batch

    async def complete_stream(self, request: dict[str, Any]) -> AsyncIterator[list[StreamItem]]:
        async for batch in coalesce(self.engine.complete_stream(request), self.stream_interval_s):
            yield batch

    async def embed(self, texts: list[str]) -> list[list[float]] | EngineFailure:
        try:
            return await self.engine.embed(texts)
        except Exception as e:
            return EngineFailure.of(e)

    async def health(self) -> EngineFailure | None:
        try:
            await self.engine.check_health()
            return None
        except Exception as e:
            return EngineFailure.of(e)

    async def stats(self) -> dict[str, Any]:
        return {**self.engine.stats(), "pid": os.getpid()}

    async def check_health(self) -> None:  # Serve's own replica health probe
        await self.engine.check_health()


def _run_catching(coro: Any, errors: list[BaseException]) -> None:
    try:
        asyncio.run(coro)
    except BaseException as e:  # re-raised in the constructor
        errors.append(e)


async def coalesce(stream: Any, min_interval_s: float = 0.0) -> AsyncIterator[list[StreamItem]]:
    """Yield lists of whatever chunks are ready; an engine error becomes a final EngineFailure item.
    The first batch goes out at once (time to first token); later ones at most every `min_interval_s`, and the
    last one as soon as the engine ends (no wait after the final token)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    ended = asyncio.Event()  # the engine is done: the last batch goes out now, not after the interval

    async def pump() -> None:
        try:
            async for chunk in stream:
                queue.put_nowait(chunk)
        except Exception as e:
            queue.put_nowait(EngineFailure.of(e))
        finally:
            queue.put_nowait(_END)
            ended.set()

    task = asyncio.create_task(pump())
    try:
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            done = items[-1] is _END
            if done:
                items.pop()
            if items:
                yield items
            if done:
                return
            if min_interval_s > 0 and any(_has_text(c) for c in items) and not ended.is_set():
                try:
                    await asyncio.wait_for(ended.wait(), min_interval_s)
                except asyncio.TimeoutError:
                    pass
    finally:
        task.cancel()


def _has_text(chunk: Any) -> bool:
    return isinstance(chunk, dict) and any((c.get("delta") or {}).get("content") or c.get("text")
                                           for c in chunk.get("choices", []) or [])


def llm_deployment(cfg: EngineConfig, engine_cls: type[Engine] | None = None) -> Any:
    """A bound Serve deployment for one local backend, sized from its config."""
    options = cfg.resources.serve_options(f"LLM-{cfg.name}", health_check_period_s=10,
                                           graceful_shutdown_timeout_s=5)
    return serve.deployment(LLMServer).options(**options).bind(cfg.model_dump(), engine_cls)
