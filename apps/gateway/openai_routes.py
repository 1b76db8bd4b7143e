"""The OpenAI-compatible HTTP surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
plus /v1/rerank (rerank_route.py), /healthz, /metrics and /v1/status. Built inside the gateway replica by
`build_api(gateway)`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from apps.common import APIError, error_body, install_common, public, read_json_body
from apps.gateway.accounting import CLIENT_CLOSED, Call, to_the_end
from apps.gateway.cache import cache_key
from apps.gateway.router import RoutedModel, Unanswered, call_deployment
from apps.gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from apps.gateway.schemas import validate as _validate
from apps.gateway.stream_cache import StreamAssembler, as_chunks
from deployments.engines.base import EngineError

BACKEND_HEADER = "x-conductor-backend"
log = logging.getLogger("conductor.gateway")


def build_api(gw: Any) -> FastAPI:
    """`gw` is the Gateway replica: it holds config, router, metrics, cache and the embedder handle."""
    app = FastAPI(title="Conductor", description="OpenAI-compatible API for local and hosted models.",
                  version="0.1.0")
    install_common(app, gw.config)
    limit = gw.config.server.max_body_bytes

    def resolve(name: str | None, call: Call) -> RoutedModel:
        mid = name or gw.config.default_model
        if mid not in gw.names:  # ids, aliases and tags (app.model_names)
            raise APIError(404, f"model {mid!r} does not exist; available: {sorted(gw.names)}",
                           code="model_not_found", param="model")
        gw.accounting.check_model(call, mid, gw.names[mid].config.id)  # an alias is its model
        return gw.names[mid]

    def prepare(model: RoutedModel, parsed: Any) -> dict[str, Any]:
        ctx = min(b.config.context_length for b in model.backends)
        budget = parsed.budget() or model.config.default_max_tokens
        if budget >= ctx:
            raise APIError(400, f"max_tokens={budget} does not fit the context window of model "
                                f"{model.config.id!r} ({ctx} tokens, prompt included)",
                           code="context_length_exceeded", param="max_tokens")
        return parsed.engine_request(model.config.id, budget)

    async def generate(request: Request, endpoint: str, model_cls: Any) -> Response:
        body = await read_json_body(request, limit)
        parsed = _validate(model_cls, body)
        call = Call.of(request)
        call.end_user = parsed.user
        model = resolve(parsed.model, call)
        req = prepare(model, parsed)
        await gw.accounting.admit(call, model, req)
        if parsed.stream:
            return await settled_if_cancelled(gw, call, model, endpoint, stream_response(gw, model, endpoint, req,
                                                                                         call))
        return await settled_if_cancelled(gw, call, model, endpoint, whole_response(gw, model, endpoint, req, call))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat", ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completions", CompletionRequest)

    _add_responses(app, gw, resolve, prepare, limit)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        parsed = _validate(EmbeddingRequest, await read_json_body(request, limit))
        return await embeddings_response(gw, parsed, Call.of(request))

    _add_info_routes(app, gw)
    from apps.gateway.admin_routes import add_admin_routes
    from apps.gateway.rerank_route import add_rerank_route

    add_rerank_route(app, gw)

    add_admin_routes(app, gw)
    return app


def _add_info_routes(app: FastAPI, gw: Any) -> None:
    """Models, health, metrics and status."""

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        def kind(name: str, r: RoutedModel) -> dict[str, Any]:
            if name != r.config.id:
                return {"alias_of": r.config.id}
            return {} if name in gw.router.models else {"tag": True}

        data = [{"id": name, "object": "model", "created": 0, "owned_by": "conductor",
                 "backends": [b.name for b in r.backends], **kind(name, r)} for name, r in gw.names.items()]
        data.append({"id": gw.config.embeddings.id, "object": "model", "created": 0, "owned_by": "conductor",
                     "backends": ["embedder"]})
        if gw.config.reranker is not None:
            data.append({"id": gw.config.reranker.id, "object": "model", "created": 0, "owned_by": "conductor",
                         "backends": ["reranker"]})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        found = next((m for m in (await models())["data"] if m["id"] == model_id), None)
        if found is None:
            raise APIError(404, f"model {model_id!r} does not exist", code="model_not_found", param="model")
        return found

    @app.get("/healthz")
    @public
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": gw.router.status()}

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import generate_latest

        from apps.limits import REGISTRY

        return Response(gw.metrics.render() + generate_latest(REGISTRY),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return await gw.status()


def _add_responses(app: FastAPI, gw: Any, resolve: Any, prepare: Any, limit: int) -> None:
    """`POST /v1/responses` (apps/gateway/responses.py): validated as itself, served as a chat request."""

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        from apps.gateway import responses as R

        parsed = _validate(R.ResponsesRequest, await read_json_body(request, limit))
        call = Call.of(request)
        user = call.user
        earlier: list[dict[str, Any]] = []
        if parsed.previous_response_id:
            earlier = gw.responses.messages(parsed.previous_response_id, user)
            if earlier is None:  # absent, forgotten, or another user's: the same answer
                raise APIError(404, f"no response {parsed.previous_response_id!r}", code="response_not_found",
                               param="previous_response_id")
        messages = R.to_messages(parsed, earlier)
        chat = _validate(ChatRequest, R.to_chat(parsed, messages))
        model = resolve(chat.model, call)
        req, rid = prepare(model, chat), R.new_id("resp")
        await gw.accounting.admit(call, model, req)

        def keep(stored: dict[str, Any]) -> None:
            if parsed.store:
                gw.responses.put(rid, user, messages + [stored])

        if parsed.stream:
            inner = await settled_if_cancelled(gw, call, model, "chat", stream_response(gw, model, "chat", req, call))
            if not isinstance(inner, StreamingResponse):  # refused before the stream opened: the same error
                return inner
            tr = R.StreamTranslator(parsed, rid, model.config.id)
            return ClosingStreamingResponse(R.events(tr, inner.body_iterator, keep), media_type="text/event-stream",
                                            background=inner.background,  # the clean-up if the body is never read
                                            headers={BACKEND_HEADER: inner.headers.get(BACKEND_HEADER, ""),
                                                     "cache-control": "no-cache"})
        inner = await settled_if_cancelled(gw, call, model, "chat", whole_response(gw, model, "chat", req, call))
        if inner.status_code >= 400:
            return inner
        completion = json.loads(inner.body)
        output, stored, incomplete = R.from_chat(completion)
        keep(stored)
        doc = R.response_object(parsed, rid, model.config.id, output, "incomplete" if incomplete else "completed",
                                completion.get("usage") or {}, int(time.time()), incomplete)
        return JSONResponse(doc, headers={BACKEND_HEADER: inner.headers.get(BACKEND_HEADER, "")})


def _usage(resp: dict[str, Any]) -> tuple[int, int]:
    u = resp.get("usage") or {}
    return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)


async def account(gw: Any, call: Call, model: RoutedModel, backend_name: str, endpoint: str, n_in: int,
                  n_out: int, status: int = 200) -> None:
    """Metrics, the key's settled spend and the spend row of one answered request."""
    m, backend = gw.metrics, next(b for b in model.backends if b.name == backend_name)
    mid = model.config.id
    variant = call.variant = gw.router.variant_of(model, backend_name)
    m.requests.inc(model=mid, backend=backend_name, endpoint=endpoint, status="ok" if status == 200 else str(status),
                   variant=variant)
    m.latency.observe(time.perf_counter() - call.t0, model=mid, backend=backend_name, endpoint=endpoint,
                      variant=variant)
    m.tokens_in.inc(n_in, model=mid, backend=backend_name)
    m.tokens_out.inc(n_out, model=mid, backend=backend_name)
    cost = await gw.accounting.finish(call, mid, backend, endpoint, n_in, n_out, status=status)
    if cost:
        m.cost.inc(cost, model=mid, backend=backend_name, user=call.user)


