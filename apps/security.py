"""The guard in front of every Conductor ingress: cross-site checks, API keys, lockouts, rate limits, body limits.

Who may reach a route is decided by the route a request resolves to in the app's own route table, never by a
prefix of its path (a collection called `uidocs` is not the UI). Routes are guarded unless marked:

- `@public` on an endpoint: anyone on the bind address (only the gateway's `/healthz` is).
- the Gradio UI mounted at /ui: its login page and static assets (UI_PUBLIC_ROUTES, Gradio's own route templates)
  are public; every other UI route, Gradio's API under /ui/gradio_api/ included, needs the UI's login cookie or a key.
- `@raw_upload(types)` on an endpoint: the body is a file streamed by the route under its own upload limit, and
  must be declared as one of `types` (never a type a cross-site form may send without a preflight).

Order of checks, each a 4xx with a reason: Host and Origin (403), failed-key lockout per client address (429),
the key (401), the user's rate limit (429), the JSON body limit (413, chunked bodies counted as they arrive).
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from apps.client import ON_BEHALF_HEADER  # honoured only with the internal key: an app acting for a user
from apps.keys import hash_key
from cluster.config import ConductorConfig

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
INTERNAL_USER = "conductor-internal"
LOCAL_USER = "local"  # the one user of a loopback server without keys
# Gradio route templates a browser needs before it has signed in. Anything else under /ui is guarded.
UI_PUBLIC_ROUTES = {"/", "/login", "/login/", "/logout", "/config", "/config/", "/svelte/{path:path}",
                    "/static/{path:path}", "/assets/{path:path}", "/favicon.ico", "/theme.css", "/robots.txt",
                    "/pwa_icon", "/pwa_icon/{size}", "/manifest.json"}
# Content types a page on another site may POST without a CORS preflight: never accepted as an upload.
SIMPLE_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
MAX_JSON_DEPTH = 64  # deeper bodies are refused before any code walks them recursively
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether a JSON text nests deeper than `limit`, without recursion and at C speed: string literals are cut
    out (a bracket inside a string does not nest), then only the brackets are walked."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual case: too few brackets to nest that deep
        return False
    depth = 0
    for b in _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if b in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(raw: bytes) -> bool:
    """Whether a JSON body holds a string with half a UTF-16 surrogate pair (`"\\ud800"` alone). That is valid JSON
    but not text: every UTF-8 encoder downstream (llama.cpp's, a tokenizer's, the store's) fails on it, which would
    make a caller's mistake a server error. Only bodies with a surrogate escape are parsed here (a Python client
    escapes every emoji as a pair); a body that is not JSON is left for the route to refuse."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def request_user(request: Any) -> str:
    """The user the guard authenticated for this request (LOCAL_USER on a keyless server)."""
    return getattr(request.state, "user", LOCAL_USER)


def is_admin(config: ConductorConfig, user: str) -> bool:
    """Admins see every user's runs, collections and videos (server.admin_users). The internal user is not one:
    apps acting for a user say which with ON_BEHALF_HEADER, and what they do unattributed is the internal user's."""
    return user in config.server.admin_users


def public(fn: Callable) -> Callable:
    """Mark an endpoint as reachable without a key."""
    fn.__conductor_public__ = True  # type: ignore[attr-defined]
    return fn


def raw_upload(*content_types: str) -> Callable[[Callable], Callable]:
    """Mark an endpoint as a raw-body upload accepting these content types (`video/*` style wildcards allowed)."""
    def mark(fn: Callable) -> Callable:
        fn.__conductor_upload__ = tuple(content_types)  # type: ignore[attr-defined]
        return fn

    return mark


def load_api_keys(config: ConductorConfig) -> dict[str, str]:
    """sha256(key) -> user, including the internal key."""
    hashes = dict(config.server.api_key_hashes)
    if config.server.internal_api_key:
        hashes.setdefault(hash_key(config.server.internal_api_key), INTERNAL_USER)
    return hashes


def keys_required(config: ConductorConfig, keys: dict[str, str] | None = None) -> bool:
    keys = load_api_keys(config) if keys is None else keys
    if config.server.require_api_key is not None:
        return config.server.require_api_key
    return config.server.host not in LOOPBACK_NAMES or any(u != INTERNAL_USER for u in keys.values())


