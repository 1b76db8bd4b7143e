"""The detective over HTTP, mounted by cluster/serve_app.py under `/v1/detect`:

  POST /                       {"path": ..., "context_length": N, "run": bool}  -> the report JSON
  POST /upload?filename=NAME   raw body: one .safetensors or .gguf file (size-limited as it streams) -> report
  GET  /families               the reference families and where they come from
  GET  /healthz

Paths are checked against `detective.path_roots` (see DetectiveConfig). Bad input is a 4xx with the reason.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the string annotations against module globals
from pydantic import BaseModel, Field

from cluster.config import ConductorConfig, config_from_dict, expand_path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class DetectRequest(BaseModel):
    path: str = Field(..., min_length=1, max_length=4096, description="Server-side model folder or file.")
    context_length: int | None = Field(None, ge=1, le=100_000_000, description="For the KV-cache estimate.")
    run: bool = Field(False, description="Also load the model and score attention heads (small models only).")


def check_path(config: ConductorConfig, path: str) -> str:
    """Resolve and authorise a server-side path; raises APIError(403) outside the allowed roots."""
    from apps.common import APIError

    real = os.path.realpath(expand_path(path))
    roots = [os.path.realpath(expand_path(r)) for r in config.detective.path_roots]
    if not roots:
        if config.server.host in LOOPBACK:
            return real
        raise APIError(403, "path requests are disabled on an exposed server (set detective.path_roots); "
                            "upload the file instead")
    if any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
        return real
    raise APIError(403, f"{path!r} is not under detective.path_roots")


def run_detection(config: ConductorConfig, path: str, context_length: int | None, run: bool) -> dict[str, Any]:
    """Shared by the HTTP app and the UI: report (+ attention analysis) or APIError with a 4xx."""
    from apps.common import APIError
    from apps.detective import DetectiveError, inspect_model

    try:
        report = inspect_model(path, context_length or config.detective.default_context)
        data = report.model_dump()
        if run:
            if not config.detective.allow_run:
                raise APIError(403, "attention runs are disabled on this server (detective.allow_run)")
            from apps.detective.attention import analyze_attention

            data["attention_analysis"] = analyze_attention(
                path, report, max_params=config.detective.run_max_params).model_dump()
    except DetectiveError as e:
        raise APIError(404 if "no such file" in str(e) else 400, str(e)) from None
    except OSError as e:
        raise APIError(400, f"cannot read the model: {e.strerror or e}") from None
    return data


def create_app(config: ConductorConfig) -> Any:
    """The FastAPI app (testable without Serve)."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from apps.common import APIError, install_common, raw_upload, stream_body_to

    app = FastAPI(title="Conductor model detective")
    install_common(app, config)

    @app.middleware("http")
    async def _bare_prefix(request: Request, call_next: Any) -> Any:
        # Mounted at /v1/detect, `POST /v1/detect` arrives with an empty path under the root path; serve it as "/"
        # instead of answering with a slash redirect that clients would turn into a GET.
        scope = request.scope
        root = scope.get("root_path", "")
        if root and scope.get("path") == root:
            scope["path"] = root + "/"
            scope["raw_path"] = scope["path"].encode()
        return await call_next(request)
    limit = config.detective.max_upload_bytes

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/families")
    def families() -> dict[str, Any]:
        from apps.detective.families import load_references

        refs = load_references()
        return {"transformers_version": refs["transformers_version"],
                "families": [{"family": k, "name": v["name"], "config_class": v["config_class"]}
                             for k, v in refs["families"].items()]}

    @app.post("/")
    async def detect(req: DetectRequest) -> Any:
        path = check_path(config, req.path)
        return await run_in_threadpool(run_detection, config, path, req.context_length, req.run)

    @app.post("/upload")
    @raw_upload("application/octet-stream")
    async def upload(request: Request, filename: str, context_length: int | None = None) -> Any:
        name = _SAFE.sub("_", os.path.basename(filename)).lstrip(".")
        if not name.lower().endswith((".safetensors", ".gguf")):
            raise APIError(415, f"unsupported file {filename!r}: upload one .safetensors or .gguf file")
        if context_length is not None and not 1 <= context_length <= 100_000_000:
            raise APIError(400, "context_length must be between 1 and 100000000")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"upload of {declared} bytes exceeds the limit of {limit} bytes", code="upload_too_large")
        with tempfile.TemporaryDirectory(prefix="conductor-detect-") as tmp:
            target = os.path.join(tmp, name)
            with open(target, "wb") as f:
                size = await stream_body_to(request, f, limit)
            if size == 0:
                raise APIError(400, "the uploaded file is empty")
            data = await run_in_threadpool(run_detection, config, target, context_length, False)
        data["path"] = name  # the temporary location means nothing to the caller
        data["files"] = [name]
        return data

    return app


def build_app(args: dict[str, Any]) -> Any:
    """Serve entry point: args = {"config": <dict>}. Stateless, so replicas may autoscale."""
    config = config_from_dict(args["config"])
    opts = config.detective.resources.serve_options("DetectiveIngress")
    from apps.common import config_ingress_app

    return config_ingress_app(create_app, opts, config)