async def settled_if_cancelled(gw: Any, call: Call, model: RoutedModel, endpoint: str, answer: Any) -> Response:
    """Await `answer`; a client that leaves before it is ready cancels it, and the request is then logged as the
    client's abort (499, nothing delivered) and its reservation given back, so the worst case held at admission
    does not eat the key's budget for good."""
    try:
        return await answer
    except asyncio.CancelledError:
        await to_the_end(_unanswered(gw, call, model, endpoint, CLIENT_CLOSED))
        raise


async def _unanswered(gw: Any, call: Call, model: RoutedModel, endpoint: str, status: int) -> None:
    """A request that got no answer (a failure, a client that left): counted by its status and settled at no
    cost, unless it was already settled."""
    if call.finished:
        return
    gw.metrics.requests.inc(model=model.config.id, backend="", endpoint=endpoint, status=str(status))
    await gw.accounting.finish(call, model.config.id, None, endpoint, 0, 0, status=status)


async def _failed(gw: Any, call: Call, model: RoutedModel, endpoint: str, e: EngineError) -> JSONResponse:
    await _unanswered(gw, call, model, endpoint, e.status)
    retry = getattr(e, "retry_after_s", None)
    headers = {"Retry-After": str(retry)} if retry and e.status == 503 else None
    return JSONResponse(error_body(e.message, e.type), status_code=e.status, headers=headers)


