"""The runs database (apps/agent/run_store.py) on SQLite and on a real PostgreSQL server started by the tests."""

from __future__ import annotations

import pytest

from apps.agent.run_store import SQLRunStore
from apps.agent.trace import Step, Trace


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def test_save_get_list_by_owner(store_url):
    store = SQLRunStore(store_url)
    a = Trace(task="alpha", agent="math", owner="ada")
    b = Trace(task="beta", agent="math", owner="bob")
    store.save(a)
    store.save(b)
    a.steps.append(Step(index=0, agent="math"))
    a.status, a.answer = "done", "42"
    store.save(a)  # an upsert: the same run, newer state
    assert store.get(a.run_id).answer == "42" and len(store.get(a.run_id).steps) == 1
    mine = [r["run_id"] for r in store.list(owner="ada")]
    assert a.run_id in mine and b.run_id not in mine
    assert {r["run_id"] for r in store.list(500)} >= {a.run_id, b.run_id}
    with pytest.raises(KeyError):
        store.get("no-such-run")
    with pytest.raises(KeyError):
        store.get("../etc/passwd")
    # A second store on the same database (another replica) sees the same runs.
    assert SQLRunStore(store_url).get(b.run_id).task == "beta"


def test_sessions_in_the_database(store_url):
    store = SQLRunStore(store_url)
    assert store.get_session("s-1") is None
    store.put_session("s-1", "ada", [{"task": "hi", "answer": "hello"}])
    store.put_session("s-1", "ada", [{"task": "hi", "answer": "hello"}, {"task": "and?", "answer": "bye"}])
    assert store.get_session("s-1") == {"owner": "ada", "turns": [{"task": "hi", "answer": "hello"},
                                                                   {"task": "and?", "answer": "bye"}]}
    assert [s["session_id"] for s in store.list_sessions("ada")] == ["s-1"]
    assert store.list_sessions("bob") == []
