"""Every run, trace, approval, collection and cached answer belongs to the user whose key made it: another user
gets 404 (the same answer as for something that does not exist)."""

from __future__ import annotations

import pytest

from tests.stack import OTHER_KEY

pytestmark = pytest.mark.serve


def test_agent_runs_and_approvals_belong_to_their_owner(serve_stack):
    with serve_stack.http(timeout=300) as me:
        r = me.post("/v1/agent/runs", json={"task": "say hi", "agent": "calculator", "model": "echo",
                                             "stream": False})
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["owner"] == "tester"
        assert me.get(f"/v1/agent/runs/{run['run_id']}").status_code == 200
        assert run["run_id"] in str(me.get("/v1/agent/runs").json())
        # The owner may ask to approve (it is not paused: 409); another user is told the run does not exist.
        assert me.post(f"/v1/agent/runs/{run['run_id']}/approval", json={"approve": True}).status_code == 409
    with serve_stack.http(key=OTHER_KEY) as other:
        assert other.get(f"/v1/agent/runs/{run['run_id']}").status_code == 404
        assert run["run_id"] not in str(other.get("/v1/agent/runs").json())
        r = other.post(f"/v1/agent/runs/{run['run_id']}/approval", json={"approve": True})
        assert r.status_code == 404 and r.json()["error"]["code"] == "run_not_found"


def test_collections_live_in_each_users_namespace(serve_stack):
    mine = b"# Mine\n\nThe vault code is seven seven three.\n"
    theirs = b"# Theirs\n\nThe garden gate is painted green.\n"
    octet = {"content-type": "application/octet-stream"}
    with serve_stack.http(timeout=300) as me, serve_stack.http(key=OTHER_KEY, timeout=300) as other:
        assert me.post("/v1/rag/privatedocs/upload", params={"filename": "m.md"}, content=mine,
                       headers=octet).status_code == 200
        assert "privatedocs" in str(me.get("/v1/rag/collections").json())
        assert "privatedocs" not in str(other.get("/v1/rag/collections").json())
        for method, path, body in [("GET", "/v1/rag/privatedocs", None),
                                   ("POST", "/v1/rag/privatedocs/search", {"question": "vault code"}),
                                   ("GET", "/v1/rag/privatedocs/eval", None),
                                   ("DELETE", "/v1/rag/privatedocs", None)]:
            r = other.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
        # The same name is theirs to use, and holds only their documents.
        assert other.post("/v1/rag/privatedocs/upload", params={"filename": "t.md"}, content=theirs,
                          headers=octet).status_code == 200
        hits = other.post("/v1/rag/privatedocs/search", json={"question": "vault code", "k": 5}).json()["hits"]
        assert hits and all("vault" not in h["text"] for h in hits)
        hits = me.post("/v1/rag/privatedocs/search", json={"question": "vault code", "k": 5}).json()["hits"]
        assert any("vault" in h["text"] for h in hits)
        # Names may not reach into another namespace.
        assert other.get("/v1/rag/tester--privatedocs").status_code == 400
        assert me.delete("/v1/rag/privatedocs").status_code == 200
        assert other.delete("/v1/rag/privatedocs").status_code == 200
