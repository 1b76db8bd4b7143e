"""The RAG HTTP API (apps.rag.serve.create_app) over real HTTP, and through the served stack (marked serve)."""

from __future__ import annotations

import httpx
import pytest

from tests.rag.conftest import MD

OCTET = {"content-type": "application/octet-stream"}  # upload routes refuse text/plain and forms


@pytest.fixture
def http(rag_http):
    with httpx.Client(base_url=rag_http + "/v1/rag", timeout=120) as c:
        yield c


def _err(r: httpx.Response) -> str:
    return r.json()["error"]["message"]


def test_upload_query_context_and_stream(http, hosted_apis, monkeypatch, service):
    r = http.post("/kb/upload", params={"filename": "router.md"}, headers=OCTET, content=MD.encode())
    assert r.status_code == 200, r.text
    assert len(r.json()["added"]) == 1 and r.json()["chunks"] >= 1
    assert [c["name"] for c in http.get("/collections").json()["collections"]] == ["kb"]

    hits = http.post("/kb/search", json={"question": "error code QX-7741", "k": 2}).json()["hits"]
    assert "QX-7741" in hits[0]["text"]
    ctx = http.get("/kb/context", params={"source": hits[0]["source"], "start": hits[0]["start"],
                                          "end": hits[0]["end"]}).json()
    assert ctx["passage"] == hits[0]["text"]

    # answers through an OpenAI-protocol server (the gateway's role), whole and streamed
    from apps.client import ConductorClient

    service._client = ConductorClient(base_url=hosted_apis["a"].base_url.removesuffix("/v1"))
    ans = http.post("/kb/query", json={"question": "How do I reset the Zephyr router?"}).json()
    assert (ans["model_answer"] or ans["answer"]).startswith("hosted a:") and ans["sources"] and ans["warning"] is None
    events = []
    with http.stream("POST", "/kb/query", json={"question": "How do I reset the Zephyr router?",
                                                "stream": True}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(__import__("json").loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "sources" and "delta" in kinds and kinds[-1] == "answer"
    final = events[-1]  # the streamed words are the model's; an unsupported answer is replaced at the end
    assert "".join(e["text"] for e in events if e["type"] == "delta").strip() == (final["model_answer"] or
                                                                                   final["answer"])
    assert isinstance(final["grounded"], bool) and final["grounding"]["method"] == "embedding+lexical"


def test_bad_requests_get_clear_4xx(http, docs):
    assert http.post("/missing/query", json={"question": "hi"}).status_code == 404
    http.post("/kb/upload", params={"filename": "p.txt"}, headers=OCTET, content=(docs / "penguins.txt").read_bytes())
    r = http.post("/kb/query", json={"question": "   "})
    assert r.status_code == 400 and "empty" in _err(r)
    r = http.post("/kb/query", json={"k": 3})
    assert r.status_code == 400 and "question" in _err(r)
    r = http.post("/kb/upload", params={"filename": "x.exe"}, headers=OCTET, content=b"MZ")
    assert r.status_code == 415
    r = http.post("/kb/upload", params={"filename": "empty.md"}, headers=OCTET, content=b"")
    assert r.status_code == 400 and "empty" in _err(r)
    r = http.post("/kb/upload", params={"filename": "bin.txt"}, headers=OCTET, content=bytes(range(256)) * 4)
    assert r.status_code == 422 and "bin.txt: binary" in _err(r)  # the one file of the request is unusable
    r = http.post("/kb/ingest", json={"paths": ["/etc"]})
    assert r.status_code == 403
    r = http.post("/kb/eval", json={})
    assert r.status_code == 400 and "question set" in _err(r)
    assert http.get("/kb/eval").json() == {"history": []}
    r = http.post("/bad%20name/upload", params={"filename": "a.md"}, headers=OCTET, content=b"# x\n\ntext")
    assert r.status_code == 400 and "invalid collection name" in _err(r)


def test_oversized_upload_is_refused_before_it_is_stored(service, rag_config, tmp_path):
    """2 GB declared -> 413 at once; a chunked body without a length -> 413 once it passes the limit."""
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from apps.rag.serve import create_app
    from tests.conftest import free_port

    cfg = rag_config.model_copy(update={"server": rag_config.server.model_copy(update={"max_upload_bytes": 4096})})
    root = FastAPI()
    root.mount("/v1/rag", create_app(cfg, lambda: service))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}/v1/rag/kb/upload?filename=big.txt"
        # a client that declares 2 GB: the answer comes before the body is read (raw socket: httpx won't lie)
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/rag/kb/upload?filename=big.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/octet-stream\r\nContent-Length: 2147483648\r\n\r\n" + b"x" * 1000)
            head = sock.recv(4096).decode()
        assert head.startswith("HTTP/1.1 413") and "exceeds the limit" in head
        r = httpx.post(url, content=iter([b"word " * 1000] * 3), headers=OCTET, timeout=30)  # chunked, 15 kB
        assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
        uploads = tmp_path / "store" / "uploads" / "kb"
        assert not uploads.exists() or not any(uploads.iterdir())  # nothing stored, no temp file left
        assert not service.store.exists("kb")
    finally:
        server.should_exit = True


@pytest.mark.serve
def test_served_rag_app(serve_stack, docs):
    """Through the whole stack: upload, then an answer written by the served chat model."""
    with httpx.Client(base_url=serve_stack.base_url, timeout=300,
                      headers={"Authorization": f"Bearer {serve_stack.api_key}"}) as c:
        r = c.post("/v1/rag/stacktest/upload", params={"filename": "router.md"}, headers=OCTET, content=MD.encode())
        assert r.status_code == 200, r.text
        r = c.post("/v1/rag/stacktest/query", json={"question": "How do I reset the Zephyr router?", "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] and body["sources"][0]["source"].endswith("router.md")
        # the served local model wrote under the JSON schema: its citations are its own, not inferred
        assert body["citations_inferred"] is False and body["citations"], body
        assert isinstance(body["grounded"], bool) and body["grounding"]["method"] == "embedding+lexical"
        assert c.post("/v1/rag/nope/query", json={"question": "x"}).status_code == 404
