"""Ingestion: discover -> hash -> (parse -> chunk -> embed) only new/changed documents -> upsert -> drop stale chunks.

Incremental and restartable by construction:
- every document is identified by its path as ingested (absolute) and the sha256 of its bytes (and of its
  parser's version, so a parser that changed re-reads the documents it reads);
- a chunk's point id is derived from (path, hash, chunk number), so re-running an interrupted ingestion
  overwrites the same points instead of duplicating them;
- a document counts as done only when all `n_chunks` of its current hash are in the store; older versions of a
  document are deleted only after the new version is fully written, so an interruption never loses a document;
- documents that disappeared from an ingested folder (or became unreadable) lose their chunks.

Two engines run the same per-document steps: a plain single-process loop, and Ray Data (read/parse/chunk as a
`flat_map`, embedding in an actor pool via `map_batches`, upserts streamed back to the driver, which is the only
process writing to the store). As a Ray job: `conductor job submit -- conductor rag ingest PATH -c NAME --engine ray`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from apps.rag.chunking import chunk_document
from apps.rag.parsers import PARSER_VERSIONS, SUMMARY_CHARS, ParseError, kind_of, parse_bytes
from deployments.vectorstore import StorePoint, point_id

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]  # (documents done, documents to do, message)
BATCH = 64
PAGE_AVG_TOKENS = 1500.0  # BM25 length normalisation for whole documents (a manual page, not a chunk)


@dataclass
class IngestReport:
    collection: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    chunks: int = 0
    seconds: float = 0.0
    engine: str = "local"

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def discover(paths: Iterable[str | Path]) -> tuple[list[str], dict[str, str], list[str]]:
    """-> (files to consider, skipped {path: reason}, folder roots). Hidden files and folders are ignored."""
    files, skipped, roots = [], {}, []
    for p in paths:
        path = Path(os.path.abspath(os.path.expanduser(str(p))))
        if path.is_dir():
            roots.append(str(path))
            for dirpath, dirnames, names in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for n in sorted(names):
                    if n.startswith("."):
                        continue
                    f = os.path.join(dirpath, n)
                    (files.append(f) if kind_of(f) else skipped.__setitem__(f, _unsupported(f)))
        elif path.is_file():
            (files.append(str(path)) if kind_of(path) else skipped.__setitem__(str(path), _unsupported(path)))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files, skipped, roots


def _unsupported(p: str | Path) -> str:
    return f"unsupported file type {Path(p).suffix or '(none)'!r}"


# What a chunk's embedded text holds; a change re-embeds every document once, as a parser's version does for its
# kind. 2: each chunk begins with its document's lead sentence (chunking.lead_sentence).
EMBED_VERSION = 2


def document_hash(data: bytes, path: str | Path) -> str:
    """A document's version: the sha256 of its bytes, of its parser's version where that is past 1, and of
    EMBED_VERSION. A parser that now reads a kind differently, or chunks embedded differently, make the documents
    new to ingestion, so a collection made by an older release gets the new passages on its next ingestion (not
    only for the files that changed since)."""
    h, kind = hashlib.sha256(data), kind_of(path)
    version = PARSER_VERSIONS.get(kind or "", 1)
    if version > 1:
        h.update(f"\x00parser {kind} {version}".encode())
    h.update(f"\x00embed {EMBED_VERSION}".encode())
    return h.hexdigest()


class SparseEncoder:
    """BM25 term weights computed by Qdrant's own tokenizer/stemmer (qdrant-edge-py); Qdrant applies IDF.

    Chunks and whole documents are normalised against their own typical length (BM25's b), so a long page is
    not scored as if it were a very long chunk."""

    def __init__(self) -> None:
        import qdrant_edge as q

        self._bm25 = q.Bm25(q.Bm25Config(language="english"))
        self._pages = q.Bm25(q.Bm25Config(language="english", avg_len=PAGE_AVG_TOKENS))

    def document(self, text: str) -> tuple[list[int], list[float]]:
        v = self._bm25.embed_document(text)
        return list(v.indices), list(v.values)

    def page(self, text: str) -> tuple[list[int], list[float]]:
        v = self._pages.embed_document(text)
        return list(v.indices), list(v.values)

    def row(self, row: dict[str, Any]) -> tuple[list[int], list[float]]:
        """A chunk row's terms, or a document row's terms over the whole document."""
        return self.page(row["sparse_text"]) if row.get("level") == "doc" else self.document(row["embed_text"])

    def query(self, text: str) -> tuple[list[int], list[float]]:
        v = self._bm25.embed_query(text)
        return list(v.indices), list(v.values)


def chunk_rows(path: str, data: bytes, doc_hash: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Parse and chunk one document into payload rows (raises ParseError: the file's reason to be skipped)."""
    try:
        doc = parse_bytes(data, path, settings.get("pdf"))
        chunks = chunk_document(doc, settings["chunking"], settings["chunk_size"], settings["chunk_overlap"])
    except ParseError:
        raise
    except Exception as e:  # a parser's bug on one odd file skips that file, not the rest of the batch
        log.exception("parsing %s failed", path)  # the traceback goes to the log; the report gets the reason
        raise ParseError(f"could not be parsed ({type(e).__name__}); the server log has the details") from None
    if not chunks:
        raise ParseError("no text to index")
    base = {"source": path, "doc_hash": doc_hash, "doc_key": f"{path}\x1f{doc_hash}", "title": doc.title,
            "n_chunks": len(chunks), "kind": doc.kind}
    rows = [dict(base, id=point_id(path, doc_hash, str(i)), level="chunk", section=c.section, start=c.start, end=c.end,
                 chunk_index=i, text=c.text, page=doc.page_at(c.start) or 0, embed_text=c.embed_text, sparse_text="")
            for i, c in enumerate(chunks)]
    if settings.get("doc_index"):
        # The document's own point goes first: a document whose chunks are all stored has its document point too.
        summary = f"{doc.title}\n{doc.summary or doc.text[:SUMMARY_CHARS]}".strip()
        rows.insert(0, dict(base, id=point_id(path, doc_hash, "document"), level="doc", section="", start=0,
                            end=min(len(doc.text), SUMMARY_CHARS), chunk_index=-1, text=summary, page=0,
                            embed_text=summary, sparse_text=f"{doc.title}\n{doc.text}"))
    return rows


def rows_to_points(rows: list[dict[str, Any]], dense: Any, sparse: list[tuple[list[int], list[float]]]) -> list[StorePoint]:
    out = []
    for row, d, s in zip(rows, dense, sparse):
        payload = {k: v for k, v in row.items() if k not in ("id", "embed_text", "sparse_text", "error")}
        out.append(StorePoint(row["id"], list(map(float, d)), s, payload, level=row.get("level") or "chunk"))
    return out


def existing_state(store: Any, collection: str) -> dict[str, dict[str, Any]]:
    """source -> {"hashes": {hash: chunks present}, "n_chunks": {hash: expected}}."""
    state: dict[str, dict[str, Any]] = {}
    for p in store.iter_payloads(collection, ["source", "doc_hash", "n_chunks", "level"]):
        if p.get("level") == "doc":  # a document's own point: not one of its chunks
            continue
        st = state.setdefault(p["source"], {"hashes": {}, "n_chunks": {}})
        st["hashes"][p["doc_hash"]] = st["hashes"].get(p["doc_hash"], 0) + 1
        st["n_chunks"][p["doc_hash"]] = p["n_chunks"]
    return state


def plan(store: Any, collection: str, paths: Iterable[str | Path]) -> dict[str, Any]:
    """Decide what to do: read every candidate file once, compare hashes with what the store holds."""
    files, skipped, roots = discover(paths)
    state = existing_state(store, collection)
    todo, unchanged = [], []
    for f in files:
        try:
            h = document_hash(Path(f).read_bytes(), f)
        except OSError as e:
            skipped[f] = f"unreadable: {e.strerror or e}"
            continue
        st = state.get(f)
        if st and set(st["hashes"]) == {h} and st["hashes"][h] == st["n_chunks"][h]:
            unchanged.append(f)
        else:
            todo.append((f, h))
    found = set(files)
    gone = [s for s in state if s not in found and any(s.startswith(r.rstrip("/") + "/") for r in roots)]
    return {"todo": todo, "unchanged": unchanged, "skipped": skipped, "gone": gone, "state": state}


def finish_document(store: Any, collection: str, path: str, new_hash: str | None, state: dict[str, Any]) -> None:
    """After a document's new version is fully stored (or it became unusable), delete its other versions."""
    old = [f"{path}\x1f{h}" for h in state.get(path, {}).get("hashes", {}) if h != new_hash]
    store.delete_where(collection, "doc_key", old)


def ingest_local(store: Any, collection: str, todo: list[tuple[str, str]], settings: dict[str, Any],
                 embedder: Any, report: IngestReport, state: dict[str, Any], progress: Progress | None) -> None:
    """The single-process loop. Chunks are embedded in full batches that span documents (a manual's small pages
    would otherwise each make a batch of a few chunks, and the model is several times faster per text in full
    batches); a document is finished -- its older versions deleted, counted as added -- only once all its chunks
    are stored."""
    sparse = SparseEncoder()
    pending: list[dict[str, Any]] = []  # chunks parsed, not yet embedded
    waiting: list[tuple[str, str, int]] = []  # (path, hash, chunks) parsed, in order, not yet finished
    stored: dict[str, int] = {}
    done = 0

    def flush(rows: list[dict[str, Any]]) -> None:
        nonlocal done
        if rows:
            vecs = embedder.embed([r["embed_text"] for r in rows])
            store.upsert(collection, rows_to_points(rows, vecs, [sparse.row(r) for r in rows]))
            for r in rows:
                if r["level"] == "chunk":
                    stored[r["source"]] = stored.get(r["source"], 0) + 1
        while waiting and stored.get(waiting[0][0], 0) == waiting[0][2]:
            path, h, n = waiting.pop(0)
            finish_document(store, collection, path, h, state)
            (report.updated if path in state else report.added).append(path)
            report.chunks += n
            done += 1
            if progress:
                progress(done, len(todo), os.path.basename(path))

    for path, h in todo:
        try:
            rows = chunk_rows(path, Path(path).read_bytes(), h, settings)
        except (ParseError, OSError) as e:
            report.skipped[path] = str(e)
            finish_document(store, collection, path, None, state)
            done += 1
            if progress:
                progress(done, len(todo), os.path.basename(path))
            continue
        waiting.append((path, h, rows[-1]["n_chunks"]))
        pending += rows
        while len(pending) >= BATCH:
            flush(pending[:BATCH])
            pending = pending[BATCH:]
    flush(pending)

