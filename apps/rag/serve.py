"""RAG over HTTP, mounted by cluster/serve_app.py under `/v1/rag`:

  GET    /collections                         list collections
  GET    /{collection}                        settings and counts
  DELETE /{collection}                        delete it
  POST   /{collection}/search                 retrieval only      {question, k, mode, rerank}
  POST   /{collection}/query                  answer + citations  {question, k, mode, rerank, model, stream}
  POST   /{collection}/upload?filename=NAME   raw file body (size-limited before anything is stored), ingested
  POST   /{collection}/ingest                 {paths: [...]} server-side folders under rag.ingest_roots
  GET    /{collection}/context?source&start&end   a cited passage with the text around it
  GET    /{collection}/eval                   evaluation history;  POST runs it on the attached question set
  PUT    /{collection}/sharing                {users: [...]} who else may read it (the owner's; [] stops sharing)

Each user's collections are their own (apps/rag/access.py): others get 404, or read-only access when shared.

One replica owns the embedded store (it is single-process); the FastAPI app is built inside that replica.
"""


import asyncio
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from cluster.config import ConductorConfig, config_from_dict, expand_path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# What an upload may be declared as (never text/plain or a form type: a page on another site could send those).
UPLOAD_TYPES = ("application/octet-stream", "application/pdf", "text/markdown", "text/x-markdown", "text/html",
                "application/xhtml+xml", "text/x-rst", "text/prs.fallenstein.rst")


class QueryRequest(BaseModel):
    question: str = Field(..., description="The question.")
    k: int = Field(5, ge=1, le=100, description="Passages to retrieve.")
    mode: Literal["dense", "sparse", "hybrid"] = Field("hybrid", description="Retrieval mode.")
    rerank: bool = Field(False, description="Rescore the fused candidates: with the model `rag.reranker` names when "
                         "the server has one, else the built-in rescoring.")
    model: str | None = Field(None, description="Chat model id; default rag.chat_model.")
    stream: bool = Field(False, description="Server-sent events: sources, deltas, then the final answer.")


class IngestRequest(BaseModel):
    paths: list[str] = Field(..., min_length=1, description="Server-side files/folders under rag.ingest_roots.")
    chunking: Literal["fixed", "recursive", "structure"] | None = Field(None, description="For a new collection.")
    engine: Literal["local", "ray"] = Field("local", description="Ingestion engine.")


class ShareRequest(BaseModel):
    users: list[str] = Field(..., max_length=100, description="Users who may read the collection; [] for none.")


class EvalQuestion(BaseModel):
    question: str = Field(..., min_length=1, max_length=4000)
    gold: list[str] = Field(..., min_length=1, max_length=50, description="Gold documents: uploaded file names.")
    answer: str | None = Field(None, max_length=20000)


class EvalRequest(BaseModel):
    k: int = Field(5, ge=1, le=100, description="Cut-off for the metrics.")
    modes: list[str] | None = Field(None, description="Retrieval modes; default all four.")
    answers: int = Field(0, ge=0, le=200, description="Also answer the first N questions and score the answers "
                         "(faithfulness, relevance, context precision/recall, grounded rate).")
    questions: list[EvalQuestion] | None = Field(
        None, max_length=10000, description="A question set sent with the request (gold documents named as they "
        "were uploaded); default the set attached to the collection.")


