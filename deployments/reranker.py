"""The rerank deployment: one model (deployments/rerankers.py) that the gateway's /v1/rerank and RAG's
`rag.reranker: gateway` share, so a reranker is loaded once however many callers use it.

A model that cannot be loaded does not stop the replica (the gateway would not start): each call answers
`RerankerUnavailable` with the reason, which the gateway turns into a 503.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from ray import serve

from cluster.config import RerankerConfig
from deployments.rerankers import RerankerUnavailable, RerankModel, open_rerank_model
from deployments.secrets import read_secret


@dataclass(frozen=True)
class Reranked:
    """One call's answer: a score per document in their order, or why the reranker could not give them (the
    server's fault: the gateway answers 503 with it)."""

    scores: list[float]
    error: str = ""
    tokens: int = 0  # what the model read, for usage and the caller's token limits (0: it did not say)


class Reranker:
    def __init__(self, config: dict[str, Any]):
        self.config = cfg = RerankerConfig.model_validate(config)
        self.model: RerankModel | None = None
        self.error = ""
        try:
            self.model = open_rerank_model(cfg.model, cfg.remote_model, read_secret(cfg.api_key_env), cfg.threads)
        except RerankerUnavailable as e:
            self.error = str(e)

    async def score(self, query: str, documents: list[str]) -> Reranked:
        """A score per document. A cancelled call (the caller left, or its deadline passed) stops the model within
        one group of pairs."""
        if self.model is None:
            return Reranked([], self.error)
        stop = threading.Event()
        try:
            scores, tokens = await asyncio.to_thread(self.model.score_counted, query, documents, stop)
            return Reranked(scores, tokens=tokens)
        except RerankerUnavailable as e:
            return Reranked([], str(e))
        except asyncio.CancelledError:
            stop.set()
            raise


def reranker_deployment(cfg: RerankerConfig) -> Any:
    from deployments.secrets import with_secrets

    # A rerank URL's key goes to this deployment's replicas only.
    options = with_secrets(cfg.resources.serve_options("Reranker"), [cfg.api_key_env])
    return serve.deployment(Reranker).options(**options).bind(cfg.model_dump())