def bearer_key(headers: Any) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


class RouteInfo:
    """What the guard needs to know about the route a request resolves to."""

    def __init__(self, public: bool = False, upload: tuple[str, ...] | None = None, ui_app: Any = None):
        self.public, self.upload, self.ui_app = public, upload, ui_app


def resolve_route(app: Any, scope: dict[str, Any]) -> RouteInfo:
    """Find the route of `app` that `scope` fully matches; unmatched paths are guarded (they end in a 404)."""
    from starlette.routing import Match, Mount

    for route in app.router.routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # noqa: BLE001 - a route that cannot judge this scope does not match it
            continue
        if match != Match.FULL:
            continue
        if isinstance(route, Mount):
            return RouteInfo(public=_ui_public(route.app, {**scope, **child}), ui_app=route.app)
        endpoint = getattr(route, "endpoint", None)
        return RouteInfo(public=bool(getattr(endpoint, "__conductor_public__", False)),
                         upload=getattr(endpoint, "__conductor_upload__", None))
    return RouteInfo()


def _ui_public(ui_app: Any, scope: dict[str, Any]) -> bool:
    from starlette.routing import Match

    for route in getattr(ui_app, "routes", []):
        if getattr(route, "path", None) in UI_PUBLIC_ROUTES:
            try:
                if route.matches(scope)[0] == Match.FULL:
                    return True
            except Exception:  # noqa: BLE001
                continue
    return False