class _Routes:
    """What every route of the RAG app shares: the config, the lazily made service, access checks, one writer."""

    def __init__(self, config: ConductorConfig, service_factory: Callable[[], Any]):
        from apps.rag.access import CollectionAccess

        self.config = config
        self._factory = service_factory
        self._svc: Any = None
        self.access = CollectionAccess(config, lambda stored: self.svc().meta(stored))
        self.write_lock = threading.Lock()  # one ingestion at a time: the store has one writer

    def svc(self) -> Any:
        if self._svc is None:
            self._svc = self._factory()
        return self._svc

    def scoped(self, request: Any, collection: str, write: bool = False) -> str:
        from apps.security import request_user

        return self.access.stored(request_user(request), collection, write)

    @staticmethod
    def call(fn: Callable[[], Any]) -> Any:
        from apps.common import APIError
        from apps.rag.library import RagError
        from deployments.rerankers import RerankerUnavailable
        from deployments.vectorstore import StoreError, StoreLockedError

        try:
            return fn()
        except (StoreLockedError, RerankerUnavailable) as e:  # the server's state or setup, not the caller's fault
            raise APIError(503, str(e), "server_error") from None
        except (RagError, StoreError, ValueError) as e:  # ValueError: a bad question set or mode
            raise APIError(404 if "does not exist" in str(e) else 400, str(e)) from None

    async def stoppable(self, work: Callable[[threading.Event], Any]) -> Any:
        """`work(stop)` in a worker thread, through `call`. A request cancelled while it runs (its client left, or
        Serve's request timeout) sets `stop`, so a rerank model ends at its next few pairs instead of scoring on for
        nobody: a sync route's thread is never told that its request is gone."""
        from starlette.concurrency import run_in_threadpool

        stop = threading.Event()
        try:
            return await run_in_threadpool(self.call, lambda: work(stop))
        except asyncio.CancelledError:
            stop.set()
            raise

    async def ingest(self, collection: str, paths: list[str], chunking: str | None, engine: str,
                     before: Callable[[], Any] | None = None) -> Any:
        from starlette.concurrency import run_in_threadpool

        def work() -> Any:
            with self.write_lock:
                if before is not None:
                    before()
                return self.call(lambda: self.svc().ingest(paths, collection, chunking, engine=engine)).as_dict()

        return await run_in_threadpool(work)


def create_app(config: ConductorConfig, service_factory: Callable[[], Any]) -> Any:
    """The FastAPI app (testable without Serve). `service_factory` is called once, lazily."""
    from fastapi import FastAPI

    from apps.common import install_common

    app = FastAPI(title="Conductor RAG")
    install_common(app, config)
    r = _Routes(config, service_factory)
    # Registration order is matching order: /collections before /{collection}.
    _collection_routes(app, r)
    _question_routes(app, r)
    _ingest_routes(app, r)
    _eval_routes(app, r)
    return app


def _collection_routes(app: Any, r: _Routes) -> None:
    from fastapi import Request

    from apps.rag.access import check_shares, owns
    from apps.security import request_user

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/collections")
    def collections(request: Request) -> dict[str, Any]:
        return {"collections": r.access.visible(request_user(request), r.call(lambda: r.svc().collections()))}

    @app.get("/{collection}")
    def info(collection: str, request: Request) -> dict[str, Any]:
        stored = r.scoped(request, collection)
        meta = r.call(lambda: r.svc().meta(stored))
        if not r.access.is_reader(request_user(request), stored):
            return {**meta, "name": collection}
        return {k: v for k, v in meta.items() if k != "shared_with"} | {"name": collection}

    @app.delete("/{collection}")
    def delete(collection: str, request: Request) -> dict[str, Any]:
        stored = r.scoped(request, collection, write=True)
        with r.write_lock:
            r.call(lambda: r.svc().delete(stored))
        return {"deleted": collection}

    @app.put("/{collection}/sharing")
    def share(collection: str, req: ShareRequest, request: Request) -> dict[str, Any]:
        """Replace the users `collection` is shared with (read-only); [] stops sharing. The owner's or an admin's."""
        stored = r.scoped(request, collection, write=True)
        users = check_shares(req.users)
        user = request_user(request)
        owner = user if owns(user, stored) else None  # not an admin sharing another's
        with r.write_lock:
            meta = r.call(lambda: r.svc().share(stored, users, owner))
        return {"name": collection, "stored_name": stored, "shared_with": meta["shared_with"]}

    @app.get("/{collection}/context")
    def context(collection: str, request: Request, source: str, start: int = 0, end: int = 0,
                window: int = 600) -> Any:
        collection = r.scoped(request, collection)
        return r.call(lambda: r.svc().context(collection, source, start, end, min(max(window, 0), 5000)))


