"""Retrieval: dense, BM25 sparse, or hybrid (Qdrant prefetch + RRF), then an optional rerank stage.

Every hit carries its dense cosine to the question (computed from the stored vector), whatever the mode: RRF
scores are rank-based and say nothing about relevance, so the low-relevance warning uses the cosine.

Rerank: a local sentence-transformers CrossEncoder when `rag.reranker` names one (none ships in a package here);
otherwise the built-in rescoring of the fused candidates: dense cosine plus a bonus for the share of the query's
BM25 terms the passage contains (what RRF's rank-only view throws away).
"""

from __future__ import annotations

import math

from typing import Any, Literal

from pydantic import BaseModel, Field

from deployments.vectorstore import StoreHit

MODES = ("dense", "sparse", "hybrid")


class SearchParams(BaseModel):
    k: int = Field(5, ge=1, le=100, description="Passages to return.")
    mode: Literal["dense", "sparse", "hybrid"] = Field("hybrid", description="Retriever(s) to use.")
    rerank: bool = Field(False, description="Rescore the fused candidates before cutting to k.")
    fetch_k: int | None = Field(None, ge=1, le=1000, description="Candidates per retriever; default from config.")
    rrf_k: int | None = Field(None, ge=1, description="RRF constant; default from config.")
    dense_weight: float | None = Field(None, gt=0, description="RRF weight of the dense retriever; default from config.")
    sparse_weight: float | None = Field(None, gt=0, description="RRF weight of the BM25 retriever; default from config.")


class Hit(BaseModel):
    source: str = Field(description="The document's path as ingested.")
    score: float = Field(description="Score of the retrieval mode used (cosine, BM25, RRF or rerank score).")
    dense_score: float = Field(description="Cosine between the question and the passage.")
    text: str = Field(description="The passage.")
    title: str = Field("", description="Document title.")
    section: str = Field("", description="Heading path of the passage.")
    start: int = Field(0, description="Character offset of the passage in the parsed document.")
    end: int = Field(0, description="End offset (exclusive).")
    chunk_index: int = Field(0, description="Position of the chunk in its document.")


def _cos(a: list[float] | None, b: Any) -> float:
    if a is None:
        return 0.0
    import numpy as np

    a_, b_ = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    n = float(np.linalg.norm(a_) * np.linalg.norm(b_))
    return float(a_ @ b_ / n) if n else 0.0


def to_hit(h: StoreHit, qvec: Any, score: float | None = None) -> Hit:
    p = h.payload
    return Hit(source=p.get("source", ""), score=h.score if score is None else score, dense_score=_cos(h.dense, qvec),
               text=p.get("text", ""), title=p.get("title", ""), section=p.get("section", ""),
               start=int(p.get("start", 0)), end=int(p.get("end", 0)), chunk_index=int(p.get("chunk_index", 0)))


class Reranker:
    def __init__(self, model_dir: str | None, sparse: Any, lexical_weight: float = 0.1):
        self.sparse = sparse
        self.lexical_weight = lexical_weight
        self.cross = None
        if model_dir:
            from sentence_transformers import CrossEncoder

            self.cross = CrossEncoder(model_dir, device="cpu")

    def rescore(self, question: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        if self.cross is not None:
            scores = [float(s) for s in self.cross.predict([(question, h.text) for h in hits])]
        else:
            # IDF over the candidate pool: a query term few candidates contain (an error code, an identifier)
            # decides more than one they all share.
            q_terms = set(self.sparse.query(question)[0])
            docs = [set(self.sparse.document(h.text)[0]) for h in hits]
            n = len(docs)
            idf = {t: math.log((n + 1) / (sum(t in d for d in docs) + 0.5)) for t in q_terms}
            total = sum(idf.values()) or 1.0
            scores = [h.dense_score + self.lexical_weight * sum(idf[t] for t in q_terms & d) / total
                      for h, d in zip(hits, docs)]
        ranked = sorted(zip(scores, hits), key=lambda t: -t[0])
        return [h.model_copy(update={"score": s}) for s, h in ranked]


def rrf_fuse(lists: list[list[StoreHit]], k: int, weights: tuple[float, ...]) -> list[tuple[StoreHit, float]]:
    """Weighted reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1.

    Hits with equal scores in one list share the mean of their ranks: BM25 gives look-alike passages identical
    scores, and the store's order among them is arbitrary (it changes with insertion order), so plain positions
    would let that arbitrary order decide the fused ranking."""
    scores: dict[str, float] = {}
    first: dict[str, StoreHit] = {}
    for hits, w in zip(lists, weights):
        for rank, h in zip(_tied_ranks([h.score for h in hits]), hits):
            scores[h.id] = scores.get(h.id, 0.0) + w / (k + rank)
            if h.id not in first or (first[h.id].dense is None and h.dense is not None):
                first[h.id] = h
    return sorted(((first[i], s) for i, s in scores.items()), key=lambda t: -t[1])


def _tied_ranks(scores: list[float]) -> list[float]:
    """1-based ranks of a list sorted best first; a run of equal scores gets the mean rank of the run."""
    ranks: list[float] = []
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and scores[j + 1] == scores[i]:
            j += 1
        ranks += [(i + j) / 2 + 1] * (j - i + 1)
        i = j + 1
    return ranks


def search(store: Any, collection: str, question: str, qvec: Any, sparse: Any, params: SearchParams,
           defaults: Any, reranker: Reranker | None = None) -> list[Hit]:
    fetch_k = params.fetch_k or defaults.fetch_k
    limit = max(params.k, fetch_k) if params.rerank else params.k
    svec = sparse.query(question)
    dense = [float(x) for x in qvec]
    if params.mode == "hybrid":
        # Fused here rather than with Qdrant's Fusion.Rrf: qdrant-edge 0.9 does not scale each list's
        # contribution by its weight (measured: weights [5, 1] moved a rank-1 score from 1/60 to 1/59.2), and
        # weighted fusion is what lets a strong dense retriever and a weaker BM25 one combine into a better one.
        lists = [store.query(collection, dense, svec, m, max(fetch_k, limit), fetch_k) for m in ("dense", "sparse")]
        fused = rrf_fuse(lists, params.rrf_k or defaults.rrf_k, (params.dense_weight or defaults.dense_weight,
                                                                  params.sparse_weight or defaults.sparse_weight))
        hits = [to_hit(h, qvec, score) for h, score in fused[:limit]]
    else:
        hits = [to_hit(h, qvec) for h in store.query(collection, dense, svec, params.mode, limit, fetch_k)]
    if params.rerank and reranker is not None:
        hits = reranker.rescore(question, hits)
    return hits[: params.k]
