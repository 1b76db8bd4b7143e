"""`/v1/video` on the Serve ingress: upload + ingest (byte-capped while streaming), search, library, analysis.

Untrusted files are probed in a capped subprocess, then decoded and analysed inside a separate Ray actor (the
worker holds the models). If the worker crashes or overruns `limits.decode_timeout_s`, the replica kills it,
answers 422, and starts a fresh one on the next upload: the service itself is never the process that decodes.
An idle worker exits after `video.worker_idle_s`, so that its CPU share and models do not sit reserved beside
training or Ray Data jobs.
Uploads are raw bodies (`curl --data-binary @clip.mp4 -H 'content-type: video/mp4' .../ingest?name=clip.mp4`).
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request  # route annotations are resolved from module globals
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from cluster.config import ConductorConfig, config_from_dict, expand_path


class SearchRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=1000, description="What was said, shown or written.")
    video: str | None = Field(None, description="Restrict to one video id.")
    k: int = Field(5, ge=1, le=100, description="Number of moments to return.")


class IngestResponse(BaseModel):
    video: str = Field(description="Video id (content hash).")
    name: str = Field(description="File name given at upload.")
    duration: float = Field(description="Seconds.")
    segments: int = Field(description="Number of segments indexed.")


JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


class VideoWorker:
    """A Ray actor that runs the pipeline stages on one file and returns the finished segment rows.

    Started with two threads: one file is processed at a time (`_busy`), and `progress()` answers while it runs."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self._busy = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}  # job -> {"stage", "done", "total"}

    def process(self, path: str, name: str, job: str | None = None) -> list[dict[str, Any]]:
        from apps.video.pipeline import decode_segments, model_stages

        with self._busy:
            self._report(job, "decoding", 0, 0)
            stages = getattr(self, "_stages", None) or model_stages(self.cfg)
            self._stages = stages
            rows = decode_segments({"path": path, "name": name}, self.cfg)
            out = []
            for i, row in enumerate(rows):
                self._report(job, "analysing segments (speech, on-screen text, vectors)", i, len(rows))
                for stage in stages:
                    row = stage(row)
                out.append(row)
            self._report(job, "indexing", len(rows), len(rows))
            return out

    def _report(self, job: str | None, stage: str, done: int, total: int) -> None:
        if job:
            self._progress[job] = {"stage": stage, "done": done, "total": total}  # one assignment: read whole
            while len(self._progress) > 256:
                self._progress.pop(next(iter(self._progress)))

    def progress(self, job: str) -> dict[str, Any] | None:
        return self._progress.get(job)


class VideoService:
    """Everything the routes need, created lazily inside the replica (models load on first use)."""

    def __init__(self, config: ConductorConfig):
        self.config, self.vc = config, config.video
        self.uploads = expand_path(self.vc.data_dir) / "uploads"
        self._index = None
        self._worker = None
        self._lock = threading.Lock()
        self._jobs: dict[str, str] = {}  # ingest job id -> the user who started it
        self._ended: dict[str, dict[str, Any]] = {}  # job -> its last state, once the worker is done with it
        self._running = 0  # uploads inside the worker now
        self._uses = 0  # uploads the worker has finished: an idle timer retires it only if none came since

    @property
    def index(self):
        with self._lock:
            if self._index is None:
                from apps.video.index import VideoIndex

                self._index = VideoIndex(self.vc)
            return self._index

    def worker(self):
        with self._lock:
            return self._started_worker()

    def _started_worker(self):
        import ray

        if self._worker is None:  # under self._lock
            # The worker does the heavy lifting (decode, Whisper, OCR): it gets a real share of a CPU, more than
            # the thin HTTP replica, capped at one.
            self._worker = ray.remote(num_cpus=min(1.0, max(0.1, self.vc.resources.num_cpus * 5)),
                                      max_restarts=0, max_concurrency=2)(VideoWorker).remote(self.vc.model_dump())
        return self._worker

    def claim_job(self, job: str | None, user: str) -> None:
        """Remember who started ingest `job`, so that only they see its progress (400 for a malformed id, 409 for
        one another user holds)."""
        from apps.common import APIError

        if job is None:
            return
        if not JOB_ID.fullmatch(job):
            raise APIError(400, "job must be 8 to 64 letters, digits, '-' or '_'", param="job")
        with self._lock:
            if self._jobs.setdefault(job, user) != user:
                raise APIError(409, "job id in use; choose another", param="job")
            while len(self._jobs) > 1024:
                self._jobs.pop(next(iter(self._jobs)))

    def progress(self, job: str, user: str) -> dict[str, Any] | None:
        """Where ingest `job` stands, for the user who started it; None for anyone else or an unknown job."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        with self._lock:
            if self._jobs.get(job) != user:
                return None
            worker, ended = self._worker, self._ended.get(job)
        if ended is not None:
            return ended
        try:
            state = ray.get(worker.progress.remote(job), timeout=10) if worker is not None else None
        except (GetTimeoutError, RayActorError):  # the worker was killed (an overrun): the upload answers why
            return {"stage": "stopped", "done": 0, "total": 0}
        return state or {"stage": "probing", "done": 0, "total": 0}

    def process(self, path: Path, name: str, job: str | None = None) -> dict[str, Any]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        from apps.common import APIError
        from apps.video.probe import ProbeError

        with self._lock:  # one step, so that an idle timer cannot retire the worker between the two
            worker = self._started_worker()
            self._running += 1
        try:
            rows = ray.get(worker.process.remote(str(path), name, job), timeout=self.vc.limits.decode_timeout_s)
        except (GetTimeoutError, RayActorError) as e:
            ray.kill(worker)
            with self._lock:
                if self._worker is worker:
                    self._worker = None
            why = "took too long" if isinstance(e, GetTimeoutError) else "crashed the decode worker"
            self.end_job(job, f"stopped: processing {why}")  # the upload route keeps this, the more exact reason
            raise APIError(422, f"video rejected: processing {why}") from None
        except RayTaskError as e:
            cause = e.cause if isinstance(e.cause, (ProbeError, ValueError)) else None
            if cause is not None:
                raise APIError(getattr(cause, "status", 422), str(cause)) from None
            raise
        finally:
            self._finished_one()
        return self.index._write(iter(rows))[0]

    def end_job(self, job: str | None, stage: str, done: int = 0, total: int = 0, replace: bool = True) -> None:
        """The job's final state, kept here: it outlives the worker, which may exit idle."""
        if job:
            with self._lock:
                if not replace and job in self._ended:
                    return
                self._ended[job] = {"stage": stage, "done": done, "total": total}
                while len(self._ended) > 1024:
                    self._ended.pop(next(iter(self._ended)))

    def _finished_one(self) -> None:
        """An upload left the worker: if no other arrives within `worker_idle_s`, the worker exits."""
        with self._lock:
            self._running -= 1
            self._uses += 1
            uses = self._uses
        if self.vc.worker_idle_s is not None:
            t = threading.Timer(self.vc.worker_idle_s, self._retire_if_idle, args=(uses,))
            t.daemon = True
            t.start()

    def _retire_if_idle(self, uses: int) -> None:
        import ray

        with self._lock:
            if self._running or self._uses != uses or self._worker is None:
                return  # in use, or used since: a later timer decides
            worker, self._worker = self._worker, None
        ray.kill(worker)


