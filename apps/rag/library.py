"""`RagService`: the one object the CLI, the Serve app, the UI and the benchmark drive.

It owns a vector store (embedded or server), the in-process embedder and the BM25 encoder; the chat model is
reached through an injectable client (default `apps.client.ConductorClient`, i.e. the gateway) so tests and users
can point answers at any OpenAI-compatible base URL.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from apps.rag.answer import NO_ANSWER, Answer, generate_stream, low_relevance, make_answer
from apps.rag.chunking import STRATEGIES
from apps.rag.ingest import IngestReport, Progress, SparseEncoder, ingest_local, plan
from apps.rag.retrieval import DocumentHit, Hit, Reranker, SearchParams, search_documents
from cluster.config import ConductorConfig
from deployments.vectorstore import StoreError, StoreLockedError, check_name, open_store


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int, pdf_limits: str) -> Any:
    """A parsed document for the context view, kept while the file is unchanged: a scanned PDF costs seconds of
    OCR a page, and every citation click would pay it again."""
    from apps.rag.parsers import parse_bytes

    return parse_bytes(Path(path).read_bytes(), path, json.loads(pdf_limits))


def rag_rerank_model(config: ConductorConfig, gateway: Any = None) -> Any:
    """The model `rag.reranker` names (deployments/rerankers.py): None, `gateway` (the reranker this server serves
    at /v1/rerank, asked through `gateway`, the service's own client of it), a rerank URL, or a file or folder
    loaded in this process."""
    from deployments.rerankers import open_rerank_model
    from deployments.secrets import read_secret

    cfg = config.rag
    if cfg.reranker is None:
        return None
    if cfg.reranker == "gateway" and config.reranker is not None:
        from deployments.rerankers import HttpRerankModel

        # The client the answers' chat requests go through: it names the user each search is for
        # (x-conductor-user), so a rerank is that user's request in the spend log and their limits.
        return HttpRerankModel(gateway.base_url + "/v1/rerank", config.reranker.id, config.server.internal_api_key,
                               cfg.reranker_timeout_s, http=gateway)
    return open_rerank_model(cfg.reranker, cfg.reranker_model, read_secret(cfg.reranker_api_key_env),
                             cfg.reranker_threads, cfg.reranker_timeout_s)


class RagError(ValueError):
    """A user mistake (missing collection, empty question, bad settings): 4xx / one-line CLI error."""


class RagService:
    def __init__(self, config: ConductorConfig, store: Any = None, embedder: Any = None, client: Any = None):
        self.config = config
        self.cfg = config.rag
        self.store = store or open_store(self.cfg)
        self._embedder = embedder
        self._client = client
        self.sparse = SparseEncoder()
        self._reranker: Reranker | None = None

    # --- lazy heavy parts ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from deployments.embedder_local import shared_embedder

            self._embedder = shared_embedder(self.cfg.embedding_model)
        return self._embedder

    @property
    def client(self) -> Any:
        if self._client is None:
            from apps.client import ConductorClient

            self._client = ConductorClient.for_config(self.config)
        return self._client

    @property
    def reranker(self) -> Reranker:
        if self._reranker is None:
            gateway = self.client if self.cfg.reranker == "gateway" else None
            self._reranker = Reranker(rag_rerank_model(self.config, gateway), self.sparse,
                                      self.cfg.rerank_lexical_weight)
        return self._reranker

    def close(self) -> None:
        self.store.close()

    # --- collections --------------------------------------------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        out = []
        for name in self.store.list_collections():
            meta = self.store.get_meta(name)
            out.append({"name": name, **{k: v for k, v in meta.items() if k != "eval_history"}})
        return out

    def meta(self, collection: str) -> dict[str, Any]:
        try:
            return self.store.get_meta(check_name(collection))
        except StoreLockedError:
            raise  # not the user's mistake: callers may route to the server holding the store
        except StoreError as e:
            raise RagError(str(e)) from None

    def share(self, collection: str, users: list[str], owner: str | None) -> dict[str, Any]:
        meta = self.meta(collection)
        meta["shared_with"] = users
        if owner and "owner" not in meta:  # shown to those it is shared with as `shared_by`
            meta["owner"] = owner
        self.store.set_meta(collection, meta)
        return meta

    def delete(self, collection: str) -> None:
        self.meta(collection)
        self.store.delete_collection(collection)

    def _ensure_collection(self, name: str, chunking: str | None, size: int | None, overlap: int | None) -> dict:
        check_name(name)
        want = {"chunking": chunking or self.cfg.chunking, "chunk_size": size or self.cfg.chunk_size,
                "chunk_overlap": self.cfg.chunk_overlap if overlap is None else overlap}
        if want["chunking"] not in STRATEGIES:
            raise RagError(f"unknown chunking {want['chunking']!r}; choose one of {', '.join(STRATEGIES)}")
        if want["chunk_overlap"] >= want["chunk_size"]:
            raise RagError("chunk overlap must be smaller than the chunk size")
        if self.store.exists(name):
            meta = self.store.get_meta(name)
            if meta["embedding_model"] != self.cfg.embedding_model:
                raise RagError(f"collection {name!r} was embedded with {meta['embedding_model']!r}, not "
                               f"{self.cfg.embedding_model!r}; ingest into a new collection")
            for key, given in {"chunking": chunking, "chunk_size": size, "chunk_overlap": overlap}.items():
                if given is not None and meta[key] != given:
                    raise RagError(f"collection {name!r} uses {key}={meta[key]!r}; use a new collection for "
                                   f"{given!r}")
            return meta
        meta = {"embedding_model": self.cfg.embedding_model, "dim": self.embedder.dim, **want,
                "created": time.time(), "documents": 0, "chunks": 0, "doc_index": True}
        self.store.create_collection(name, self.embedder.dim, meta)
        return meta

    # --- ingestion ----------------------------------------------------------------------------------------
    def ingest(self, paths: list[str], collection: str, chunking: str | None = None, chunk_size: int | None = None,
               chunk_overlap: int | None = None, engine: str = "local", progress: Progress | None = None,
               questions: str | None = None, actors: int = 1) -> IngestReport:
        t0 = time.perf_counter()
        try:
            meta = self._ensure_collection(collection, chunking, chunk_size, chunk_overlap)
            p = plan(self.store, collection, paths)
        except StoreLockedError:
            raise
        except (FileNotFoundError, StoreError) as e:
            raise RagError(str(e)) from None
        report = IngestReport(collection, unchanged=p["unchanged"], skipped=dict(p["skipped"]), engine=engine)
        settings = {**{k: meta[k] for k in ("chunking", "chunk_size", "chunk_overlap")},
                    "pdf": self.cfg.pdf.model_dump(), "doc_index": bool(meta.get("doc_index"))}
        if p["todo"]:
            if engine == "ray":
                from apps.rag.ingest_ray import ingest_ray

                ingest_ray(self.store, collection, p["todo"], settings, self.cfg.embedding_model, report,
                           p["state"], progress, actors=actors, num_cpus=self.cfg.options.get("ingest_cpus", 1.0))
            else:
                ingest_local(self.store, collection, p["todo"], settings, self.embedder, report, p["state"], progress)
        self.store.delete_where(collection, "source", p["gone"])
        report.deleted = p["gone"]
        report.seconds = round(time.perf_counter() - t0, 3)
        meta = self.store.get_meta(collection)
        chunks = self.store.count(collection) - self.store.count(collection, "level", "doc")
        meta.update(chunks=chunks, last_ingest=time.time(),
                    documents=len(p["unchanged"]) + len(report.added) + len(report.updated)
                    if paths else meta.get("documents", 0))
        if questions:
            meta["questions"] = questions
        self.store.set_meta(collection, meta)
        if meta.get("questions"):
            from apps.rag.eval import run_and_record

            try:  # re-evaluate after every ingestion into a collection with a question set; keep the history
                run_and_record(self, collection, meta["questions"])
            except (OSError, ValueError) as e:
                report.skipped["(evaluation)"] = f"evaluation not re-run: {e}"
        return report

    def context(self, collection: str, source: str, start: int, end: int, window: int = 600) -> dict[str, Any]:
        """A cited span with the text around it (the UI's clickable citations). Only documents of the collection."""
        from apps.rag.parsers import ParseError

        self.meta(collection)
        if not self.store.count(collection, "source", source):
            raise RagError(f"{source!r} is not a document of collection {collection!r}")
        try:
            st = os.stat(source)
            doc = _parsed(source, st.st_mtime_ns, st.st_size, json.dumps(self.cfg.pdf.model_dump(), sort_keys=True))
        except (OSError, ParseError) as e:
            raise RagError(f"cannot read {source}: {e}") from None
        if not 0 <= start <= end <= len(doc.text):
            raise RagError(f"span {start}-{end} is outside the document (length {len(doc.text)})")
        lo, hi = max(0, start - window), min(len(doc.text), end + window)
        return {"source": source, "title": doc.title, "section": doc.section_at(start), "start": start, "end": end,
                "page": doc.page_at(start), "before": doc.text[lo:start], "passage": doc.text[start:end],
                "after": doc.text[end:hi]}

    # --- retrieval and answers ----------------------------------------------------------------------------
    def _check_query(self, collection: str, question: str) -> dict[str, Any]:
        if not isinstance(question, str) or not question.strip():
            raise RagError("the question is empty")
        meta = self.meta(collection)
        if meta["embedding_model"] != self.cfg.embedding_model:
            raise RagError(f"collection {collection!r} is embedded with {meta['embedding_model']!r} but queries "
                           f"are embedded with {self.cfg.embedding_model!r}; refusing to mix models")
        return meta

    def search(self, collection: str, question: str, params: SearchParams | None = None,
               stop: threading.Event | None = None) -> list[Hit]:
        return [d.best for d in self.search_documents(collection, question, params, stop=stop)]

    def search_documents(self, collection: str, question: str, params: SearchParams | None = None,
                         qvec: Any = None, stop: threading.Event | None = None) -> list[DocumentHit]:
        """`stop`: set when the request is cancelled; a rerank model then stops (RerankCancelled)."""
        params = params or SearchParams(k=self.cfg.top_k)
        meta = self._check_query(collection, question)
        if qvec is None:
            qvec = self.embedder.embed([question.strip()])[0]
        try:
            return search_documents(self.store, collection, question.strip(), qvec, self.sparse, params, self.cfg,
                                    self.reranker if params.rerank else None, bool(meta.get("doc_index")), stop)
        except StoreLockedError:
            raise
        except StoreError as e:
            raise RagError(str(e)) from None

    def ask(self, collection: str, question: str, params: SearchParams | None = None,
            model: str | None = None, stop: threading.Event | None = None) -> Answer:
        hits = self.search(collection, question, params, stop)
        warning = low_relevance(hits, self.cfg.low_relevance_threshold)
        if warning:
            return make_answer(NO_ANSWER, hits, None, warning).model_copy(update={"citations": []})
        model = model or self.cfg.chat_model
        # Streamed from the gateway even for a whole answer, so that a cancelled request stops the model.
        text = "".join(generate_stream(self.client, model, question, hits, self.cfg.max_context_chars,
                                       structured=self.cfg.structured_citations, stop=stop))
        return self._grounded(question, make_answer(text, hits, model, None), hits)

    def ask_stream(self, collection: str, question: str, params: SearchParams | None = None,
                   model: str | None = None, stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        """Events: {"type": "sources", ...}, {"type": "delta", "text"}, then {"type": "answer", <Answer>}."""
        hits = self.search(collection, question, params, stop)
        warning = low_relevance(hits, self.cfg.low_relevance_threshold)
        yield {"type": "sources", "sources": [h.model_dump() for h in hits], "warning": warning}
        if warning:
            yield {"type": "answer", **make_answer(NO_ANSWER, hits, None, warning).model_dump()}
            return
        model = model or self.cfg.chat_model
        text = ""
        for piece in generate_stream(self.client, model, question, hits, self.cfg.max_context_chars,
                                     structured=self.cfg.structured_citations, stop=stop):
            text += piece
            yield {"type": "delta", "text": piece}
        yield {"type": "answer", **self._grounded(question, make_answer(text, hits, model, None), hits).model_dump()}

    def _grounded(self, question: str, ans: Answer, hits: list[Hit]) -> Answer:
        """Check the answer against the passages it cites; one they do not support becomes an extractive answer
        quoting the best passage (apps/rag/grounding.py)."""
        from apps.rag.grounding import check, extractive_answer, judge

        if not self.cfg.grounding:
            return ans
        cited = [s.text for s in ans.sources if s.cited] or [s.text for s in ans.sources]
        if self.cfg.judge_model:
            g = judge(self.client, self.cfg.judge_model, ans.answer, cited)
        else:
            g = check(ans.answer, question, cited, self.embedder)
        if g.grounded:
            return ans.model_copy(update={"grounded": True, "grounding": g})
        text, nums = extractive_answer(question, hits, self.embedder)
        if not text:
            return ans.model_copy(update={"grounded": False, "grounding": g})
        sources = [s.model_copy(update={"cited": s.n in nums}) for s in ans.sources]
        return ans.model_copy(update={"answer": text, "model_answer": ans.answer, "citations": nums, "sources": sources,
                                      "citations_inferred": False, "grounded": False, "grounding": g})
