"""A key check in Serve's HTTP proxy for the applications Conductor mounts but did not write: each vLLM backend's
Ray LLM app under `/engines/<name>`. Conductor's own apps carry their guard (apps/security.py) inside; a foreign
app cannot, so the proxy checks these paths before routing.

Engine mounts are internal: the gateway reaches them with the internal key, users go through `/v1` (fallback,
limits, ownership). So a request under ENGINE_PREFIX needs a key whose sha256 is in the digests file that
`cluster.serve_app.deploy` writes (0600, atomically) — the internal key when keys are on; none on a keyless
loopback server. Without the file (nothing deployed yet, or deployed elsewhere) these paths are refused: fail
closed.

Installed through Ray's proxy callback: the local head (cluster/runtime.py) starts Ray with
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.mount_guard:proxy_middlewares.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Callable

ENGINE_PREFIX = "/engines/"
CALLBACK = "deployments.mount_guard:proxy_middlewares"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
DIGESTS_ENV = "CONDUCTOR_MOUNT_KEYS_FILE"


def digests_path() -> Path:
    return Path(os.environ.get(DIGESTS_ENV) or Path.home() / ".conductor" / "serve" / "mount-keys.json")


def write_digests(required: bool, keys: list[str], path: Path | None = None) -> Path:
    """Record which keys may reach engine mounts (their sha256 only), readable by this user alone."""
    from cluster.files import atomic_write

    path = path or digests_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"required": required, "digests": sorted({hashlib.sha256(k.encode()).hexdigest()
                                                                for k in keys if k})})
    atomic_write(path, body, mode=0o600)
    return path


class _Digests:
    """The digests file, re-read when it changes (a redeploy mints a new internal key)."""

    def __init__(self, path: Path):
        self.path, self.stamp, self.value = path, None, None

    def get(self) -> dict[str, Any] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self.stamp:
            try:
                self.value, self.stamp = json.loads(self.path.read_text()), stamp
            except (OSError, ValueError):
                return None
        return self.value


class EngineMountGuard:
    """Pure ASGI: every other path passes through untouched (streams and disconnects included)."""

    def __init__(self, app: Callable, path: Path | None = None):
        self.app, self.digests = app, _Digests(path or digests_path())

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket") or not scope.get("path", "").startswith(ENGINE_PREFIX):
            return await self.app(scope, receive, send)
        why = self._refusal(scope)
        if why is None:
            return await self.app(scope, receive, send)
        status, message = why
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        body = json.dumps({"error": {"message": message, "type": "authentication_error", "param": None,
                                     "code": "engine_mount_refused"}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        allowed = self.digests.get()
        if allowed is None:
            return 503, "engine mounts are closed until Conductor has deployed its keys"
        if not allowed.get("required"):
            return None
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        digest = hashlib.sha256(key.encode()).hexdigest() if key else ""
        if digest and any(hmac.compare_digest(digest, d) for d in allowed.get("digests", [])):
            return None
        return 401, "engine mounts are internal: call the model through /v1 (missing or invalid key)"


def proxy_middlewares() -> list[Any]:
    """Ray's proxy callback: the middlewares its HTTP proxy wraps every request in."""
    from starlette.middleware import Middleware

    return [Middleware(EngineMountGuard)]