def upload_limit(config: ConductorConfig) -> int:
    return min(config.server.max_upload_bytes, config.video.limits.max_bytes)


def make_app(config: ConductorConfig):
    """The FastAPI app (built inside the replica; also used directly by in-process tests)."""
    from fastapi import FastAPI

    from apps.common import APIError, install_common, raw_upload, read_json_body

    app = FastAPI(title="Conductor video")
    install_common(app, config)  # the upload route streams under its own cap (raw_upload), JSON routes under 1 MiB
    svc = VideoService(config)
    app.state.video = svc

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ingest", response_model=IngestResponse)
    @raw_upload("application/octet-stream", "video/*")
    async def ingest(request: Request, name: str = "upload.mp4", job: str | None = None) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        from apps.security import request_user

        svc.claim_job(job, request_user(request))
        path = await _save_upload(request, svc.uploads, name, upload_limit(config))
        try:
            rec = await run_in_threadpool(_probe_then_process, svc, path, name, job)
        except BaseException:
            path.unlink(missing_ok=True)
            svc.end_job(job, "stopped: video rejected", replace=False)  # refused by the probe or the worker
            raise
        svc.end_job(job, "done", len(rec["scenes"]), len(rec["scenes"]))  # analysed now, or a file already known
        svc.index.add_owner(rec["video"], request_user(request))
        return {"video": rec["video"], "name": rec["name"], "duration": rec["duration"],
                "segments": len(rec["scenes"])}

    @app.get("/ingest/{job}")
    async def ingest_progress(job: str, request: Request) -> dict[str, Any]:
        """Where an upload sent with `?job=<id>` stands: {stage, done, total} (segments), for its own user."""
        from starlette.concurrency import run_in_threadpool

        from apps.security import request_user

        state = await run_in_threadpool(svc.progress, job, request_user(request))
        if state is None:
            raise APIError(404, f"no ingest job {job!r}", param="job")
        return {"job": job, **state}

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        from pydantic import ValidationError
        from starlette.concurrency import run_in_threadpool

        raw = await read_json_body(request, config.server.max_body_bytes)
        try:
            body = SearchRequest.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise APIError(400, f"{where}: {err['msg']}", param=where or None) from None
        return await run_in_threadpool(_search, svc, body, _viewer(config, request))

    return _add_library_routes(app, svc, config)


def _viewer(config: ConductorConfig, request: Request) -> str | None:
    """Whose videos this request may see: its user's, or everyone's (None) for an admin."""
    from apps.security import is_admin, request_user

    user = request_user(request)
    return None if is_admin(config, user) else user