async def whole_response(gw: Any, model: RoutedModel, endpoint: str, req: dict[str, Any], call: Call) -> Response:
    key, vector, cached = await _from_cache(gw, model, endpoint, req, call)
    if cached is not None:
        backend_name, answer, headers = cached
        return JSONResponse(answer, headers={BACKEND_HEADER: backend_name, **headers})
    try:
        backend, resp = await _generate_choices(gw, model, endpoint, req, call.route_user)
    except EngineError as e:
        return await _failed(gw, call, model, endpoint, e)
    resp["model"] = model.config.id
    conform(resp, endpoint)
    n_in, n_out = _usage(resp)
    await account(gw, call, model, backend.name, endpoint, n_in, n_out)
    await _keep(gw, key, vector, model, endpoint, req, call, backend.name, resp)
    cached_kind = key is not None or vector is not None
    headers = {BACKEND_HEADER: backend.name, **({"x-conductor-cache": "miss"} if cached_kind else {})}
    return JSONResponse(resp, headers=headers)


Cached = tuple[str, dict[str, Any], dict[str, str]]  # (backend, the whole answer, the x-conductor-cache headers)


async def _from_cache(gw: Any, model: RoutedModel, endpoint: str, req: dict[str, Any], call: Call
                      ) -> tuple[str | None, list[float] | None, Cached | None]:
    """(the exact cache's key and the prompt's vector, under which a fresh answer is kept, each None where that
    cache does not apply; the cached answer, or None). A hit is settled here, at its tokens, as a cached answer.
    Streamed or whole, a request has one key: the caches hold whole answers and a stream replays one."""
    if not call.cache_write and not call.cache_read:  # `Cache-Control: no-cache, no-store`: the caches are not met
        return None, None, None
    key = cache_key(endpoint, model.config.id, req, call.user)
    hit = await gw.cache.get(key) if call.cache_read else None
    if key is not None:
        gw.metrics.cache_requests.inc(model=model.config.id, outcome="hit" if hit is not None else
                                      "miss" if call.cache_read else "bypass")
    if hit is not None:
        gw.metrics.cache_hits.inc(model=model.config.id)
        await gw.accounting.finish(call, model.config.id, hit[0], endpoint, *_usage(hit[1]), cache="hit")
        return key, None, (hit[0], hit[1], {"x-conductor-cache": "hit"})
    vector, similar = await _semantic_lookup(gw, model, endpoint, req, call)
    if not call.cache_write:
        return None, None, similar
    return key, vector, similar


