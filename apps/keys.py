"""Virtual keys: issued by an admin (`conductor keys create`, `POST /v1/admin/keys`), stored hashed, each bound to a
user (and team) and optionally held to a set of models, requests and tokens per minute, a budget per day or month,
and an expiry. The env-var keys (server.api_keys_env) keep working beside them.

Budgets and token limits are usage buckets in the same database as the keys, so every gateway replica agrees: a
request reserves its worst-case cost before it runs (admitted while `used + reserved < limit`) and settles its real
cost after. Reservations are never smaller than what they settle, so however many replicas and clients race, spend
passes a budget by less than the cost of the one request admitted last.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from deployments.sqldb import SQLDatabase

KEY_PREFIX = "sk-cnd-"  # what a virtual key looks like: the guard looks a key up only if it starts so
MICRO = 1_000_000  # money is counted in micro-dollars (integers: no float drift in sums across replicas)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS virtual_keys (id TEXT PRIMARY KEY, key_hash TEXT UNIQUE NOT NULL, "
    "hint TEXT NOT NULL, user_name TEXT NOT NULL, team TEXT, models TEXT NOT NULL, rpm INTEGER, tpm INTEGER, "
    "budget_micro BIGINT, period TEXT NOT NULL, expires_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL, "
    "revoked_at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS key_usage (key_id TEXT NOT NULL, bucket TEXT NOT NULL, used BIGINT NOT NULL, "
    "reserved BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (key_id, bucket))",
)
_COLUMNS = "id, hint, user_name, team, models, rpm, tpm, budget_micro, period, expires_at, created_at, revoked_at"


class Refused(Exception):
    """A request its key may not make: an HTTP status (401, 403, 429) and the reason."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class VirtualKey:
    id: str
    hint: str  # the key's first characters, to tell keys apart in a list
    user: str
    team: str | None = None
    models: tuple[str, ...] = ()  # empty: every model
    rpm: int | None = None
    tpm: int | None = None
    budget_micro: int | None = None
    period: str = "month"
    expires_at: float | None = None
    created_at: float = 0.0
    revoked_at: float | None = None

    def check_usable(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            raise Refused(401, f"API key {self.id} was revoked", "key_revoked")
        if self.expires_at is not None and now >= self.expires_at:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
            raise Refused(401, f"API key {self.id} expired at {when}", "key_expired")

    def check_model(self, model: str) -> None:
        if self.models and model not in self.models:
            raise Refused(403, f"API key {self.id} may not use model {model!r} (allowed: {list(self.models)})",
                          "model_not_allowed")

    def public(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["models"] = list(self.models)
        doc["budget_usd"] = None if self.budget_micro is None else self.budget_micro / MICRO
        del doc["budget_micro"]
        return doc


@dataclass
class Reservation:
    """What one request holds in its key's buckets until it settles: (bucket, amount) pairs."""

    key_id: str
    holds: list[tuple[str, int]] = field(default_factory=list)
    settled: bool = False


def hash_key(key: str) -> str:
    """What is stored of a key (env-var keys and virtual keys alike): its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def budget_bucket(period: str, now: float) -> str:
    return "usd:" + time.strftime("%Y-%m-%d" if period == "day" else "%Y-%m", time.gmtime(now))


def tpm_bucket(now: float) -> str:
    return f"tpm:{int(now // 60)}"


class KeyStore:
    def __init__(self, url: str, cache_s: float = 2.0):
        self.db = SQLDatabase(url)
        self.cache_s = cache_s
        self._cache: dict[str, tuple[VirtualKey | None, float]] = {}
        self._lock = threading.Lock()
        with self.db.tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)

    # --- keys ---------------------------------------------------------------------------------------------------
    def create(self, user: str, team: str | None = None, models: list[str] | None = None, rpm: int | None = None,
               tpm: int | None = None, budget_usd: float | None = None, period: str = "month",
               expires_at: float | None = None) -> tuple[str, VirtualKey]:
        """A new key: (the key itself, shown once and never stored, and its record)."""
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        key = VirtualKey(id="key_" + secrets.token_hex(8), hint=plain[:len(KEY_PREFIX) + 4], user=user, team=team,
                         models=tuple(models or ()), rpm=rpm, tpm=tpm,
                         budget_micro=None if budget_usd is None else round(budget_usd * MICRO), period=period,
                         expires_at=expires_at, created_at=time.time())
        with self.db.tx() as c:
            c.execute(self.db.sql("INSERT INTO virtual_keys (key_hash, " + _COLUMNS + ") VALUES ({p}, "
                                  + ", ".join(["{p}"] * 12) + ")"), (hash_key(plain), *self._row(key)))
        return plain, key

    @staticmethod
    def _row(k: VirtualKey) -> tuple[Any, ...]:
        return (k.id, k.hint, k.user, k.team, json.dumps(list(k.models)), k.rpm, k.tpm, k.budget_micro, k.period,
                k.expires_at, k.created_at, k.revoked_at)

    @staticmethod
    def _key(row: tuple[Any, ...]) -> VirtualKey:
        (kid, hint, user, team, models, rpm, tpm, budget, period, expires, created, revoked) = row
        return VirtualKey(kid, hint, user, team, tuple(json.loads(models)), rpm, tpm,
                          None if budget is None else int(budget), period, expires, created, revoked)

    def get(self, key_id: str) -> VirtualKey | None:
        with self.db.tx() as c:
            row = c.execute(self.db.sql(f"SELECT {_COLUMNS} FROM virtual_keys WHERE id = {{p}}"), (key_id,)).fetchone()
        return None if row is None else self._key(row)

    def list(self, user: str | None = None) -> list[VirtualKey]:
        where, args = (self.db.sql(" WHERE user_name = {p}"), (user,)) if user is not None else ("", ())
        with self.db.tx() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM virtual_keys{where} ORDER BY created_at", args).fetchall()
        return [self._key(r) for r in rows]

    def revoke(self, key_id: str) -> VirtualKey | None:
        with self.db.tx() as c:
            c.execute(self.db.sql("UPDATE virtual_keys SET revoked_at = {p} WHERE id = {p} AND revoked_at IS NULL"),
                      (time.time(), key_id))
        self._forget()
        return self.get(key_id)

    def rotate(self, key_id: str) -> tuple[str, VirtualKey] | None:
        """A new secret for the same key (id, limits and spend kept); the old secret stops working at once here
        and within `cache_s` on other replicas."""
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.tx() as c:
            cur = c.execute(self.db.sql("UPDATE virtual_keys SET key_hash = {p}, hint = {p} WHERE id = {p} "
                                        "AND revoked_at IS NULL"), (hash_key(plain), plain[:len(KEY_PREFIX) + 4],
                                                                    key_id))
            changed = cur.rowcount
        self._forget()
        return (plain, self.get(key_id)) if changed else None  # type: ignore[return-value]

    def lookup(self, digest: str) -> VirtualKey | None:
        """The key whose hash is `digest` (revoked and expired ones too: the caller says why they fail). Answers
        are cached for `cache_s`; while the database fails, a cached answer is used however old it is."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        try:
            with self.db.tx() as c:
                row = c.execute(self.db.sql(f"SELECT {_COLUMNS} FROM virtual_keys WHERE key_hash = {{p}}"),
                                (digest,)).fetchone()
        except Exception:
            if cached is not None:
                return cached[0]
            raise
        key = None if row is None else self._key(row)
        with self._lock:
            if len(self._cache) > 10_000:  # a flood of made-up keys must not grow this without end
                self._cache.clear()
            self._cache[digest] = (key, now)
        return key

    def _forget(self) -> None:
        with self._lock:
            self._cache.clear()

    # --- usage ----------------------------------------------------------------------------------------------------
    def reserve(self, key: VirtualKey, cost_micro: int, tokens: int, now: float | None = None) -> Reservation:
        """Hold `cost_micro` of the key's budget and `tokens` of its minute, both or neither (one transaction);
        Refused(429) when either is already spent. A key without a budget still counts its spend this way."""
        now = time.time() if now is None else now
        res = Reservation(key.id)
        unlimited = 2**62
        wants = [(budget_bucket(key.period, now), cost_micro,
                  unlimited if key.budget_micro is None else key.budget_micro, "budget")]
        if key.tpm is not None:
            wants.append((tpm_bucket(now), tokens, key.tpm, "tpm"))
        with self.db.tx() as c:
            for bucket, amount, limit, kind in wants:
                c.execute(self.db.sql("INSERT INTO key_usage (key_id, bucket, used, reserved, updated_at) VALUES "
                                      "({p}, {p}, 0, 0, {p}) ON CONFLICT (key_id, bucket) DO NOTHING"),
                          (key.id, bucket, now))
                cur = c.execute(self.db.sql("UPDATE key_usage SET reserved = reserved + {p}, updated_at = {p} "
                                            "WHERE key_id = {p} AND bucket = {p} AND used + reserved < {p}"),
                                (amount, now, key.id, bucket, limit))
                if cur.rowcount != 1:
                    raise _refusal(key, kind)  # the transaction rolls back: nothing is held
                res.holds.append((bucket, amount))
        return res

    def settle(self, res: Reservation, cost_micro: int, tokens: int) -> None:
        """Replace what the request held by what it really used (once; a second call does nothing)."""
        if res.settled or not res.holds:
            res.settled = True
            return
        with self.db.tx() as c:
            for bucket, held in res.holds:
                used = cost_micro if bucket.startswith("usd:") else tokens
                c.execute(self.db.sql("UPDATE key_usage SET used = used + {p}, reserved = reserved - {p}, "
                                      "updated_at = {p} WHERE key_id = {p} AND bucket = {p}"),
                          (used, held, time.time(), res.key_id, bucket))
        res.settled = True

    def spent(self, key: VirtualKey, now: float | None = None) -> dict[str, Any]:
        """This period's spend and reservations of a key, in dollars."""
        bucket = budget_bucket(key.period, time.time() if now is None else now)
        with self.db.tx() as c:
            row = c.execute(self.db.sql("SELECT used, reserved FROM key_usage WHERE key_id = {p} AND bucket = {p}"),
                            (key.id, bucket)).fetchone()
        used, reserved = row or (0, 0)
        return {"current_period": bucket[4:], "spent_usd": used / MICRO, "reserved_usd": reserved / MICRO}

    def prune(self, now: float | None = None) -> None:
        """Minute buckets older than five minutes are of no use to anyone."""
        now = time.time() if now is None else now
        with self.db.tx() as c:
            c.execute(self.db.sql("DELETE FROM key_usage WHERE bucket LIKE 'tpm:%' AND updated_at < {p}"),
                      (now - 300,))


def _refusal(key: VirtualKey, kind: str) -> Refused:
    if kind == "budget":
        return Refused(429, f"API key {key.id} has spent its {key.period}ly budget of "
                            f"${(key.budget_micro or 0) / MICRO:.4f}", "budget_exceeded")
    return Refused(429, f"API key {key.id} has used its {key.tpm} tokens for this minute", "tpm_exceeded")


_OPEN: dict[str, KeyStore] = {}
_OPEN_LOCK = threading.Lock()


def open_key_store(config: Any) -> KeyStore:
    """The configured store, one per process: the guard and the admin routes of a replica share its cache, so a
    key revoked or rotated here stops working here at once. Its URL is in $`server.accounting.db_url_env` (a
    secret, so it stays out of the config), else a SQLite file under server.accounting.data_dir."""
    url = accounting_url(config)
    with _OPEN_LOCK:
        if url not in _OPEN:
            _OPEN[url] = KeyStore(url, config.server.accounting.key_cache_s)
        return _OPEN[url]


def accounting_url(config: Any) -> str:
    from cluster.config import expand_path
    from deployments.secrets import read_secret

    acc = config.server.accounting
    return read_secret(acc.db_url_env) or f"sqlite:///{expand_path(acc.data_dir) / 'accounting.sqlite3'}"
