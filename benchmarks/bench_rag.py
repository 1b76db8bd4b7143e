"""RAG benchmarks: ingestion throughput (Ray Data vs a plain single-process loop, and Conductor vs encode + upsert on
python3-doc's manual) and the embedded store engines (qdrant-edge vs qdrant-client local). Retrieval quality is its
own area: benchmarks/bench_rag_quality.py.

`python -m benchmarks.run --only rag [--quick]`. Quick: the first 40 FAQ questions, a smaller store test.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _row(name: str, conductor: float, baseline: float, unit: str, goal: str, notes: str,
         higher: bool = True) -> dict[str, Any]:
    return {"name": name, "conductor": round(conductor, 4), "baseline": round(baseline, 4), "unit": unit,
            "higher_is_better": higher, "goal": goal, "notes": notes}


def _ingest_rows(svc: Any, docs: Path, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import ray

    t = svc.ingest([str(docs)], "faq")  # plain loop: also builds the collection the retrieval rows use
    local_rate = t.chunks / t.seconds
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        r = svc.ingest([str(docs)], "faq_ray", engine="ray", actors=2)
    finally:
        if started:
            ray.shutdown()
    ray_rate = r.chunks / r.seconds
    note = (f"{r.chunks} chunks of {len(r.added)} docs, {os.cpu_count()} cores; Ray Data 2 embedding actors, "
            "pipeline start-up included (cluster start excluded)")
    return [_row("ingestion throughput: Ray Data vs single-process loop", ray_rate, local_rate, "chunks/s",
                 "scales out; on one small box ≈ loop", note)], {"chunks": t.chunks}


MANUAL = Path("/usr/share/doc/python3.11/html")  # python3-doc's HTML manual: 530 pages


def _manual_ingest_rows(svc: Any, quick: bool) -> list[dict[str, Any]]:
    """Conductor's ingestion (hash, parse, chunk, embed, sparse-encode, upsert) against the model and the store
    alone: sentence-transformers encoding the very same chunk texts (batch 64) and the store's upsert of the same
    points. Split in halves and run ABBA -- baseline, Conductor, Conductor, baseline -- so drift on a shared box
    loads both sides alike without doing the work twice."""
    from apps.rag.ingest import SparseEncoder, chunk_rows, document_hash, rows_to_points
    from deployments.embedder_local import shared_embedder

    pages = sorted(str(p) for p in MANUAL.rglob("*.html"))[: 60 if quick else None]
    settings = {"chunking": svc.cfg.chunking, "chunk_size": svc.cfg.chunk_size, "chunk_overlap": svc.cfg.chunk_overlap}
    halves = [pages[: len(pages) // 2], pages[len(pages) // 2:]]
    emb = shared_embedder(svc.cfg.embedding_model)
    model, sparse = emb.model, SparseEncoder()
    rows = {}
    for half in (0, 1):  # the baseline's input, prepared untimed: the same chunks Conductor will make
        rows[half] = [r for p in halves[half] for r in chunk_rows(p, Path(p).read_bytes(),
                                                                  document_hash(Path(p).read_bytes(), p), settings)]
    base_store_coll, t_base, t_ours, n_ours = "manual_base", 0.0, 0.0, 0
    svc.store.create_collection(base_store_coll, emb.dim, {"embedding_model": svc.cfg.embedding_model})
    sp = {h: [sparse.document(r["embed_text"]) for r in rows[h]] for h in (0, 1)}

    def baseline(h: int) -> float:
        t0 = time.perf_counter()
        texts = [r["embed_text"] for r in rows[h]]
        for i in range(0, len(texts), 64):
            vecs = model.encode(texts[i:i + 64], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            svc.store.upsert(base_store_coll, rows_to_points(rows[h][i:i + 64], vecs, sp[h][i:i + 64]))
        return time.perf_counter() - t0

    def ours(h: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        rep = svc.ingest(halves[h], "manual")
        return time.perf_counter() - t0, rep.chunks

    t_base += baseline(0)
    for h in (0, 1):
        dt, n = ours(h)
        t_ours, n_ours = t_ours + dt, n_ours + n
    t_base += baseline(1)
    n_base = len(rows[0]) + len(rows[1])
    return [_row(f"RAG ingestion, python3-doc HTML manual ({len(pages)} pages): Conductor vs encode + upsert",
                 n_ours / t_ours, n_base / t_base, "chunks/s", ">= 0.8x",
                 f"{n_ours} chunks (baseline {n_base}); Conductor {t_ours:.0f} s: discover, hash, parse HTML, chunk, "
                 f"embed (batches of 64 across pages), BM25 sparse, upsert; baseline {t_base:.0f} s: "
                 "sentence-transformers encode of the same chunk texts + upsert of the same points; ABBA halves; "
                 f"torch threads {__import__('torch').get_num_threads()} both sides")]


def _store_rows(n: int) -> list[dict[str, Any]]:
    import numpy as np

    from deployments.vectorstore import ClientStore, EdgeStore, StorePoint, point_id

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pts = [StorePoint(point_id("bench", str(i)), vecs[i].tolist(),
                      (sorted(rng.choice(50_000, 20, replace=False).tolist()), [1.0] * 20),
                      {"source": f"doc{i % 100}", "text": "x" * 200}) for i in range(n)]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for name, store in (("edge", EdgeStore(Path(d) / "e")), ("client-local", ClientStore(path=Path(d) / "c"))):
            store.create_collection("b", 384, {"embedding_model": "bench"})
            t0 = time.perf_counter()
            for i in range(0, n, 256):
                store.upsert("b", pts[i:i + 256])
            up = n / (time.perf_counter() - t0)
            lat = []
            for q in vecs[:30]:
                t0 = time.perf_counter()
                store.query("b", q.tolist(), None, "dense", 10, 40)
                lat.append(1000 * (time.perf_counter() - t0))
            results[name] = (up, statistics.median(lat))
            store.close()
    note = f"{n} points, 384-d cosine + sparse, batches of 256 (flushed each), top-10"
    return [_row("embedded store upsert: qdrant-edge vs qdrant-client local", results["edge"][0],
                 results["client-local"][0], "points/s", "edge faster -> default", note),
            _row("embedded store search p50: qdrant-edge vs qdrant-client local", results["edge"][1],
                 results["client-local"][1], "ms", "edge faster -> default", note, higher=False)]


def run(quick: bool = False) -> list[dict[str, Any]]:
    from apps.rag import faq
    from apps.rag.library import RagService
    from cluster.config import load_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not faq.available():
        raise RuntimeError("python3-doc is not installed: apt-get install -y python3-doc")
    with tempfile.TemporaryDirectory() as tmp:
        qfile = faq.build_faq_set(Path(tmp) / "faq", limit=40 if quick else None)
        svc = RagService(load_config(environ={"CONDUCTOR__RAG__DATA_DIR": str(Path(tmp) / "store")}))
        try:
            rows, _ = _ingest_rows(svc, qfile.parent / "docs", quick)
            if MANUAL.is_dir():
                rows += _manual_ingest_rows(svc, quick)
        finally:
            svc.close()
    return rows + _store_rows(1000 if quick else 5000)


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