async def _keep(gw: Any, key: str | None, vector: list[float] | None, model: RoutedModel, endpoint: str,
                req: dict[str, Any], call: Call, backend: str, resp: dict[str, Any]) -> None:
    await gw.cache.put(key, backend, resp)
    if vector is not None:
        await _semantic_store(gw, vector, model, endpoint, req, call, backend, resp)


async def _semantic_lookup(gw: Any, model: RoutedModel, endpoint: str, req: dict[str, Any], call: Call
                           ) -> tuple[list[float] | None, Cached | None]:
    """(the prompt's vector to store the answer under, or None; the cached answer of a prompt that means the same,
    or None). A cache that fails (the embedder restarting) costs a miss, never the request."""
    sem, mid = gw.semantic, model.config.id
    if not sem.eligible(mid, req):
        return None, None
    try:
        vector, found = await sem.lookup(endpoint, mid, req, call.user)
    except Exception as e:  # noqa: BLE001
        gw.metrics.cache_requests.inc(model=mid, outcome="semantic_error")
        log.warning("semantic cache lookup failed (%s); answering without it", type(e).__name__)
        return None, None
    if found is None or not call.cache_read:
        gw.metrics.cache_requests.inc(model=mid, outcome="semantic_miss" if call.cache_read else "semantic_bypass")
        return vector, None
    backend, answer, similarity = found
    gw.metrics.cache_requests.inc(model=mid, outcome="semantic")
    await gw.accounting.finish(call, mid, backend, endpoint, *_usage(answer), cache="semantic")
    return vector, (backend, answer, {"x-conductor-cache": "semantic",
                                      "x-conductor-cache-similarity": f"{similarity:.4f}"})


async def _semantic_store(gw: Any, vector: list[float], model: RoutedModel, endpoint: str, req: dict[str, Any],
                          call: Call, backend: str, resp: dict[str, Any]) -> None:
    try:
        await gw.semantic.store(vector, endpoint, model.config.id, req, call.user, backend, resp)
    except Exception as e:  # noqa: BLE001 - not cached this time
        log.warning("semantic cache store failed (%s)", type(e).__name__)


async def _generate_choices(gw: Any, model: RoutedModel, endpoint: str, req: dict[str, Any], user: str
                            ) -> tuple[Any, dict]:
    """One generation per choice (n > 1 fans out, each with its own seed): one backend's answer, choices merged."""
    n = int(req.pop("n", None) or 1)
    if n == 1:
        return await gw.router.call(model, endpoint, req, user)
    seeds = [None if req.get("seed") is None else req["seed"] + i for i in range(n)]
    results = await asyncio.gather(*(gw.router.call(model, endpoint, {**req, "seed": seed} if seed is not None
                                                    else req, user) for seed in seeds))
    backend, resp = results[0]
    resp["choices"] = [{**c, "index": i} for i, (_, r) in enumerate(results) for c in r.get("choices", [])[:1]]
    outs = sum(_usage(r)[1] for _, r in results)
    n_in = _usage(resp)[0]
    resp["usage"] = {"prompt_tokens": n_in, "completion_tokens": outs, "total_tokens": n_in + outs}
    return backend, resp