def _search(svc: VideoService, body: SearchRequest, viewer: str | None) -> dict[str, Any]:
    from apps.common import APIError

    if not body.query.strip():
        raise APIError(400, "query is empty", param="query")
    if body.video and _record(svc, body.video, viewer) is None:
        raise APIError(404, f"unknown video id {body.video!r}", param="video")
    if viewer is None:
        return {"object": "list", "data": svc.index.search(body.query, body.video, body.k)}
    mine = {v["video"] for v in svc.index.videos(owner=viewer)}
    hits = svc.index.search(body.query, body.video, min(100, body.k * 10)) if mine else []
    return {"object": "list", "data": [h for h in hits if h["video"] in mine][:body.k]}


def _add_library_routes(app, svc: VideoService, config: ConductorConfig):
    from apps.common import APIError

    @app.get("/videos")
    def videos(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": svc.index.videos(owner=_viewer(config, request))}

    @app.get("/videos/{video}")
    def video(video: str, request: Request, summary: bool = False, inline_thumbnails: bool = False) -> dict[str, Any]:
        from apps.video.analyze import analysis

        rec = _record(svc, video, _viewer(config, request))
        client = None
        if summary:
            from apps.client import ConductorClient

            client = ConductorClient.for_config(config, timeout=60)
        doc = analysis(rec, client, config.video.chat_model or config.default_model)
        doc["scenes"] = [{"start": s["start"], "end": s["end"], "thumbnail": f"videos/{video}/thumbnails/{i}.jpg",
                          "transcript": s["transcript"], "ocr": [x["text"] for x in s["ocr"]]}
                         for i, s in enumerate(rec["scenes"])]
        if inline_thumbnails:  # for UIs that cannot reach this replica's disk
            import base64

            for d, s in zip(doc["scenes"], rec["scenes"]):
                d["thumbnail"] = "data:image/jpeg;base64," + base64.b64encode(Path(s["thumbnail"]).read_bytes()).decode()
        return doc

    @app.get("/videos/{video}/thumbnails/{index}.jpg")
    def thumbnail(video: str, index: int, request: Request) -> FileResponse:
        rec = _record(svc, video, _viewer(config, request))
        if not 0 <= index < len(rec["scenes"]):
            raise APIError(404, f"video {video} has no segment {index}")
        return FileResponse(rec["scenes"][index]["thumbnail"], media_type="image/jpeg")

    return app


def _record(svc: VideoService, video: str, viewer: str | None) -> dict[str, Any]:
    """The video's record if `viewer` owns it (None: an admin). Another user's video is as unknown as none."""
    from apps.common import APIError
    from apps.video.index import owners

    rec = svc.index.record(video)
    if rec is None or (viewer is not None and viewer not in owners(rec)):
        raise APIError(404, f"unknown video id {video!r}")
    return rec


def _probe_then_process(svc: VideoService, path: Path, name: str, job: str | None = None) -> dict[str, Any]:
    from apps.common import APIError
    from apps.video.pipeline import file_id
    from apps.video.probe import ProbeError, probe

    try:
        probe(path, svc.vc.limits)
    except ProbeError as e:
        raise APIError(e.status, f"video rejected: {e}") from None
    known = svc.index.record(file_id(str(path)))
    if known is not None:  # same bytes already in the library: keep one copy, skip the work
        path.unlink(missing_ok=True)
        return known
    return svc.process(path, name, job)


async def _save_upload(request, folder: Path, name: str, limit: int) -> Path:
    """Stream the raw body to disk, refusing it as soon as it passes `limit` bytes."""
    from apps.common import APIError, stream_body_to

    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/"):
        raise APIError(415, "send the video as the raw request body (e.g. curl --data-binary @f.mp4 "
                            "-H 'content-type: video/mp4'), not as a multipart form")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"upload of {declared} bytes exceeds the limit of {limit} bytes", code="upload_too_large")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[-100:] or "upload.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex[:12]}-{safe}"
    try:
        with open(path, "wb") as f:
            size = await stream_body_to(request, f, limit)
    except APIError:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise APIError(400, "empty upload: send the video file as the request body")
    return path


def build_app(args: dict[str, Any]):
    """Serve Application for /v1/video (args = {"config": <dict>})."""
    from ray import serve

    config = config_from_dict(args["config"])
    res = config.video.resources

    def builder():
        return make_app(config)

    # The embedded Qdrant store allows one process: one replica unless a Qdrant server is configured.
    replicas = res.num_replicas or (1 if not config.video.qdrant_url else None)
    from deployments.secrets import with_secrets

    opts = res.serve_options("Video", fixed_replicas=replicas)
    from apps.common import guard_secrets

    opts = with_secrets(opts, [config.video.qdrant_api_key_env, config.video.caption_api_key_env,
                               *guard_secrets(config)])
    # FastAPI is built inside the replica (a module-level app with routes does not pickle).
    return serve.deployment(**opts)(serve.ingress(builder)()).bind()
