"""The embeddings deployment: sentence-transformers behind Serve dynamic batching.

Concurrent requests are merged by `@serve.batch` into one encode call (the model is far faster per text in
batches), then split back so each caller gets its own rows, in its own order. A batch is sized in texts, not
requests (`batch_size_fn`): 64 requests of one text and one request of 64 texts are the same work. A request larger
than a batch is split into batch-sized pieces that queue beside everyone else's. Tokens are counted from the
encode's own attention masks, so each text is tokenized once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from cluster.config import EmbeddingsConfig


@dataclass(frozen=True)
class Embeddings:
    """One request's answer: L2-normalised float32 rows in input order (an ndarray is cheap to ship) and the
    request's share of the batch's tokens."""

    vectors: np.ndarray
    tokens: int


def _texts_in(requests: list[list[str]]) -> int:
    return sum(len(texts) for texts in requests)


class Embedder:
    def __init__(self, config: dict[str, Any]):
        import torch

        from cluster.memory import keep_freed_memory
        from deployments.embedder_local import LocalEmbedder

        self.config = EmbeddingsConfig.model_validate(config)
        keep_freed_memory()  # the replica's process is the model's own (cluster/memory.py: +8-15% texts/s)
        torch.set_num_threads(self.config.threads)  # Ray sets OMP_NUM_THREADS=1 for fractional-CPU actors
        self.local = LocalEmbedder(self.config.model)
        self.embed_batch.set_max_batch_size(self.config.max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=_texts_in)
    async def embed_batch(self, requests: list[list[str]]) -> list["Embeddings"]:
        flat = [t for texts in requests for t in texts]
        vecs, tokens = await asyncio.to_thread(self.local.embed_counted, flat, self.config.max_batch_size)
        out, i = [], 0
        for texts in requests:
            n = len(texts)
            share = tokens * n // max(1, len(flat))
            out.append(Embeddings(vecs[i:i + n], share))
            i += n
        return out

    async def embed(self, texts: list[str]) -> "Embeddings":
        step = self.config.max_batch_size
        if len(texts) <= step:
            return await self.embed_batch(texts)
        parts = await asyncio.gather(*(self.embed_batch(texts[i:i + step]) for i in range(0, len(texts), step)))
        return Embeddings(np.concatenate([p.vectors for p in parts]), sum(p.tokens for p in parts))

    def info(self) -> dict[str, Any]:
        return {"id": self.config.id, "dim": self.local.dim, "max_tokens": self.local.max_tokens}


def embedder_deployment(cfg: EmbeddingsConfig) -> Any:
    # A replica must accept at least a full batch of concurrent callers for @serve.batch to fill it.
    options = cfg.resources.serve_options(
        "Embedder", max_ongoing_requests=max(cfg.resources.max_ongoing_requests, cfg.max_batch_size))
    return serve.deployment(Embedder).options(**options).bind(cfg.model_dump())
