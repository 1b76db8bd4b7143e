"""The Qdrant wrapper, on both embedded engines (qdrant-edge-py and qdrant-client local mode).

Server mode (qdrant-client with a URL) runs the same ClientStore code; no Qdrant server binary can be installed on
these machines, so it is exercised through client-local only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployments.vectorstore import (ClientStore, CollectionNotFound, EdgeStore, StoreError, StoreLockedError,
                                     StorePoint, point_id)


@pytest.fixture(params=["edge", "client-local"])
def store(request, tmp_path):
    s = EdgeStore(tmp_path / "edge") if request.param == "edge" else ClientStore(path=tmp_path / "local")
    yield s
    s.close()


def _pt(i: int, vec: list[float], terms: list[int], source: str) -> StorePoint:
    return StorePoint(point_id(source, str(i)), vec, (terms, [1.0] * len(terms)),
                      {"source": source, "doc_key": f"{source}|h", "text": f"t{i}"})


def test_contract(store):
    assert store.list_collections() == []
    with pytest.raises(CollectionNotFound):
        store.get_meta("nope")
    store.create_collection("c1", 3, {"embedding_model": "m", "dim": 3})
    assert store.list_collections() == ["c1"] and store.get_meta("c1")["embedding_model"] == "m"
    store.upsert("c1", [_pt(0, [1, 0, 0], [7], "a"), _pt(1, [0, 1, 0], [8, 9], "b"), _pt(2, [0, 0, 1], [9], "b")])
    store.upsert("c1", [_pt(0, [1, 0, 0], [7], "a")])  # same id again: overwritten, not duplicated
    assert store.count("c1") == 3 and store.count("c1", "source", "b") == 2
    dense = store.query("c1", [0.9, 0.1, 0], None, "dense", 2, 10)
    assert [h.payload["source"] for h in dense] == ["a", "b"] and dense[0].dense is not None
    sparse = store.query("c1", [1, 0, 0], ([8], [1.0]), "sparse", 5, 10)
    assert [h.payload["text"] for h in sparse] == ["t1"]
    hybrid = store.query("c1", [0, 0, 1], ([8], [1.0]), "hybrid", 3, 10)
    assert {h.payload["text"] for h in hybrid[:2]} == {"t1", "t2"}  # one from each retriever at the top
    store.delete_where("c1", "source", ["b"])
    assert [p["source"] for p in store.iter_payloads("c1", ["source"])] == ["a"]
    store.delete_collection("c1")
    assert store.list_collections() == []


def test_bad_collection_name(store):
    with pytest.raises(StoreError, match="invalid collection name"):
        store.create_collection("../etc", 3, {})


LOCK_SCRIPT = """
import sys
from deployments.vectorstore import EdgeStore, ClientStore, StoreLockedError
kind, root = sys.argv[1], sys.argv[2]
try:
    s = EdgeStore(root) if kind == "edge" else ClientStore(path=root)
    s.count("c1")
    print("OPENED")
except StoreLockedError as e:
    print("LOCKED", e)
"""


@pytest.mark.parametrize("kind", ["edge", "client-local"])
def test_second_process_gets_a_clear_lock_error(tmp_path, kind):
    root = tmp_path / kind
    s = EdgeStore(root) if kind == "edge" else ClientStore(path=root)
    s.create_collection("c1", 3, {"embedding_model": "m"})
    s.upsert("c1", [_pt(0, [1, 0, 0], [1], "a")])
    out = subprocess.run([sys.executable, "-c", LOCK_SCRIPT, kind, str(root)], capture_output=True, text=True,
                         timeout=120, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert "LOCKED" in out.stdout, out.stdout + out.stderr
    assert "another process" in out.stdout
    s.close()
    out = subprocess.run([sys.executable, "-c", LOCK_SCRIPT, kind, str(root)], capture_output=True, text=True,
                         timeout=120, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert "OPENED" in out.stdout, out.stdout + out.stderr
