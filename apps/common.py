"""What every Conductor HTTP ingress shares: OpenAI-style errors, API keys, body limits, rate limits.

Every Serve application's FastAPI app calls `install_common(app, config)`; the gateway and each app enforce the
same keys and limits because each is reachable through the same Serve proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from apps.client import ConductorAPIError
from cluster.config import ConductorConfig, config_from_dict

log = logging.getLogger("conductor.http")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Paths anyone on the bind address may read: liveness, and the UI's own static/queue routes (the UI does its own
# login when keys are required).
PUBLIC_PREFIXES = ("/healthz", "/ui")


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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(raw: str) -> dict[str, str]:
    """`user:key,user2:key2` (or bare keys) -> {key: user}."""
    keys: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        user, _, key = item.rpartition(":")
        keys[key] = user or f"key-{key[:4]}"
    return keys


def with_deploy_secrets(config: ConductorConfig, environ: dict[str, str] | None = None) -> ConductorConfig:
    """Run where the operator's environment is (the CLI / driver): hash the user keys and mint the internal key
    that apps use to call the gateway. Replicas receive only hashes (plus the internal key)."""
    env = os.environ if environ is None else environ
    hashes = {hash_key(k): u for k, u in parse_api_keys(env.get(config.server.api_keys_env, "")).items()}
    internal = config.server.internal_api_key or env.get("CONDUCTOR_API_KEY") or secrets.token_urlsafe(24)
    server = config.server.model_copy(update={"api_key_hashes": {**config.server.api_key_hashes, **hashes},
                                              "internal_api_key": internal})
    return config.model_copy(update={"server": server})


def load_api_keys(config: ConductorConfig) -> dict[str, str]:
    """sha256(key) -> user, including the internal key."""
    hashes = dict(config.server.api_key_hashes)
    if config.server.internal_api_key:
        hashes.setdefault(hash_key(config.server.internal_api_key), "conductor-internal")
    return hashes


def keys_required(config: ConductorConfig, keys: dict[str, str]) -> bool:
    if config.server.require_api_key is not None:
        return config.server.require_api_key
    return config.server.host not in LOOPBACK or any(u != "conductor-internal" for u in keys.values())


def export_client_env(config: ConductorConfig) -> None:
    """Inside a replica: let `ConductorClient()` find the gateway and authenticate as the internal user."""
    # Overwrite, don't default: a replica inherits its raylet's environment, which may carry another server's
    # address; the config this replica was deployed with is the truth.
    host = config.server.host if config.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    os.environ["CONDUCTOR_BASE_URL"] = f"http://{host}:{config.server.port}"
    if config.server.internal_api_key:
        os.environ["CONDUCTOR_API_KEY"] = config.server.internal_api_key


class RateLimiter:
    """Fixed one-minute windows per user, counted in this replica's memory."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def _incr(self, user: str, window: int) -> int:
        with self._lock:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            n = self._counts.get((user, window), 0) + 1
            self._counts[(user, window)] = n
        return n

    def allow(self, user: str) -> tuple[bool, int]:
        """(allowed, seconds until the window resets)."""
        if self.per_minute <= 0:
            return True, 0
        now = time.time()
        return self._incr(user, int(now // 60)) <= self.per_minute, 60 - int(now % 60)


class RedisRateLimiter(RateLimiter):
    """The same windows, counted in Redis so every replica of every app shares one budget per user.
    If Redis stops answering, requests are let through (and logged) rather than failing the API."""

    def __init__(self, per_minute: int, url: str, prefix: str = "conductor:rl"):
        super().__init__(per_minute)
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix

    def _incr(self, user: str, window: int) -> int:
        key = f"{self.prefix}:{user}:{window}"
        try:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, 120)
            return int(pipe.execute()[0])
        except Exception as e:  # fail open: a limiter outage must not become an API outage
            log.warning("rate limiter: redis unavailable (%s); allowing request", type(e).__name__)
            return 0


def make_rate_limiter(config: ConductorConfig) -> RateLimiter:
    per_minute = config.server.rate_limit_per_minute
    if per_minute > 0 and config.server.redis_url:
        return RedisRateLimiter(per_minute, config.server.redis_url)
    return RateLimiter(per_minute)


def bearer_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def install_common(app: FastAPI, config: ConductorConfig, max_body_bytes: int | None = None) -> None:
    """Error handlers, API-key check, rate limit, and a body-size cap checked before the body is parsed."""
    export_client_env(config)
    keys = load_api_keys(config)
    required = keys_required(config, keys)
    limiter = make_rate_limiter(config)
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

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
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

    @app.middleware("http")
    async def _guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        path = request.scope.get("path", "")
        rel = path[len(request.scope.get("root_path", "")):] if path.startswith(request.scope.get("root_path", "")) else path
        user = "anonymous"
        if required and not rel.startswith(PUBLIC_PREFIXES):
            key = bearer_key(request)
            digest = hash_key(key) if key else ""
            match = next((u for h, u in keys.items() if digest and hmac.compare_digest(h, digest)), None)
            if match is None:
                return error_response(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                                      "authentication_error", "invalid_api_key")
            user = match
        request.state.user = user
        if not rel.startswith(PUBLIC_PREFIXES):
            ok, retry = limiter.allow(user)
            if not ok:
                return error_response(429, f"rate limit of {limiter.per_minute} requests/minute exceeded",
                                      "rate_limit_error", "rate_limited", headers={"Retry-After": str(retry)})
        declared = request.headers.get("content-length")
        if declared is not None and not request.headers.get("content-type", "").startswith("multipart/"):
            try:
                too_big = int(declared) > limit
            except ValueError:
                return error_response(400, "invalid Content-Length header")
            if too_big:
                return error_response(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                                      code="body_too_large")
        return await call_next(request)


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
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}") from None
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


def config_ingress_app(build_asgi: Any, options: dict[str, Any], config: ConductorConfig) -> Any:
    """A bound Serve application whose replica rebuilds `config` from a dict and builds its FastAPI app with
    `build_asgi(config)` inside the replica (apps holding Gradio blocks or closures cannot be pickled)."""
    from ray import serve

    @serve.ingress()
    class ConfigIngress:
        def __init__(self, config: dict[str, Any]):
            self.config = config_from_dict(config)

        def __serve_build_asgi_app__(self) -> Any:
            return build_asgi(self.config)

    return serve.deployment(ConfigIngress).options(**options).bind(config.model_dump())
