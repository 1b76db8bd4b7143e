"""Canary rollouts with automatic analysis, as Flagger and Argo Rollouts do it, inside the gateway.

A model with `rollout:` sends `weight`% of its users (sticky: a user's bucket, routing.user_bucket, decides) to the
canary backend and the rest to the stable one. Every request routed to a variant is an outcome for that variant:
answered by it (with its latency) or not (it failed, timed out or its breaker was open). Over a sliding window,
once the canary has `min_samples` outcomes:

- its error rate above the stable's by more than `max_error_rate_increase`, or its p95 latency above
  `max_latency_ratio` times the stable's: weight 0 at once, state `rolled_back`, the event logged and counted;
- otherwise, after `step_interval_s` at a step: the next step; past the last, state `promoted`.

The weight and state live in the accounting database (table `rollouts`), so every gateway replica routes alike
and `conductor rollout set|promote|rollback|resume` changes them live, without a restart or a dropped request.
A shadow backend gets a copy of requests; its answers are compared with what the caller got and never returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from apps.gateway.routing import user_bucket
from deployments.sqldb import SQLDatabase

log = logging.getLogger("conductor.rollout")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rollouts (model TEXT PRIMARY KEY, weight INTEGER NOT NULL, step INTEGER NOT NULL, "
    "state TEXT NOT NULL, reason TEXT NOT NULL, stepped_at DOUBLE PRECISION NOT NULL, "
    "updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rollout_events (model TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, "
    "event TEXT NOT NULL, weight INTEGER NOT NULL, reason TEXT NOT NULL)",
)
STATES = ("progressing", "paused", "promoted", "rolled_back")


@dataclass
class RolloutState:
    weight: int
    step: int
    state: str
    reason: str
    stepped_at: float


@dataclass
class Window:
    """Outcomes of one variant: (time, answered, latency)."""

    outcomes: deque = field(default_factory=deque)

    def add(self, ok: bool, latency_s: float | None, now: float) -> None:
        self.outcomes.append((now, ok, latency_s))

    def trim(self, since: float) -> None:
        while self.outcomes and self.outcomes[0][0] < since:
            self.outcomes.popleft()

    def stats(self) -> dict[str, Any]:
        n = len(self.outcomes)
        lat = sorted(x[2] for x in self.outcomes if x[1] and x[2] is not None)
        errors = sum(1 for x in self.outcomes if not x[1])
        return {"samples": n, "error_rate": errors / n if n else 0.0,
                "p95_latency_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None}


class Rollout:
    """One model's rollout: its config, its shared state, this replica's windows."""

    def __init__(self, model_id: str, config: Any, db: SQLDatabase, metrics: Any):
        self.model_id, self.config, self.db, self.metrics = model_id, config, db, metrics
        self.windows = {"stable": Window(), "canary": Window()}
        self.shadow: dict[str, Any] = {"requests": 0, "same": 0, "different": 0, "not_compared": 0, "error": 0,
                                       "recent": deque(maxlen=20)}
        self._lock = threading.Lock()
        self.current = self._load_or_create()
        self._publish()

    # --- shared state -------------------------------------------------------------------------------------------
    def _load_or_create(self) -> RolloutState:
        now = time.time()
        with self.db.tx() as c:
            c.execute(self.db.sql("INSERT INTO rollouts (model, weight, step, state, reason, stepped_at, updated_at) "
                                  "VALUES ({p}, {p}, 0, {p}, 'started', {p}, {p}) ON CONFLICT (model) DO NOTHING"),
                      (self.model_id, self.config.steps[0], "progressing" if self.config.auto else "paused", now,
                       now))
        return self.reload()

    def reload(self) -> RolloutState:
        with self.db.tx() as c:
            row = c.execute(self.db.sql("SELECT weight, step, state, reason, stepped_at FROM rollouts WHERE model = "
                                        "{p}"), (self.model_id,)).fetchone()
        with self._lock:
            self.current = RolloutState(int(row[0]), int(row[1]), row[2], row[3], float(row[4]))
        self._publish()
        return self.current

    def change(self, event: str, weight: int, state: str, reason: str, step: int | None = None) -> RolloutState:
        now = time.time()
        step = self.current.step if step is None else step
        with self.db.tx() as c:
            c.execute(self.db.sql("UPDATE rollouts SET weight = {p}, step = {p}, state = {p}, reason = {p}, "
                                  "stepped_at = {p}, updated_at = {p} WHERE model = {p}"),
                      (weight, step, state, reason, now, now, self.model_id))
            c.execute(self.db.sql("INSERT INTO rollout_events (model, ts, event, weight, reason) VALUES "
                                  "({p}, {p}, {p}, {p}, {p})"), (self.model_id, now, event, weight, reason))
        log.warning("rollout %s: %s -> canary %d%% (%s)", self.model_id, event, weight, reason)
        if self.metrics is not None:
            self.metrics.rollout_events.inc(model=self.model_id, event=event)
        with self._lock:
            for w in self.windows.values():  # a new weight starts a new comparison
                w.outcomes.clear()
        return self.reload()

    def events(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.db.tx() as c:
            rows = c.execute(self.db.sql("SELECT ts, event, weight, reason FROM rollout_events WHERE model = {p} "
                                         f"ORDER BY ts DESC LIMIT {int(limit)}"), (self.model_id,)).fetchall()
        return [{"ts": r[0], "event": r[1], "weight": r[2], "reason": r[3]} for r in rows]

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.rollout_weight.set(float(self.current.weight), model=self.model_id)

    # --- routing ------------------------------------------------------------------------------------------------
    def variant_for(self, user: str) -> str:
        return "canary" if user_bucket(self.model_id, user) < self.current.weight else "stable"

    def backend_of(self, variant: str) -> str:
        return self.config.canary if variant == "canary" else self.config.stable

    def variant_of(self, backend: str) -> str:
        c = self.config
        return {c.stable: "stable", c.canary: "canary", c.shadow: "shadow"}.get(backend, "")

    def observe(self, variant: str, ok: bool, latency_s: float | None) -> None:
        with self._lock:
            self.windows[variant].add(ok, latency_s, time.monotonic())

    # --- analysis -----------------------------------------------------------------------------------------------
    def analyze(self, now: float | None = None) -> str | None:
        """Roll back, advance or do nothing; returns the event, if any. Run by the replica's rollout thread."""
        cfg, cur = self.config, self.current
        if cur.state != "progressing":
            return None
        with self._lock:
            for w in self.windows.values():
                w.trim(time.monotonic() - cfg.window_s)
            canary, stable = self.windows["canary"].stats(), self.windows["stable"].stats()
        if canary["samples"] >= cfg.min_samples:
            why = self._failing(canary, stable)
            if why:
                self.change("rollback", 0, "rolled_back", why)
                return "rollback"
        now = time.time() if now is None else now
        if canary["samples"] >= cfg.min_samples and now - cur.stepped_at >= cfg.step_interval_s:
            if cur.step + 1 >= len(cfg.steps):
                self.change("promote", 100, "promoted", "every step passed its analysis")
                return "promote"
            nxt = cur.step + 1
            self.change("advance", cfg.steps[nxt], "progressing", f"step {cur.step + 1} passed its analysis",
                        step=nxt)
            return "advance"
        return None

    def _failing(self, canary: dict[str, Any], stable: dict[str, Any]) -> str | None:
        cfg = self.config
        if canary["error_rate"] - stable["error_rate"] > cfg.max_error_rate_increase:
            return (f"canary error rate {canary['error_rate']:.2f} over {canary['samples']} requests vs stable "
                    f"{stable['error_rate']:.2f}")
        c95, s95 = canary["p95_latency_s"], stable["p95_latency_s"]
        if c95 is not None and s95 is not None and stable["samples"] >= cfg.min_samples and \
                c95 > cfg.max_latency_ratio * s95:
            return f"canary p95 latency {c95:.3f}s vs stable {s95:.3f}s"
        return None

    def status(self) -> dict[str, Any]:
        with self._lock:
            windows = {v: w.stats() for v, w in self.windows.items()}
        cur, cfg = self.current, self.config
        return {"model": self.model_id, "stable": cfg.stable, "canary": cfg.canary, "shadow": cfg.shadow,
                "weight": cur.weight, "step": cur.step, "steps": cfg.steps, "state": cur.state, "reason": cur.reason,
                "window": windows, "shadow_comparison": {k: (list(v) if k == "recent" else v)
                                                         for k, v in self.shadow.items()},
                "events": self.events()}

    def record_shadow(self, answer: str | None, shadow_answer: str | None, error: str | None) -> None:
        outcome = "error" if error else "not_compared" if answer is None else \
            "same" if answer == shadow_answer else "different"
        with self._lock:
            self.shadow["requests"] += 1
            self.shadow[outcome] += 1
            self.shadow["recent"].append({"ts": time.time(), "outcome": outcome, "shadow": (shadow_answer or "")[:200],
                                          "error": error})
        if self.metrics is not None:
            self.metrics.shadow_requests.inc(model=self.model_id, outcome=outcome)


class Rollouts:
    """Every model's rollout in this replica, with one thread that follows the shared state and runs the analysis."""

    def __init__(self, models: dict[str, Any], url: str, metrics: Any, every_s: float = 0.5):
        self.by_model: dict[str, Rollout] = {}
        if not any(m.config.rollout for m in models.values()):
            return
        self.db = SQLDatabase(url)
        with self.db.tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)
        self.by_model = {mid: Rollout(mid, m.config.rollout, self.db, metrics)
                         for mid, m in models.items() if m.config.rollout}
        self.every_s = every_s
        threading.Thread(target=self._run, name="rollouts", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            for r in self.by_model.values():
                try:
                    r.reload()  # what another replica or an admin decided
                    r.analyze()
                except Exception as e:  # noqa: BLE001 - the database is away: keep routing by the last state
                    self.db.forget_connection()
                    log.warning("rollout %s: state not refreshed (%s)", r.model_id, type(e).__name__)
