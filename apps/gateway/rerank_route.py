"""/v1/rerank and /v2/rerank: score documents against a query with the configured `reranker`
(deployments/reranker.py).

Cohere's and Jina's protocol, which LiteLLM's proxy also speaks: `{model, query, documents, top_n,
return_documents}` -> `{id, model, results: [{index, relevance_score, document?}], usage}`, best first; `usage`
counts the tokens the model read, charged to the caller as input tokens. Without a
configured reranker the route answers 404 (no such model), as an unknown model does.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from apps.common import APIError, error_body, read_json_body
from apps.gateway.accounting import Call
from apps.gateway.router import Unanswered, call_deployment
from apps.gateway.schemas import RerankRequest, validate

BACKEND = "reranker"


def add_rerank_route(app: FastAPI, gw: Any) -> None:
    async def rerank(request: Request) -> Response:
        parsed = validate(RerankRequest, await read_json_body(request, gw.config.server.max_body_bytes))
        return await rerank_response(gw, parsed, Call.of(request))

    # Cohere's SDK calls /v1/rerank from `Client` and /v2/rerank from `ClientV2`; what they send is the same here.
    for path in ("/v1/rerank", "/v2/rerank"):
        app.add_api_route(path, rerank, methods=["POST"], name=f"rerank {path[1:3]}")


async def rerank_response(gw: Any, parsed: RerankRequest, call: Call) -> Response:
    cfg = gw.config.reranker
    if cfg is None or gw.reranker is None:
        raise APIError(404, "this server has no reranker (set `reranker` in its config)", code="model_not_found",
                       param="model")
    if parsed.model not in (None, cfg.id):
        raise APIError(404, f"rerank model {parsed.model!r} does not exist; available: [{cfg.id!r}]",
                       code="model_not_found", param="model")
    gw.accounting.check_model(call, cfg.id)
    texts = parsed.texts()
    if len(texts) > cfg.max_documents:
        raise APIError(400, f"documents has {len(texts)} items; the limit is {cfg.max_documents}",
                       param="documents")
    try:  # the deadline cancels the call, and a cancelled call stops the model (deployments/reranker.py)
        result = await call_deployment(lambda: gw.reranker.score.remote(parsed.query, texts), "rerank",
                                       gw.router.restart_grace_s, gw.router.request_timeout_s)
    except Unanswered as e:
        return e.response()
    if result.error:
        gw.metrics.requests.inc(model=cfg.id, backend=BACKEND, endpoint="rerank", status="error")
        return JSONResponse(error_body(result.error, "service_unavailable"), status_code=503)
    gw.metrics.requests.inc(model=cfg.id, backend=BACKEND, endpoint="rerank", status="ok")
    gw.metrics.latency.observe(time.perf_counter() - call.t0, model=cfg.id, backend=BACKEND, endpoint="rerank")
    gw.metrics.tokens_in.inc(result.tokens, model=cfg.id, backend=BACKEND)
    await gw.accounting.finish(call, cfg.id, BACKEND, "rerank", result.tokens, 0)
    order = sorted(range(len(texts)), key=lambda i: -result.scores[i])[:parsed.top_n or len(texts)]
    results = [{"index": i, "relevance_score": result.scores[i],
                **({"document": {"text": texts[i]}} if parsed.return_documents else {})} for i in order]
    # Jina's, vLLM's and llama.cpp's servers report `usage` so; Cohere's SDK reads past it.
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return JSONResponse({"id": f"rerank-{secrets.token_hex(12)}", "model": cfg.id, "results": results,
                         "usage": usage}, headers={"x-conductor-backend": BACKEND})
