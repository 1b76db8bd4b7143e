"""Engine mounts under /engines/ (vLLM's Ray LLM apps, which carry no guard of their own) are checked by Serve's
proxy: only the internal key reaches them when keys are on; without the keys file they are closed.

vLLM cannot run on this CPU machine, so a plain Serve application stands in for the foreign app at the same
kind of mount: what is under test is the proxy's check in front of it, in the real proxy of the test stack."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from deployments.mount_guard import DIGESTS_ENV, write_digests

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def mount(serve_stack):
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class ForeignEngine:  # no Conductor guard inside, like Ray's OpenAI app
        async def __call__(self, request) -> dict:
            return {"served": request.url.path}

    serve.run(ForeignEngine.bind(), name="foreign-engine", route_prefix="/engines/foreign", blocking=False)
    url = serve_stack.base_url + "/engines/foreign/v1/models"
    deadline = time.time() + 120
    while time.time() < deadline and httpx.get(url, timeout=10).status_code == 404:
        time.sleep(0.5)
    yield url
    serve.delete("foreign-engine")


def _wait_for(url: str, key: str | None, status: int) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.time() + 10  # the guard notices a rewritten keys file on its next request
    while True:
        r = httpx.get(url, headers=headers, timeout=10)
        if r.status_code == status or time.time() > deadline:
            return r
        time.sleep(0.2)


def test_deploy_records_only_the_internal_keys_digest(serve_stack):
    path = Path(os.environ[DIGESTS_ENV])
    doc = json.loads(path.read_text())
    assert doc["required"] is True and len(doc["digests"]) == 1  # the internal key, not the users'
    assert hashlib.sha256(serve_stack.api_key.encode()).hexdigest() not in doc["digests"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_engine_mounts_need_the_internal_key(serve_stack, mount):
    path = Path(os.environ[DIGESTS_ENV])
    deployed = path.read_bytes()
    try:
        r = _wait_for(mount, None, 401)
        assert r.status_code == 401 and r.json()["error"]["code"] == "engine_mount_refused"
        assert _wait_for(mount, serve_stack.api_key, 401).status_code == 401  # a user's key: go through /v1
        write_digests(True, ["k-internal-for-this-test"], path)
        r = _wait_for(mount, "k-internal-for-this-test", 200)
        assert r.status_code == 200 and r.json() == {"served": "/engines/foreign/v1/models"}
        path.unlink()  # no keys deployed: closed, not open
        assert _wait_for(mount, "k-internal-for-this-test", 503).status_code == 503
        write_digests(False, [], path)  # a keyless loopback server: open, like every other route there
        assert _wait_for(mount, None, 200).status_code == 200
    finally:
        path.write_bytes(deployed)
        os.chmod(path, 0o600)
    # Conductor's own routes are not the proxy guard's business.
    with serve_stack.http() as me:
        assert me.get("/v1/models").status_code == 200