def _question_routes(app: Any, r: _Routes) -> None:
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    from apps.rag.retrieval import SearchParams

    @app.post("/{collection}/search")
    async def search(collection: str, req: QueryRequest, request: Request) -> dict[str, Any]:
        p = SearchParams(k=req.k, mode=req.mode, rerank=req.rerank)

        def work(stop: threading.Event) -> dict[str, Any]:
            docs = r.svc().search_documents(r.scoped(request, collection), req.question, p, stop=stop)
            # documents ranked, each with its best passage; `hits` are those passages (the shape before documents)
            return {"documents": [d.model_dump() for d in docs], "hits": [d.best.model_dump() for d in docs]}

        return await r.stoppable(work)

    @app.post("/{collection}/query")
    async def query(collection: str, req: QueryRequest, request: Request) -> Any:
        p = SearchParams(k=req.k, mode=req.mode, rerank=req.rerank)
        if not req.stream:
            return await r.stoppable(lambda stop: r.svc().ask(r.scoped(request, collection), req.question, p,
                                                              req.model, stop).model_dump())

        def opened(stop: threading.Event) -> tuple[Any, dict[str, Any]]:
            events = r.svc().ask_stream(r.scoped(request, collection), req.question, p, req.model, stop)
            return events, next(events)  # errors (missing collection, empty question) before the stream opens

        events, first = await r.stoppable(opened)
        return StreamingResponse(_answer_events(first, events), media_type="text/event-stream")


async def _answer_events(first: dict[str, Any], events: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    done = object()
    yield f"data: {json.dumps(first)}\n\n"
    try:
        while (ev := await run_in_threadpool(next, events, done)) is not done:
            yield f"data: {json.dumps(ev)}\n\n"
    except Exception as e:  # the model failed mid-answer: tell the client in-band, the status is sent
        yield f"data: {json.dumps({'type': 'error', 'message': f'{type(e).__name__}: {e}'})}\n\n"
    finally:
        # A client that left (or a finished answer): closing the generator closes its stream to the
        # gateway, which cancels the generation there.
        try:
            await run_in_threadpool(events.close)
        except ValueError:  # still running a step in its thread: it is closed when collected
            pass
    yield "data: [DONE]\n\n"


def _ingest_routes(app: Any, r: _Routes) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from apps.common import APIError, raw_upload, stream_body_to

    limit = r.config.server.max_upload_bytes

    @app.post("/{collection}/upload")
    @raw_upload(*UPLOAD_TYPES)
    async def upload(collection: str, request: Request, filename: str, chunking: str | None = None) -> Any:
        from apps.rag.parsers import kind_of

        collection = r.scoped(request, collection, write=True)
        name = _SAFE.sub("_", os.path.basename(filename)).lstrip(".")
        if not name or kind_of(name) is None:
            raise APIError(415, f"unsupported file type for {filename!r}; use .md, .txt, .rst, .html or .pdf")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"upload of {declared} bytes exceeds the limit of {limit} bytes", code="upload_too_large")
        folder = expand_path(r.config.rag.data_dir) / "uploads" / r.call(lambda: _check(collection))
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                size = await stream_body_to(request, f, limit)
            if size == 0:
                raise APIError(400, "the uploaded file is empty")
            await run_in_threadpool(_check_document, tmp, name, r.config.rag)
            # The file takes its name only under the write lock, so a second upload of the same name waits for
            # the first one's ingestion instead of replacing the file under it.
            report = await r.ingest(collection, [str(folder / name)], chunking, "local",
                                    before=lambda: os.replace(tmp, folder / name))
            reason = report["skipped"].get(str(folder / name))
            if reason:  # the one file of this request could not be used: the caller's mistake, with the reason
                raise APIError(422, f"{name}: {reason}", code="unusable_document")
            return report
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @app.post("/{collection}/ingest")
    async def ingest(collection: str, req: IngestRequest, request: Request) -> Any:
        collection = r.scoped(request, collection, write=True)
        roots = [os.path.realpath(expand_path(p)) for p in r.config.rag.ingest_roots]
        for p in req.paths:
            real = os.path.realpath(expand_path(p))
            if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots):
                raise APIError(403, f"{p!r} is not under rag.ingest_roots; upload the files instead")
        return await r.ingest(collection, req.paths, req.chunking, req.engine)