def ui_session_user(ui_app: Any, cookies: dict[str, str]) -> str | None:
    """The user a Gradio login cookie belongs to, or None (Gradio keeps its sessions in `app.tokens`)."""
    tokens = getattr(ui_app, "tokens", None)
    cookie_id = getattr(ui_app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        token = cookies.get(name)
        if token and token in tokens:
            return tokens[token]
    return None


def _host_name(netloc: str) -> str:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def cross_site_refusal(config: ConductorConfig, headers: Any, keys_on: bool) -> str | None:
    """Why this request must be refused as cross-site, or None. Host is checked only on a keyless server (DNS
    rebinding can only hurt where no key is needed); Origin always, since the UI's login cookie could ride along."""
    host = headers.get("host", "")
    allowed_hosts = LOOPBACK_NAMES | {h.lower() for h in config.server.allowed_hosts}
    if not keys_on and _host_name(host) not in allowed_hosts:
        return f"host {host!r} is not served here (loopback names and server.allowed_hosts only)"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin in config.server.allowed_origins:
        return None
    parts = urlsplit(origin)
    same = parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
    if same and (keys_on or _host_name(parts.netloc) in allowed_hosts):
        return None
    return f"cross-site request from origin {origin!r} refused (add it to server.allowed_origins to allow it)"


MAX_USER_NAME = 256


def _on_behalf(headers: Any) -> str | None:
    """The user an internal caller acts for; "" when the header is there but unusable (refused, never ignored:
    ignoring it would turn the request into the internal user's)."""
    quoted = headers.get(ON_BEHALF_HEADER)
    if quoted is None:
        return None
    name = unquote(quoted)  # percent-encoded by the client: any user name fits in a header
    return name if valid_user_name(name) else ""


def valid_user_name(name: str) -> bool:
    return 0 < len(name) <= MAX_USER_NAME and name.isprintable()


def _content_type_ok(ctype: str, allowed: tuple[str, ...]) -> bool:
    base = ctype.split(";", 1)[0].strip().lower()
    if not base or base in SIMPLE_FORM_TYPES:
        return False
    for a in allowed:
        if a == base or (a.endswith("/*") and base.startswith(a[:-1])):
            return True
    return False


async def send_error(send: Callable, status: int, message: str, type_: str = "invalid_request_error",
                     code: str | None = None, headers: dict[str, str] | None = None,
                     scope: dict[str, Any] | None = None) -> None:
    if scope is not None and scope["type"] == "websocket":  # no HTTP answer on a websocket: close it
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware (not BaseHTTPMiddleware: streams and client disconnects pass through untouched)."""

    def __init__(self, app: Any, fastapi_app: Any, config: ConductorConfig, max_body_bytes: int):
        from apps.limits import RateLimiter, make_counter

        self.app, self.fastapi_app, self.config = app, fastapi_app, config
        self.keys = load_api_keys(config)
        self.required = keys_required(config, self.keys)
        internal = config.server.internal_api_key
        self.internal_digest = hash_key(internal) if internal else None
        counter = self.counter = make_counter(config.server.redis_url)
        self._vkeys: Any = None
        self.limiter = RateLimiter(config.server.rate_limit_per_minute, counter, scope="user")
        self.lockout = RateLimiter(config.server.auth_failures_per_minute, counter, scope="authfail")
        self.max_body = max_body_bytes

    def _user_for(self, digest: str) -> str | None:
        return next((u for h, u in self.keys.items() if hmac.compare_digest(h, digest)), None)

    def _key_store(self) -> Any:
        """The virtual keys (apps/keys.py), opened on first use: an app whose callers never send one never opens
        the accounting database."""
        if self._vkeys is None:
            from apps.keys import open_key_store

            self._vkeys = open_key_store(self.config)
        return self._vkeys

    async def _virtual_key(self, scope: dict[str, Any], digest: str
                           ) -> tuple[Any, tuple[int, str, str, str, dict[str, str] | None] | None]:
        """(the virtual key with this digest or None, a refusal when it exists but may not be used now)."""
        import asyncio

        from apps.keys import Refused
        from apps.limits import RateLimiter

        try:
            key = await asyncio.to_thread(self._key_store().lookup, digest)
        except Exception:  # noqa: BLE001 - the key database is down and this key was never seen here
            return None, (503, "the key database is unavailable; try again shortly", "service_unavailable",
                          "key_store_unavailable", {"Retry-After": "5"})
        if key is None:
            return None, None
        try:
            key.check_usable()
        except Refused as e:
            return None, (e.status, e.message, "authentication_error", e.code, None)
        if key.rpm:
            ok, retry = await RateLimiter(key.rpm, self.counter, scope="vkey").allow(key.id)
            if not ok:
                return None, (429, f"API key {key.id} is limited to {key.rpm} requests/minute", "rate_limit_error",
                              "rate_limited", {"Retry-After": str(retry)})
        scope.setdefault("state", {})["virtual_key"] = key
        return key, None

    async def _authenticate(self, scope: dict[str, Any], headers: Any, route: RouteInfo
                            ) -> tuple[str | None, tuple[int, str, str, str, dict[str, str] | None] | None]:
        """(user, None) or (None, the refusal: status, message, type, code, headers)."""
        from starlette.requests import cookie_parser

        from apps.keys import KEY_PREFIX
        from apps.limits import AUTH_FAILURES

        key = bearer_key(headers) if not route.public else None
        digest = hash_key(key) if key else ""
        virtual = bool(key and key.startswith(KEY_PREFIX))
        if not self.required or route.public:
            if virtual:  # a virtual key is held to its limits even where no key is required
                found, refusal = await self._virtual_key(scope, digest)
                if refusal is not None or found is not None:
                    return (None, refusal) if refusal else (found.user, None)
            return LOCAL_USER, None
        address = (scope.get("client") or ("unknown", 0))[0]
        if digest and self.internal_digest and hmac.compare_digest(digest, self.internal_digest):
            acting = _on_behalf(headers)
            if acting == "":
                return None, (400, f"invalid {ON_BEHALF_HEADER} header", "invalid_request_error", None, None)
            return acting or INTERNAL_USER, None
        locked, retry = await self.lockout.exhausted(address)  # before the key is looked at: guessing is slowed
        if locked:
            AUTH_FAILURES.labels(outcome="locked_out").inc()
            return None, (429, f"too many requests with a wrong API key from this address; retry in {retry}s",
                          "rate_limit_error", "auth_locked_out", {"Retry-After": str(retry)})
        user = self._user_for(digest) if digest else None
        if user is None and virtual:
            found, refusal = await self._virtual_key(scope, digest)
            if refusal is not None:
                if refusal[0] == 401:
                    AUTH_FAILURES.labels(outcome="refused").inc()
                    await self.lockout.allow(address)
                return None, refusal
            user = found.user if found is not None else None
        if user is None and route.ui_app is not None:
            user = ui_session_user(route.ui_app, cookie_parser(headers.get("cookie", "")))
        if user is None:
            AUTH_FAILURES.labels(outcome="refused").inc()
            await self.lockout.allow(address)
            return None, (401, "missing or invalid API key (send Authorization: Bearer <key>)",
                          "authentication_error", "invalid_api_key", None)
        return user, None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers

        from apps.limits import ORIGIN_REFUSALS

        headers = Headers(scope=scope)
        rid = headers.get("x-request-id")
        if rid is not None and not _REQUEST_ID.fullmatch(rid):
            return await send_error(send, 400, "x-request-id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                                    code="invalid_request_id", scope=scope)
        why = cross_site_refusal(self.config, headers, self.required)
        if why:
            ORIGIN_REFUSALS.labels(reason="host" if why.startswith("host") else "origin").inc()
            return await send_error(send, 403, why, code="cross_site_refused", scope=scope)
        route = resolve_route(self.fastapi_app, scope)
        user, refusal = await self._authenticate(scope, headers, route)
        if refusal is not None:
            status, message, type_, code, extra = refusal
            return await send_error(send, status, message, type_, code, extra, scope=scope)
        scope.setdefault("state", {})["user"] = user
        if not route.public and route.ui_app is None and user != INTERNAL_USER:
            ok, retry = await self.limiter.allow(user)
            if not ok:
                return await send_error(send, 429, f"rate limit of {self.limiter.per_minute} requests/minute "
                                        "exceeded", "rate_limit_error", "rate_limited", {"Retry-After": str(retry)},
                                        scope=scope)
        if route.ui_app is not None or scope["type"] != "http":
            return await self._inner(scope, receive, send, headers, route)
        # What the app does for this request (calls to other apps included) it does as this request's user. Not on
        # UI routes: Gradio's queue runs events in tasks of its own, and the UI client says who per event.
        from apps.client import ACTING_FOR

        token = ACTING_FOR.set(None if user == INTERNAL_USER else user)
        try:
            return await self._inner(scope, receive, send, headers, route)
        finally:
            ACTING_FOR.reset(token)

    async def _inner(self, scope: dict[str, Any], receive: Callable, send: Callable, headers: Any,
                     route: RouteInfo) -> None:
        if route.upload is not None:
            if scope["type"] == "http" and scope.get("method") == "POST" and not _content_type_ok(
                    headers.get("content-type", ""), route.upload):
                return await send_error(send, 415, f"send the file as the raw request body with content-type "
                                        f"one of {', '.join(route.upload)} (got "
                                        f"{headers.get('content-type') or 'none'})", code="unsupported_media_type")
            return await self.app(scope, receive, send)
        if route.ui_app is not None or scope["type"] != "http":
            return await self.app(scope, receive, send)  # Gradio enforces its own upload cap (max_file_size)
        return await self._with_body_limit(scope, receive, send, headers)

    async def _with_body_limit(self, scope: dict[str, Any], receive: Callable, send: Callable, headers: Any) -> None:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await send_error(send, 400, "invalid Content-Length header")
            if int(declared) > self.max_body:
                return await send_error(send, 413, f"request body of {declared} bytes exceeds the limit of "
                                        f"{self.max_body} bytes", code="body_too_large")
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and declared is None:
            return await self.app(scope, receive, send)
        # Read the body here, within the limit (a chunked body declares no length), refuse JSON nested past what
        # any parser should walk, and replay it to the app.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await send_error(send, 413, f"request body exceeds the limit of {self.max_body} bytes",
                                        code="body_too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False
        if depth_exceeds(body, MAX_JSON_DEPTH):
            return await send_error(send, 400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        if lone_surrogate(body):
            return await send_error(send, 400, "request body has a string with half a UTF-16 surrogate pair "
                                    "(a \\uD800-\\uDFFF escape without its other half), which is not text")

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
