"""Every run, trace, approval, collection and cached answer belongs to the user whose key made it: another user
gets 404 (the same answer as for something that does not exist)."""

from __future__ import annotations

import json

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
        assert other.get("/v1/rag/tester--privatedocs").status_code == 404
        assert me.delete("/v1/rag/privatedocs").status_code == 200
        assert other.delete("/v1/rag/privatedocs").status_code == 200


def test_an_agent_run_searches_only_its_owners_documents(serve_stack):
    """An agent's tools reach the RAG app as the run's owner (not as the app): the owner's run finds the owner's
    passage, another user's identical run finds nothing of it."""
    octet = {"content-type": "application/octet-stream"}
    collection = serve_stack.config.agent.rag_collection
    # The echo model repeats the task, so the task is the tool call the run makes.
    task = json.dumps({"tool": "search_documents", "args": {"query": "vault code", "k": 3}})
    body = {"task": task, "agent": "research", "model": "echo", "stream": False}
    with serve_stack.http(timeout=300) as me, serve_stack.http(key=OTHER_KEY, timeout=300) as other:
        assert me.post(f"/v1/rag/{collection}/upload", params={"filename": "vault.md"}, headers=octet,
                       content=b"# Vault\n\nThe vault code is seven seven three.\n").status_code == 200
        try:
            mine, theirs = (c.post("/v1/agent/runs", json=body) for c in (me, other))
            assert mine.status_code == 200 and theirs.status_code == 200, (mine.text, theirs.text)
            first = lambda run: run.json()["steps"][0]["calls"][0]  # noqa: E731
            assert first(mine)["tool"] == "search_documents" and "seven seven three" in first(mine)["result"]
            assert "seven seven three" not in json.dumps(theirs.json())
            assert first(theirs)["status"] == "error" and "does not exist" in first(theirs)["error"]
        finally:
            me.delete(f"/v1/rag/{collection}")



def test_an_owner_shares_a_collection_read_only(serve_stack):
    octet = {"content-type": "application/octet-stream"}
    with serve_stack.http(timeout=300) as me, serve_stack.http(key=OTHER_KEY, timeout=300) as other:
        assert me.post("/v1/rag/handbook/upload", params={"filename": "h.md"}, headers=octet,
                       content=b"# Handbook\n\nThe office opens at nine.\n").status_code == 200
        try:
            r = me.put("/v1/rag/handbook/sharing", json={"users": ["other", "other"]})
            assert r.status_code == 200 and r.json()["shared_with"] == ["other"], r.text
            stored = r.json()["stored_name"]
            listed = {c["name"]: c for c in other.get("/v1/rag/collections").json()["collections"]}
            assert stored in listed and listed[stored]["shared_by"] == "tester"
            assert "shared_with" not in listed[stored]  # who else may read it is the owner's business
            assert "shared_with" not in other.get(f"/v1/rag/{stored}").json()
            assert me.get("/v1/rag/handbook").json()["shared_with"] == ["other"]
            hits = other.post(f"/v1/rag/{stored}/search", json={"question": "when does the office open?"}).json()
            assert any("nine" in h["text"] for h in hits["hits"])
            # Read-only: no uploads, deletions, evaluations or re-sharing by the reader.
            assert other.post(f"/v1/rag/{stored}/upload", params={"filename": "x.md"}, headers=octet,
                              content=b"# x\n\ny\n").status_code == 403
            assert other.delete(f"/v1/rag/{stored}").status_code == 403
            assert other.put(f"/v1/rag/{stored}/sharing", json={"users": ["other", "eve"]}).status_code == 403
            # Unsharing takes it away again.
            assert me.put("/v1/rag/handbook/sharing", json={"users": []}).status_code == 200
            assert other.post(f"/v1/rag/{stored}/search", json={"question": "office"}).status_code == 404
            assert stored not in str(other.get("/v1/rag/collections").json())
            r = me.put("/v1/rag/handbook/sharing", json={"users": ["bad\nname"]})
            assert r.status_code == 400 and "invalid user name" in r.json()["error"]["message"]
        finally:
            assert me.delete("/v1/rag/handbook").status_code == 200
