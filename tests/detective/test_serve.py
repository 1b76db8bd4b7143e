"""The detective's HTTP app: in-process through its ASGI app, and through the served stack (marked serve)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from apps.detective.serve import create_app
from cluster.config import ConductorConfig
from deployments import packaged

OCTET = {"content-type": "application/octet-stream"}  # upload routes refuse text/plain and forms


def _client(**detective) -> TestClient:
    config = ConductorConfig.model_validate({"detective": detective})
    return TestClient(create_app(config), base_url="http://127.0.0.1")


def test_detect_by_path():
    r = _client().post("/", json={"path": str(packaged.smollm2_gguf()), "context_length": 2048})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["family"] == "llama" and body["kv_cache_bytes_at_context"] == 2048 * 23040


def test_upload_and_limits(zoo, tmp_path):
    model = zoo("qwen3", hide="remove") / "model.safetensors"
    client = _client(max_upload_bytes=50 * 2**20)
    r = client.post("/upload", params={"filename": "mystery.safetensors"}, headers=OCTET, content=model.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["family"] == "qwen3" and r.json()["path"] == "mystery.safetensors"
    small = _client(max_upload_bytes=4096)
    assert small.post("/upload", params={"filename": "m.safetensors"}, headers=OCTET, content=model.read_bytes()).status_code == 413
    assert client.post("/upload", params={"filename": "m.bin"}, headers=OCTET, content=b"x" * 100).status_code == 415
    bad = client.post("/upload", params={"filename": "m.safetensors"}, headers=OCTET, content=b"definitely not a model" * 10)
    assert bad.status_code == 400 and "not a safetensors" in bad.json()["error"]["message"]


def test_bare_prefix_is_served_without_redirect():
    """Serve mounts the app at /v1/detect: `POST /v1/detect` (no trailing slash) must reach the detect route."""
    app = create_app(ConductorConfig())
    client = TestClient(app, root_path="/v1/detect", follow_redirects=False, base_url="http://127.0.0.1")
    r = client.post("/v1/detect", json={"path": str(packaged.minilm_dir())})
    assert r.status_code == 200 and r.json()["family"] == "bert"


def test_bad_requests_are_4xx(tmp_path):
    client = _client()
    assert client.post("/", json={"path": str(tmp_path / "nope")}).status_code == 404
    assert client.post("/", json={"path": str(tmp_path)}).status_code == 400
    assert client.post("/", json={}).status_code == 400
    assert client.post("/", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/", json={"path": "x", "context_length": 0}).status_code == 400


def test_path_roots(tmp_path):
    client = _client(path_roots=[str(tmp_path)])
    r = client.post("/", json={"path": str(packaged.minilm_dir())})
    assert r.status_code == 403 and "path_roots" in r.json()["error"]["message"]
    exposed = TestClient(create_app(ConductorConfig.model_validate({"server": {"host": "0.0.0.0",
                                                                              "require_api_key": False}})),
                         base_url="http://127.0.0.1")
    assert exposed.post("/", json={"path": str(packaged.minilm_dir())}).status_code == 403


def test_families_listing():
    body = _client().get("/families").json()
    assert {f["family"] for f in body["families"]} >= {"llama", "qwen3_moe", "deepseek_v3", "gpt2", "bert"}


@pytest.mark.serve
def test_served_detect(serve_stack):
    with serve_stack.http() as http:
        r = http.post("/v1/detect", json={"path": str(packaged.minilm_dir())})
        assert r.status_code == 200, r.text
        assert r.json()["family"] == "bert"
        assert http.post("/v1/detect", json={"path": "/definitely/missing"}).status_code == 404
