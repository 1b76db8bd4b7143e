"""Bulk ingestion on Ray Data: read+parse+chunk (`flat_map`) -> embed in an actor pool (`map_batches`) -> the
driver upserts each embedded batch (the embedded Qdrant store is single-writer, and streaming keeps memory flat).

Runs on whatever cluster the driver is connected to: a laptop's local Ray, or a cluster when submitted as a job
(`conductor job submit -- conductor rag ingest ... --engine ray`). Files must be readable from the workers (shared FS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.rag.ingest import BATCH, IngestReport, Progress, SparseEncoder, chunk_rows, finish_document, rows_to_points
from apps.rag.parsers import ParseError

_EMPTY = {"id": "", "source": "", "doc_hash": "", "doc_key": "", "title": "", "section": "", "start": 0, "end": 0,
          "chunk_index": 0, "n_chunks": 0, "kind": "", "text": "", "embed_text": "", "level": "chunk", "page": 0,
          "sparse_text": ""}


def _parse_row(row: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One file -> its chunk rows, or one row carrying the reason it was skipped (kept so the driver can report)."""
    try:
        rows = chunk_rows(row["path"], Path(row["path"]).read_bytes(), row["hash"], settings)
        return [dict(r, error="") for r in rows]
    except (ParseError, OSError) as e:
        return [dict(_EMPTY, source=row["path"], doc_hash=row["hash"], error=str(e) or type(e).__name__)]


class _Embed:
    """Actor: loads the embedder once, then embeds batches (dense + BM25 sparse)."""

    def __init__(self, model: str):
        from deployments.embedder_local import shared_embedder

        self.embedder = shared_embedder(model)
        self.sparse = SparseEncoder()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        texts = [str(t) for t in batch["embed_text"]]
        ok = [i for i, e in enumerate(batch["error"]) if not e]
        dense = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        if ok:
            dense[ok] = self.embedder.embed([texts[i] for i in ok])
        rows = [{"level": str(batch["level"][i]), "embed_text": t, "sparse_text": str(batch["sparse_text"][i])}
                for i, t in enumerate(texts)]
        sp = [self.sparse.row(r) if not batch["error"][i] else ([], []) for i, r in enumerate(rows)]
        batch["dense"] = dense
        batch["sp_idx"] = np.array([np.asarray(s[0], dtype=np.int64) for s in sp] + [None], dtype=object)[:-1]
        batch["sp_val"] = np.array([np.asarray(s[1], dtype=np.float32) for s in sp] + [None], dtype=object)[:-1]
        return batch


def ingest_ray(store: Any, collection: str, todo: list[tuple[str, str]], settings: dict[str, Any], model: str,
               report: IngestReport, state: dict[str, Any], progress: Progress | None,
               actors: int = 1, num_cpus: float = 1.0) -> None:
    import ray

    if not ray.is_initialized():
        # Join the cluster this process belongs to (a Ray job), else start a local one.
        ray.init(log_to_driver=False)  # RAY_ADDRESS, when a job sets it, is read by Ray itself
    keys = ["id", "source", "doc_hash", "doc_key", "title", "section", "start", "end", "chunk_index", "n_chunks",
            "kind", "text", "error", "level", "page"]
    ds = (ray.data.from_items([{"path": p, "hash": h} for p, h in todo], override_num_blocks=max(1, min(len(todo), 32)))
          .flat_map(_parse_row, fn_kwargs={"settings": settings})
          .map_batches(_Embed, fn_constructor_kwargs={"model": model}, batch_size=BATCH,
                       concurrency=actors, num_cpus=num_cpus, batch_format="numpy"))
    seen: dict[str, int] = {}
    expected = {p: 0 for p, _ in todo}
    for batch in ds.iter_batches(batch_size=BATCH * 4, batch_format="numpy", prefetch_batches=2):
        rows = [{k: _py(batch[k][i]) for k in keys} for i in range(len(batch["id"]))]
        good = [i for i, r in enumerate(rows) if not r["error"]]
        for r in rows:
            if r["error"]:
                report.skipped[r["source"]] = r["error"]
        if good:
            pts = rows_to_points([rows[i] for i in good], [batch["dense"][i] for i in good],
                                 [(list(map(int, batch["sp_idx"][i])), list(map(float, batch["sp_val"][i])))
                                  for i in good])
            store.upsert(collection, pts)
        chunks = [i for i in good if rows[i]["level"] == "chunk"]
        for i in good:
            expected[rows[i]["source"]] = rows[i]["n_chunks"]
        for i in chunks:
            seen[rows[i]["source"]] = seen.get(rows[i]["source"], 0) + 1
        report.chunks += len(chunks)
        if progress:
            done = sum(1 for p in expected if p in report.skipped or (expected[p] and seen.get(p) == expected[p]))
            progress(done, len(todo), f"{report.chunks} chunks")
    hashes = dict(todo)
    for p, _ in todo:
        if p in report.skipped:
            finish_document(store, collection, p, None, state)
        elif expected[p] and seen.get(p) == expected[p]:
            finish_document(store, collection, p, hashes[p], state)
            (report.updated if p in state else report.added).append(p)


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
