"""An app that calls another app for a request does it as that request's user: the guard records the user for the
request, ConductorClient (with the internal key) says which user it acts for, and the guard on the other side
honours that only for the internal key. Real HTTP on loopback through uvicorn, both hops guarded."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from apps.client import ACTING_FOR, ConductorClient, acting_for
from apps.common import hash_key, install_common
from apps.security import request_user
from cluster.config import ConductorConfig
from tests.conftest import free_port

INTERNAL = "k-internal-0123456789"


@pytest.fixture(scope="module")
def server():
    import uvicorn

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = ConductorConfig.model_validate({"server": {
        "require_api_key": True, "port": port, "internal_api_key": INTERNAL,
        "api_key_hashes": {hash_key("k-alice"): "alice", hash_key("k-bob"): "bob"}}})
    app = FastAPI()
    install_common(app, config)

    @app.get("/v1/who")
    def who(request: Request) -> dict:  # sync: runs in the thread pool, which carries the request's context
        return {"user": request_user(request), "acting": ACTING_FOR.get()}

    @app.get("/v1/relay")
    async def relay() -> dict:
        def call() -> dict:
            with ConductorClient(base_url=base, api_key=INTERNAL) as c:  # an app's own client: the internal key
                return c.request("GET", "/v1/who")
        return await asyncio.to_thread(call)

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield base
    srv.should_exit = True


def _get(base: str, path: str, key: str, **headers: str) -> httpx.Response:
    return httpx.get(base + path, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30)


def test_a_relayed_call_is_made_as_the_requests_user(server):
    assert _get(server, "/v1/who", "k-alice").json() == {"user": "alice", "acting": "alice"}
    assert _get(server, "/v1/relay", "k-alice").json()["user"] == "alice"
    assert _get(server, "/v1/relay", "k-bob").json()["user"] == "bob"
    # The app's own calls, for no user, are the internal user's.
    assert _get(server, "/v1/who", INTERNAL).json() == {"user": "conductor-internal", "acting": None}


def test_only_the_internal_key_may_act_for_someone(server):
    r = _get(server, "/v1/who", "k-bob", **{"x-conductor-user": "alice"})
    assert r.json()["user"] == "bob"
    assert _get(server, "/v1/who", INTERNAL, **{"x-conductor-user": "alice"}).json()["user"] == "alice"


def test_an_unusable_user_name_is_refused_not_dropped(server):
    # Dropping it would turn the request into the internal user's, who is more than any user.
    for bad in ("%00", "%0Aalice", "a" * 300):
        r = _get(server, "/v1/who", INTERNAL, **{"x-conductor-user": bad})
        assert r.status_code == 400 and "x-conductor-user" in r.json()["error"]["message"], bad


def test_any_user_name_travels_intact(server):
    with acting_for("zoë o'neil, ops/eu"), ConductorClient(base_url=server, api_key=INTERNAL) as c:
        assert c.request("GET", "/v1/who")["user"] == "zoë o'neil, ops/eu"
    with ConductorClient(base_url=server, api_key=INTERNAL, acting_user=lambda: "carol") as c:
        assert c.request("GET", "/v1/who")["user"] == "carol"
