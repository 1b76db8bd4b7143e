"""Records are written atomically and read defensively: a crash mid-write leaves the old record, a torn record is
skipped (and logged) without breaking a listing, and creating a collection never deletes one."""

from __future__ import annotations

import json
import logging
import os

import pytest

from cluster.files import atomic_write_json, read_jsonl


def test_a_write_that_fails_midway_leaves_the_old_record(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"
    atomic_write_json(path, {"v": 1})

    def crash(*_a, **_k):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rec.json"]  # no temp file left behind


def test_a_torn_trace_is_skipped_and_logged(tmp_path, caplog):
    from apps.agent.trace import Trace, TraceStore

    store = TraceStore(tmp_path)
    good = Trace(task="t", agent="a")
    store.save(good)
    (store.dir / "deadbeefdeadbeef.json").write_text('{"run_id": "deadbeefdeadbeef", "task": "x", "ste')
    with caplog.at_level(logging.WARNING):
        runs = store.list()
    assert [r["run_id"] for r in runs] == [good.run_id]
    assert "deadbeefdeadbeef" in caplog.text


def test_a_torn_history_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"run": 1}) + "\n" + json.dumps({"run": 2}) + "\n" + '{"run": 3, "ro')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"run": 1}, {"run": 2}]
    assert "line 3" in caplog.text


def test_creating_an_existing_collection_never_deletes_it(tmp_path):
    from deployments.vectorstore import EdgeStore, StoreError, StorePoint

    store = EdgeStore(tmp_path)
    store.create_collection("kb", 4, {"chunks": 1})
    store.upsert("kb", [StorePoint(id="00000000-0000-0000-0000-000000000001", dense=[1.0, 0, 0, 0],
                                   sparse=([1], [1.0]), payload={"source": "a.md"})])
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("kb", 4, {"chunks": 0})
    assert store.count("kb") == 1 and store.get_meta("kb") == {"chunks": 1}
    store.close()
