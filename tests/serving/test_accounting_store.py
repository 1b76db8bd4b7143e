"""Virtual keys, budgets and the spend log on both databases: a SQLite file and a real PostgreSQL server.

The budget race runs in two OS processes (two gateway replicas' worth of connections) with 50 threads each against
one key: spend ends at or above the budget and passes it by less than one request's cost."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from apps.gateway.spend import SpendLog, SpendRow
from apps.keys import KeyStore, Refused

WORST, ACTUAL, BUDGET_MICRO = 30, 7, 1000  # micro-dollars: each request reserves 30 and really costs 7


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'accounting.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    import psycopg

    name = f"acc_{int(time.time() * 1000) % 10**9}_{tmp_path.name[-8:].replace('-', '_')}".lower()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


def test_a_key_is_stored_hashed_and_revoke_and_rotate_take_effect(db_url):
    from apps.security import hash_key

    store = KeyStore(db_url, cache_s=0)
    plain, key = store.create("alice", team="ml", models=["echo"], budget_usd=1.5, period="day")
    assert plain.startswith("sk-cnd-") and plain not in repr(store.list())
    found = store.lookup(hash_key(plain))
    assert found.user == "alice" and found.models == ("echo",) and found.budget_micro == 1_500_000
    with pytest.raises(Refused, match="may not use model 'other'"):
        found.check_model("other")
    new_plain, rotated = store.rotate(key.id)
    assert rotated.id == key.id and store.lookup(hash_key(plain)) is None
    assert store.lookup(hash_key(new_plain)).id == key.id
    store.revoke(key.id)
    with pytest.raises(Refused, match="revoked"):
        store.lookup(hash_key(new_plain)).check_usable()
    assert store.rotate(key.id) is None  # a revoked key stays revoked


def test_an_expired_key_is_refused_with_the_time(db_url):
    store = KeyStore(db_url)
    _, key = store.create("bob", expires_at=time.time() - 1)
    with pytest.raises(Refused, match="expired at") as e:
        key.check_usable()
    assert e.value.status == 401


def test_reservations_hold_budget_until_settled(db_url):
    store = KeyStore(db_url)
    _, key = store.create("carol", budget_usd=BUDGET_MICRO / 1e6, tpm=100)
    held = store.reserve(key, 1200, 10)  # admitted: nothing was used or held yet
    with pytest.raises(Refused, match="budget"):  # all of it is held until that request settles
        store.reserve(key, 5, 1)
    store.settle(held, 500, 10)
    store.settle(held, 500, 10)  # settling twice changes nothing
    assert store.spent(key)["spent_usd"] == pytest.approx(500e-6) and store.spent(key)["reserved_usd"] == 0
    store.settle(store.reserve(key, 1, 95), 1, 95)
    with pytest.raises(Refused, match="tokens for this minute") as e:  # 105 of 100 tokens used this minute
        store.reserve(key, 1, 1)
    assert e.value.code == "tpm_exceeded" and store.spent(key)["reserved_usd"] == 0  # the refusal held nothing


def _race(url: str, key_id: str, threads: int, out: "multiprocessing.Queue") -> None:
    store = KeyStore(url)
    key = store.get(key_id)
    admitted = [0] * threads

    def client(i: int) -> None:
        while True:
            try:
                res = store.reserve(key, WORST, 1)
            except Refused:
                info = store.spent(key)
                if info["spent_usd"] * 1e6 >= BUDGET_MICRO - 1e-6:
                    return
                time.sleep(0.001)  # only in-flight reservations hold the rest: try again
                continue
            admitted[i] += 1
            store.settle(res, ACTUAL, 1)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(sum(admitted))


def test_a_budget_holds_across_two_processes_and_100_clients(db_url):
    store = KeyStore(db_url)
    _, key = store.create("dave", budget_usd=BUDGET_MICRO / 1e6)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(db_url, key.id, 50, out)) for _ in range(2)]
    for p in procs:
        p.start()
    admitted = sum(out.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(60)
    spent = round(store.spent(key)["spent_usd"] * 1e6)
    assert spent == admitted * ACTUAL
    assert BUDGET_MICRO <= spent < BUDGET_MICRO + ACTUAL, (spent, admitted)
    assert store.spent(key)["reserved_usd"] == 0


def _row(user: str, model: str, cost: float, status: int = 200) -> SpendRow:
    return SpendRow(time.time(), user, "ml", "key_x", model, "b1", None, "chat", 5, 7, cost, 0.1, 0.05, None, status)


def test_the_spend_log_groups_by_user_model_and_day(db_url):
    log = SpendLog(db_url, flush_every_s=0.05)
    for r in (_row("u1", "m1", 0.5), _row("u1", "m2", 0.25), _row("u2", "m1", 1.0), _row("u1", "m1", 0.0, 503)):
        log.record(r)
    assert log.flush()
    by = {(r["user"], r["model"]): r for r in log.summary(["user", "model"])}
    assert by[("u1", "m1")]["requests"] == 2 and by[("u1", "m1")]["errors"] == 1
    assert by[("u1", "m1")]["cost_usd"] == pytest.approx(0.5) and by[("u2", "m1")]["tokens_out"] == 7
    assert [r["user"] for r in log.summary(["user"], user="u2")] == ["u2"]
    (today,) = log.summary(["day"])
    assert today["day"] == time.strftime("%Y-%m-%d", time.gmtime()) and today["requests"] == 4


def test_spend_rows_wait_while_the_database_is_down_and_are_written_when_it_returns(postgres_url):
    import psycopg

    name = f"spend_down_{int(time.time() * 1000) % 10**9}"
    url = postgres_url.rsplit("/", 1)[0] + "/" + name  # a database that does not exist yet: connections fail
    log = SpendLog(url, buffer_rows=50, flush_every_s=0.05)
    for i in range(60):
        log.record(_row("u", "m", 0.01))
    assert not log.flush(timeout_s=1.0)
    assert log.buffered() == 50 and log.dropped == 10  # bounded: the oldest went first
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    assert log.flush(timeout_s=30)
    assert log.summary(["user"])[0]["requests"] == 50