def _eval_routes(app: Any, r: _Routes) -> None:
    from fastapi import Request

    from apps.common import APIError

    @app.get("/{collection}/eval")
    def eval_history(collection: str, request: Request) -> Any:
        from apps.rag.eval import history

        collection = r.scoped(request, collection)
        r.call(lambda: r.svc().meta(collection))
        return {"history": history(r.svc(), collection)}

    @app.post("/{collection}/eval")
    def eval_run(collection: str, req: EvalRequest, request: Request) -> Any:
        from apps.rag.eval import run_and_record

        collection = r.scoped(request, collection, write=True)  # it records a run in the collection's history
        meta = r.call(lambda: r.svc().meta(collection))
        questions = meta.get("questions")
        if req.questions:  # gold documents named as uploaded: they live in this collection's upload folder
            from cluster.files import atomic_write

            folder = expand_path(r.config.rag.data_dir) / "uploads" / _check(collection)
            rows = [{"question": q.question, "answer": q.answer,
                     "gold": [str(folder / _SAFE.sub("_", os.path.basename(g)).lstrip(".")) for g in q.gold]}
                    for q in req.questions]
            questions = str(folder / ".posted-questions.jsonl")
            atomic_write(questions, "".join(json.dumps(row) + "\n" for row in rows))
        if not questions:
            raise APIError(400, f"collection {collection!r} has no question set; send `questions` or ingest with "
                                "--questions first")
        return r.call(lambda: run_and_record(r.svc(), collection, questions, req.k, req.modes, answers=req.answers))


def _check_document(path: str, name: str, rag_cfg: Any) -> None:
    """Size limits that can be read off a file's structure (a PDF's page count and page size) before it replaces
    a stored document of the same name or costs an ingestion: over a limit is 413."""
    from apps.common import APIError
    from apps.rag.parsers import DocumentTooLarge, kind_of

    if kind_of(name) != "pdf":
        return
    import io

    from pypdf import PdfReader

    from apps.rag.pdf import check_limits

    try:
        check_limits(PdfReader(io.BytesIO(Path(path).read_bytes())), rag_cfg.pdf)
    except DocumentTooLarge as e:
        raise APIError(413, f"{name}: {e}", code="document_too_large") from None
    except Exception:  # unreadable or encrypted: ingestion reports the precise reason
        return


def _check(collection: str) -> str:
    from deployments.vectorstore import check_name

    return check_name(collection)


def _create_served_app(config: ConductorConfig) -> Any:
    from apps.rag.library import RagService

    return create_app(config, lambda: RagService(config))


def build_app(args: dict[str, Any]) -> Any:
    """Serve entry point: args = {"config": <dict>}. One replica: the embedded store has a single writer."""
    config = config_from_dict(args["config"])
    res = config.rag.resources
    # Fixed replicas: the embedded store has a single writer.
    opts = res.serve_options("RagIngress", fixed_replicas=1 if not config.rag.qdrant_url else (res.num_replicas or 1))
    from apps.common import config_ingress_app
    from deployments.secrets import with_secrets

    secrets = [config.rag.qdrant_api_key_env, config.rag.reranker_api_key_env]
    return config_ingress_app(_create_served_app, with_secrets(opts, secrets), config)
