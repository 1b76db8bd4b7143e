"""Retrieval: dense, BM25 sparse, or hybrid, then an optional rerank stage; documents first, then their passages.

Hybrid ranks *documents*: four retrievers -- chunk dense, chunk BM25, and, for collections that have them, the
document vectors (title + opening prose, dense) and BM25 over the whole document -- each give a ranking of
documents (a chunk list ranks a document by its best chunk), fused with weighted RRF. Measured on two sets
(BENCHMARKS.md, "RAG quality"): chunk-only fusion let long tutorials with many chunks crowd out the page a question
is about; the document-level signals put that page first far more often. Each document is represented by its best
passage (chunk-level RRF), which is what answers are written from.

Every hit carries its dense cosine to the question (computed from the stored vector), whatever the mode: RRF
scores are rank-based and say nothing about relevance, so the low-relevance warning uses the cosine.

Rerank: the model `rag.reranker` names -- a GGUF reranker run by llama.cpp, a sentence-transformers CrossEncoder
folder, or a rerank service over HTTP (deployments/rerankers.py; none ships in a package here); otherwise the
built-in rescoring of the fused candidates:
dense cosine plus a bonus for the share of the query's BM25 terms the passage contains (what RRF's rank-only view
throws away). Either way the first `rag.rerank_candidates` documents are rescored by their best passage.
"""

from __future__ import annotations

import math
import threading

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
    page: int | None = Field(None, description="1-based page of the passage (PDFs), else null.")
    doc_score: float | None = Field(None, description="Fused score of the passage's document (hybrid), else null.")


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
               start=int(p.get("start", 0)), end=int(p.get("end", 0)), chunk_index=int(p.get("chunk_index", 0)),
               page=p.get("page") or None)


class Reranker:
    """Rescores candidates: with the model `rag.reranker` names (library.rag_rerank_model), else with the built-in
    rescoring."""

    def __init__(self, model: Any, sparse: Any, lexical_weight: float = 0.1):
        """`model`: a deployments.rerankers.RerankModel, or None for the built-in rescoring."""
        self.sparse = sparse
        self.lexical_weight = lexical_weight
        self.model = model

    def rescore(self, question: str, hits: list[Hit], stop: threading.Event | None = None) -> list[Hit]:
        """`stop`: set when the request is cancelled; a model's scoring then ends with RerankCancelled."""
        if not hits:
            return hits
        if self.model is not None:
            scores = self.model.score(question, [h.text for h in hits], stop)
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


class DocumentHit(BaseModel):
    source: str = Field(description="The document's path as ingested.")
    title: str = Field("", description="Document title.")
    score: float = Field(description="Fused document score (hybrid), else the score of its best passage.")
    best: Hit = Field(description="The document's best passage.")
    ranks: dict[str, int] = Field(default_factory=dict, description="1-based rank in each retriever that found it.")


def _doc_ranks(hits: list[StoreHit]) -> list[tuple[str, float]]:
    """Documents in the order of their best hit, with tie-aware ranks (as in `rrf_fuse`): look-alike documents get
    equal BM25 scores, and the store's order among them is arbitrary."""
    best: dict[str, float] = {}
    for h in hits:
        best.setdefault(h.payload.get("source", ""), h.score)
    return list(zip(best, _tied_ranks(list(best.values()))))


def search_documents(store: Any, collection: str, question: str, qvec: Any, sparse: Any, params: SearchParams,
                     defaults: Any, reranker: Reranker | None = None, doc_index: bool = False,
                     stop: threading.Event | None = None) -> list[DocumentHit]:
    """The k best documents, each with its best passage."""
    fetch_k = params.fetch_k or defaults.fetch_k
    svec, dense = sparse.query(question), [float(x) for x in qvec]
    if params.mode != "hybrid":
        best: dict[str, Hit] = {}
        for h in store.query(collection, dense, svec, params.mode, fetch_k, fetch_k):
            best.setdefault(h.payload.get("source", ""), to_hit(h, qvec))
        if params.rerank and reranker is not None:
            n = max(params.k, defaults.rerank_candidates)
            hits = list(best.values())
            best = {h.source: h for h in reranker.rescore(question, hits[:n], stop) + hits[n:]}
        return [DocumentHit(source=s, title=h.title, score=h.score, best=h) for s, h in list(best.items())[: params.k]]
    # Fused here rather than with Qdrant's Fusion.Rrf: qdrant-edge 0.9 does not scale each list's contribution by
    # its weight (measured: weights [5, 1] moved a rank-1 score from 1/60 to 1/59.2).
    wd, ws = params.dense_weight or defaults.dense_weight, params.sparse_weight or defaults.sparse_weight
    lists = {"chunk_dense": store.query(collection, dense, svec, "dense", fetch_k, fetch_k),
             "chunk_bm25": store.query(collection, dense, svec, "sparse", fetch_k, fetch_k)}
    weights = {"chunk_dense": wd, "chunk_bm25": ws}
    if doc_index:
        wdoc = defaults.doc_weight
        lists["doc_dense"] = store.query(collection, dense, svec, "dense", fetch_k, fetch_k, level="doc")
        lists["doc_bm25"] = store.query(collection, dense, svec, "sparse", fetch_k, fetch_k, level="doc")
        weights.update(doc_dense=wd * wdoc, doc_bm25=ws * wdoc)
    passages = rrf_fuse([lists["chunk_dense"], lists["chunk_bm25"]], params.rrf_k or defaults.rrf_k, (wd, ws))
    best = {}
    for h, score in passages:
        best.setdefault(h.payload.get("source", ""), to_hit(h, qvec, score))
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    k = defaults.doc_rrf_k
    for name, hits in lists.items():
        for src, rank in _doc_ranks(hits):
            scores[src] = scores.get(src, 0.0) + weights[name] / (k + rank)
            ranks.setdefault(src, {})[name] = int(rank)
    order = sorted(scores, key=lambda s_: -scores[s_])
    if params.rerank and reranker is not None:
        order = _rerank_documents(question, order[: max(params.k, defaults.rerank_candidates)], best, reranker, k,
                                  stop)
    out = []
    for src in order[: params.k]:
        hit = best.get(src) or _best_passage(store, collection, src, dense, svec, qvec, fetch_k)
        if hit is not None:
            hit = hit.model_copy(update={"doc_score": scores[src]})
            out.append(DocumentHit(source=src, title=hit.title, score=scores[src], best=hit, ranks=ranks[src]))
    return out


def _rerank_documents(question: str, order: list[str], best: dict[str, Hit], reranker: Reranker, k: int,
                      stop: threading.Event | None) -> list[str]:
    """Rescore the candidates' best passages, then fuse that ranking with the document ranking (RRF): a passage
    scorer alone sees one passage per document and loses what the document-level retrievers knew."""
    have = [best[s] for s in order if s in best]
    reranked = {h.source: r for r, h in enumerate(reranker.rescore(question, have, stop), 1)}
    fused = {s: 1 / (k + r) + (1 / (k + reranked[s]) if s in reranked else 0.0) for r, s in enumerate(order, 1)}
    return sorted(order, key=lambda s: -fused[s])


def _best_passage(store: Any, collection: str, source: str, dense: list[float], svec: Any, qvec: Any,
                  fetch_k: int) -> Hit | None:
    """A document found only by its document vectors: its best chunk, searched inside it."""
    found = store.query(collection, dense, svec, "hybrid", 1, fetch_k, source=source)
    return to_hit(found[0], qvec) if found else None
