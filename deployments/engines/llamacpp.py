"""llama.cpp on CPU through the prebuilt `xllamacpp` wheel (no compiler needed).

xllamacpp embeds llama-server: requests and responses are already OpenAI-shaped, including `response_format`
JSON-schema constrained decoding (the agent relies on it) and prefix caching across requests. Its calls block,
so each runs in a worker thread; streamed chunks cross back to the event loop through a queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployments.engines.base import Engine, EngineError
from deployments.packaged import resolve_model_spec

_DONE = object()


def _refused(e: ValueError) -> EngineError:
    """xllamacpp raises ValueError for a request llama.cpp will not run: the caller's to fix, not a fault."""
    return EngineError(400, f"the model cannot run this request: {str(e)[:300]}", "invalid_request_error")


class LlamaCppEngine(Engine):
    server: Any = None
    active = 0  # generations running in llama.cpp right now (a client that left must bring this back down)

    async def start(self) -> None:
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError("the llamacpp engine needs `pip install xllamacpp`") from e
        path = resolve_model_spec(self.config.model or "packaged:smollm2")
        p = xllamacpp.CommonParams()
        p.model.path = path
        # Parallel slots are llama.cpp's continuous batching: concurrent requests decode together. Each slot gets
        # the configured context, so the whole KV cache holds slots × context_length tokens.
        self.slots = int(self.config.options.get("n_parallel", self.config.parallel_slots))
        p.n_parallel = self.slots
        p.n_ctx = self.config.context_length * self.slots
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = self.config.threads
        self.model_path = path
        # Whole (non-streamed) calls block a thread each: a pool as wide as the slots, not asyncio's default 6.
        self.pool = ThreadPoolExecutor(max_workers=max(4, self.slots * 2), thread_name_prefix="llamacpp")
        self._lock = threading.Lock()
        self.server = await asyncio.to_thread(xllamacpp.Server, p)

    def _busy(self, delta: int) -> None:
        with self._lock:
            self.active += delta

    def _call(self, fn: Any, req: dict[str, Any]) -> Any:
        self._busy(1)
        try:
            return fn(req)
        except ValueError as e:  # llama.cpp refused the request itself (e.g. a schema it cannot make a grammar of)
            raise _refused(e) from None
        finally:
            self._busy(-1)

    async def _whole(self, fn: Any, req: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return self._check(await loop.run_in_executor(self.pool, self._call, fn, req))

    def _prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        req = {k: v for k, v in request.items() if v is not None and k not in ("model", "user")}
        return req

    @staticmethod
    def _check(result: Any) -> dict[str, Any]:
        if isinstance(result, dict) and "error" in result:
            err = result["error"]
            code = int(err.get("code", 500)) if isinstance(err, dict) else 500
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            raise EngineError(code, msg, "invalid_request_error" if 400 <= code < 500 else "server_error")
        if isinstance(result, dict):
            result.pop("timings", None)  # llama.cpp's own speed report: not OpenAI's, and not the caller's business
        return result

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        req = self._prepare(request)
        req["stream"] = False
        return await self._whole(self.server.handle_chat_completions, req)

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        req = self._prepare(request)
        req["stream"] = False
        return await self._whole(self.server.handle_completions, req)

    def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream(self.server.handle_chat_completions, request)

    def complete_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._stream(self.server.handle_completions, request)

    async def _stream(self, fn: Any, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        req = self._prepare(request)
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()  # True asks llama.cpp to stop generating (client went away)

        def run() -> None:
            self._busy(1)
            try:
                result = fn(req, on_chunk)
                if isinstance(result, dict) and "error" in result:
                    loop.call_soon_threadsafe(queue.put_nowait, result)
            except Exception as e:  # surfaced to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                self._busy(-1)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = threading.Thread(target=run, daemon=True, name="llamacpp-stream")
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, ValueError):
                    raise _refused(item)
                if isinstance(item, Exception):
                    raise EngineError(500, f"llama.cpp failed: {item}")
                yield self._check(item)
        finally:
            cancelled.set()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        result = self._check(await asyncio.to_thread(self.server.handle_embeddings, {"input": texts}))
        return [d["embedding"] for d in sorted(result["data"], key=lambda d: d["index"])]

    async def check_health(self) -> None:
        if self.server is None:
            raise EngineError(503, "llama.cpp engine not started")

    def stats(self) -> dict[str, Any]:
        return {"active": self.active, "slots": getattr(self, "slots", 1)}

    async def stop(self) -> None:
        self.server = None  # the C++ server shuts down when collected
