"""What every Conductor HTTP ingress shares: OpenAI-style errors, API keys, body limits, rate limits.

Every Serve application's FastAPI app calls `install_common(app, config)`; the gateway and each app enforce the
same keys and limits because each is reachable through the same Serve proxy.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from apps.client import ConductorAPIError
from apps.security import (MAX_JSON_DEPTH, depth_exceeds, hash_key, keys_required,  # noqa: F401 - re-exported
                           load_api_keys, public, raw_upload)
from cluster.config import ConductorConfig, config_from_dict

log = logging.getLogger("conductor.http")


class APIError(Exception):
    """Raise anywhere in a route: becomes {"error": {...}} with this status. Use 4xx for the caller's mistakes."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=headers)


def parse_api_keys(raw: str) -> dict[str, str]:
    """`user:key,user2:key2` (or bare keys) -> {key: user}."""
    keys: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        user, _, key = item.rpartition(":")
        keys[key] = user or f"key-{hash_key(key)[:8]}"
    return keys


def with_deploy_secrets(config: ConductorConfig, environ: dict[str, str] | None = None) -> ConductorConfig:
    """Run where the operator's environment is (the CLI / driver): hash the user keys and mint the internal key
    that apps use to call the gateway. Replicas receive only hashes (plus the internal key)."""
    env = os.environ if environ is None else environ
    hashes = {hash_key(k): u for k, u in parse_api_keys(env.get(config.server.api_keys_env, "")).items()}
    # Minted here unless the operator shares one across separately built apps (`serve deploy`) through
    # CONDUCTOR_INTERNAL_KEY. Never CONDUCTOR_API_KEY: that is a user's key and must stay that user's.
    internal = config.server.internal_api_key or env.get("CONDUCTOR_INTERNAL_KEY") or secrets.token_urlsafe(24)
    server = config.server.model_copy(update={"api_key_hashes": {**config.server.api_key_hashes, **hashes},
                                              "internal_api_key": internal})
    return config.model_copy(update={"server": server})


def install_common(app: FastAPI, config: ConductorConfig, max_body_bytes: int | None = None) -> None:
    """Error handlers and the guard (apps/security.py): cross-site checks, keys by route, lockouts, rate limits
    and a JSON body cap checked before the body is parsed (upload routes stream under their own caps)."""
    limit = max_body_bytes or config.server.max_body_bytes

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        return error_response(400, msg, param=where or None)

    # Starlette's class, not FastAPI's subclass: the router's own 404/405 keep OpenAI's error shape too.
    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500
                              else "server_error", headers=getattr(exc, "headers", None))

    @app.exception_handler(httpx.HTTPError)
    async def _upstream(_: Request, exc: httpx.HTTPError) -> JSONResponse:
        # A dependency (the gateway, a hosted API) is unreachable: the caller did nothing wrong, and it is no bug.
        return error_response(502, f"an upstream service is unavailable: {type(exc).__name__}", "upstream_error")

    @app.exception_handler(ConductorAPIError)
    async def _gateway_said_no(_: Request, exc: ConductorAPIError) -> JSONResponse:
        status = 503 if exc.status in (429, 503) else 502
        return error_response(status, f"the model gateway answered {exc.status}: {exc.message}", "upstream_error")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")

    from apps.security import Guard

    app.add_middleware(Guard, fastapi_app=app, config=config, max_body_bytes=limit)


async def read_json_body(request: Request, limit: int) -> dict[str, Any]:
    """Read at most `limit` bytes (chunked bodies too), then parse: 413 / 400 with a reason, never a 500."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "request body is empty; expected a JSON object")
    return parse_json_object(raw)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from untrusted bytes: 400 for bad UTF-8, NaN/Infinity, nesting past MAX_JSON_DEPTH, or not
    an object."""
    if depth_exceeds(raw, MAX_JSON_DEPTH):
        raise APIError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}"[:300]) from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    return body


async def stream_body_to(request: Request, f: Any, limit: int) -> int:
    """Copy the request body into the open file `f`, refusing it with 413 as soon as it passes `limit` bytes
    (chunked bodies declare no length, so count as it arrives). Returns the byte count; the caller removes a
    partial file."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"upload exceeds the limit of {limit} bytes", code="upload_too_large")
        f.write(chunk)
    return size


def guard_secrets(config: ConductorConfig) -> list[str | None]:
    """The secrets every ingress's guard needs: the accounting database's URL, where virtual keys live."""
    return [config.server.accounting.db_url_env]


def config_ingress_app(build_asgi: Any, options: dict[str, Any], config: ConductorConfig) -> Any:
    """A bound Serve application whose replica rebuilds `config` from a dict and builds its FastAPI app with
    `build_asgi(config)` inside the replica (apps holding Gradio blocks or closures cannot be pickled)."""
    from ray import serve

    from deployments.secrets import with_secrets

    options = with_secrets(options, guard_secrets(config))

    @serve.ingress()
    class ConfigIngress:
        def __init__(self, config: dict[str, Any]):
            self.config = config_from_dict(config)

        def __serve_build_asgi_app__(self) -> Any:
            return build_asgi(self.config)

    return serve.deployment(ConfigIngress).options(**options).bind(config.model_dump())
