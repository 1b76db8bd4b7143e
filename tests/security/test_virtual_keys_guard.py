"""On a loopback server without keys, a request that bears a virtual key is still that key's: attributed to its
user and held to its limits (rate, expiry, revocation). Real HTTP through uvicorn and the guard."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from apps.common import install_common
from apps.keys import open_key_store
from apps.security import keys_required, request_user
from cluster.config import ConductorConfig


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ConductorConfig.model_validate({"server": {"port": port, "accounting": {
        "data_dir": str(tmp_path_factory.mktemp("accounting")), "key_cache_s": 0}}})
    assert not keys_required(config)
    app = FastAPI()
    install_common(app, config)

    @app.get("/v1/who")
    def who(request: Request) -> dict:
        key = getattr(request.state, "virtual_key", None)
        return {"user": request_user(request), "key": key.id if key else None}

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", open_key_store(config)
    srv.should_exit = True


def _who(base: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(base + "/v1/who", headers=headers, timeout=30)


def test_a_virtual_key_is_attributed_and_rate_limited_without_configured_keys(keyless):
    base, store = keyless
    assert _who(base).json() == {"user": "local", "key": None}
    plain, key = store.create("erin", rpm=2)
    assert _who(base, plain).json() == {"user": "erin", "key": key.id}
    assert _who(base, plain).status_code == 200
    limited = _who(base, plain)
    assert limited.status_code == 429 and "2 requests/minute" in limited.json()["error"]["message"]
    assert _who(base).status_code == 200  # the limit is the key's, not the machine's


def test_an_expired_or_revoked_virtual_key_is_refused_even_without_configured_keys(keyless):
    base, store = keyless
    expired, _ = store.create("frank", expires_at=time.time() - 5)
    r = _who(base, expired)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    revoked, key = store.create("frank")
    store.revoke(key.id)
    assert _who(base, revoked).status_code == 401
    # A key that was never issued means nothing on a keyless server, like any other bearer token there.
    assert _who(base, "sk-cnd-never-issued").json()["user"] == "local"