def conform(resp: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Fields OpenAI's schema marks required (null where they do not apply): typed clients reject a response
    without them, whichever engine made it."""
    chat = endpoint == "chat"
    for choice in resp.get("choices") or []:
        choice.setdefault("logprobs", None)
        if "delta" in choice or resp.get("object") == "chat.completion.chunk":
            choice.setdefault("delta", {})
        elif chat:
            message = choice.setdefault("message", {})
            message.setdefault("role", "assistant")
            message.setdefault("content", None)
            message.setdefault("refusal", None)
        else:
            choice.setdefault("text", "")
    return resp


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _replayed(cached: Cached, endpoint: str, with_usage: bool) -> StreamingResponse:
    """A cached whole answer, sent as the stream that was asked for."""
    backend, answer, headers = cached
    body = b"".join(sse(c) for c in as_chunks(answer, endpoint, with_usage)) + b"data: [DONE]\n\n"

    async def once() -> AsyncIterator[bytes]:
        yield body

    return StreamingResponse(once(), media_type="text/event-stream",
                             headers={BACKEND_HEADER: backend, "cache-control": "no-cache", **headers})


async def stream_response(gw: Any, model: RoutedModel, endpoint: str, req: dict[str, Any], call: Call) -> Response:
    wants_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    key, vector, cached = await _from_cache(gw, model, endpoint, req, call)
    if cached is not None:
        return _replayed(cached, endpoint, wants_usage)
    try:
        backend, first, rest, deadline = await gw.router.open_stream(model, endpoint, req, call.route_user)
    except EngineError as e:
        return await _failed(gw, call, model, endpoint, e)
    mid = model.config.id
    # A greedy stream that ends by itself is kept whole, as a whole answer would be (stream_cache.py).
    whole = StreamAssembler(endpoint) if key is not None or vector is not None else None

    async def events() -> AsyncIterator[bytes]:
        n_in = n_out = 0
        sent = 0  # content chunks sent: one token each from the engines here; the charge if usage never came
        status = CLIENT_CLOSED  # until the stream ends by itself
        first_token_seen = False
        batches: AsyncIterator[list[dict[str, Any]]] = _prepend(first, rest)
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    # The request's one deadline covers the whole stream, not only its first token.
                    batch = await asyncio.wait_for(batches.__anext__(), timeout=max(left, 0.001))
                except StopAsyncIteration:
                    status = 200
                    break
                except asyncio.TimeoutError:
                    status = 504
                    gw.metrics.errors.inc(model=mid, backend=backend.name, endpoint=endpoint, kind="deadline")
                    yield sse(error_body(f"the request deadline of {gw.router.request_timeout_s:.0f}s passed "
                                         "mid-stream", "timeout_error", "deadline_exceeded"))
                    return
                except Exception as e:  # the backend broke mid-stream: say so in-band and charge the backend
                    err = e if isinstance(e, EngineError) else EngineError(503, f"{type(e).__name__}: {e}"[:300])
                    status = err.status
                    await gw.router.stream_failed(model, backend, endpoint, err)
                    yield sse(error_body(f"the backend failed mid-stream: {err.message}", err.type, "stream_failed"))
                    return
                out = []
                for chunk in batch:  # OpenAI chunks only: backends raise their typed failures (router.py)
                    chunk["model"] = mid
                    conform(chunk, endpoint)
                    if whole is not None:
                        whole.add(chunk)
                    if chunk.get("usage"):
                        n_in, n_out = _usage(chunk)
                        if not wants_usage:  # counted for metrics and cost; sent only when asked for, as OpenAI does
                            if not chunk.get("choices"):
                                continue
                            chunk.pop("usage")
                    has_text = any((c.get("delta") or {}).get("content") or c.get("text")
                                   for c in chunk.get("choices", []))
                    sent += has_text
                    if has_text and not first_token_seen:
                        first_token_seen = True
                        call.ttft_s = time.perf_counter() - call.t0
                        gw.metrics.ttft.observe(call.ttft_s, model=mid, backend=backend.name,
                                                variant=gw.router.variant_of(model, backend.name))
                    out.append(sse(chunk))
                yield b"".join(out)  # one write per batch: coalesced tokens stay coalesced on the wire
            yield b"data: [DONE]\n\n"
        finally:
            # A stream cut short never carries the engine's usage: it is charged for the tokens it was sent.
            await to_the_end(ended(batches, n_in, n_out or sent, status))

    async def ended(batches: Any, n_in: int, n_out: int, status: int) -> None:
        """Once per stream, however it ended: closing the handle stream cancels the generation in the replica (a
        client that left frees its slot), the backend leaves the in-flight count, the request is settled."""
        if once:
            return
        once.append(True)  # before the first await: the body's end and the background clean-up may overlap
        await _aclose(batches)
        await gw.router.release(backend)
        await account(gw, call, model, backend.name, endpoint, n_in, n_out, status)
        answer = whole.whole() if whole is not None and status == 200 else None
        if answer is not None:
            await _keep(gw, key, vector, model, endpoint, req, call, backend.name, conform(answer, endpoint))

    once: list[bool] = []

    async def if_never_read() -> None:
        """The client left before the body was read, so `events` never ran (nothing was delivered)."""
        await to_the_end(ended(rest, 0, 0, CLIENT_CLOSED))

    from starlette.background import BackgroundTask

    return ClosingStreamingResponse(events(), media_type="text/event-stream",
                                    background=BackgroundTask(if_never_read),
                                    headers={BACKEND_HEADER: backend.name, "cache-control": "no-cache",
                                             **({"x-conductor-cache": "miss"} if whole is not None else {})})


class ClosingStreamingResponse(StreamingResponse):
    """A stream whose body is closed however the response ends. A request cancelled while its body generator
    waits at a `yield` (its `send` blocked: a slow client under uvicorn, Serve's direct ingress) leaves that
    generator to the garbage collector, and with it the `finally` that settles the key, logs the spend row and
    frees the backend: minutes later, or never."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        background, self.background = self.background, None
        try:
            await super().__call__(scope, receive, send)
        finally:
            await to_the_end(self._closed(background))

    async def _closed(self, background: Any) -> None:
        await _aclose(self.body_iterator)  # runs the generator's `finally` where it stopped; no-op once it ended
        if background is not None:
            await background()  # the clean-up for a body that was never read


async def _aclose(gen: Any) -> None:
    try:
        await gen.aclose()
    except BaseException:  # noqa: BLE001 - closing a stream that already broke
        pass


async def _prepend(first: list[dict[str, Any]], rest: AsyncIterator[list[dict[str, Any]]]
                   ) -> AsyncIterator[list[dict[str, Any]]]:
    try:
        if first:
            yield first
        async for batch in rest:
            yield batch
    finally:
        await _aclose(rest)


async def embeddings_response(gw: Any, parsed: EmbeddingRequest, call: Call) -> Response:
    cfg = gw.config.embeddings
    if parsed.model not in (None, cfg.id):
        raise APIError(404, f"embedding model {parsed.model!r} does not exist; available: [{cfg.id!r}]",
                       code="model_not_found", param="model")
    gw.accounting.check_model(call, cfg.id)
    texts = [parsed.input] if isinstance(parsed.input, str) else parsed.input
    if len(texts) > cfg.max_inputs:
        raise APIError(400, f"input has {len(texts)} items; the limit is {cfg.max_inputs}", param="input")
    # A replica that dies mid-call: asked again (the other replica, or its restart) as the router does for models.
    try:
        result = await call_deployment(lambda: gw.embedder.embed.remote(texts), "embeddings",
                                       gw.router.restart_grace_s, gw.router.request_timeout_s)
    except Unanswered as e:
        return e.response()
    vecs, tokens = np.asarray(result.vectors, dtype=np.float32), int(result.tokens)
    if parsed.dimensions is not None and vecs.shape[-1] != parsed.dimensions:
        raise APIError(400, f"model {cfg.id!r} makes {vecs.shape[-1]}-dimensional embeddings; it cannot return "
                            f"{parsed.dimensions}", param="dimensions")
    gw.metrics.requests.inc(model=cfg.id, backend="embedder", endpoint="embeddings", status="ok")
    gw.metrics.latency.observe(time.perf_counter() - call.t0, model=cfg.id, backend="embedder", endpoint="embeddings")
    gw.metrics.tokens_in.inc(tokens, model=cfg.id, backend="embedder")
    await gw.accounting.finish(call, cfg.id, "embedder", "embeddings", tokens, 0)
    if parsed.encoding_format == "base64":  # what the openai SDK asks for by default: float32 little-endian
        out: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vecs]
    else:
        out = vecs.tolist()
    return JSONResponse({"object": "list", "model": cfg.id,
                         "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(out)],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                        headers={BACKEND_HEADER: "embedder"})
