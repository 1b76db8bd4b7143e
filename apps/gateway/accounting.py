"""What the gateway does around each model request for keys and spend: a virtual key's model rights, its budget
and tokens-per-minute reserved before the request runs (apps/keys.py) and settled after, and the spend row.

A database that fails never stops serving: reservations are skipped (counted in
`conductor_accounting_errors_total`), spend rows wait in the log's buffer (apps/gateway/spend.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from apps.common import APIError
from apps.keys import MICRO, Refused, Reservation, VirtualKey, accounting_url, open_key_store
from apps.gateway.spend import SpendLog, SpendRow

log = logging.getLogger("conductor.accounting")


@dataclass
class Call:
    """One model request as the gateway accounts for it."""

    user: str
    key: VirtualKey | None = None
    t0: float = field(default_factory=time.perf_counter)
    reservation: Reservation | None = None
    ttft_s: float | None = None
    variant: str = ""  # the rollout variant of the backend that answered
    end_user: str | None = None  # the request's `user` field: an application's own user, behind one key
    finished: bool = False  # settled and logged: a request is charged once, however it ends
    cache_read: bool = True  # False for `Cache-Control: no-cache`: a fresh answer, never a cached one
    cache_write: bool = True  # False for `Cache-Control: no-store`: the answer is not kept

    @property
    def route_user(self) -> str:
        """Who sticky routing (weights, canaries) keeps on one backend: the key's user, and their end user."""
        return self.user if not self.end_user else f"{self.user}\0{self.end_user}"

    @classmethod
    def of(cls, request: Any) -> "Call":
        directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
        return cls(getattr(request.state, "user", "local"), getattr(request.state, "virtual_key", None),
                   cache_read="no-cache" not in directives, cache_write="no-store" not in directives)


CLIENT_CLOSED = 499  # the status a spend row gets when the client left before its answer ended (nginx's code)

_SETTLING: set[asyncio.Task] = set()  # held until done: the loop keeps only weak references to tasks


async def to_the_end(work: Any) -> Any:
    """Await the coroutine `work` in a task of its own that a cancelled caller cannot stop: a client that hangs up
    cancels its request (anyio cancels at every later await of the request's task, so a plain `finally` cannot
    await anything), yet what it was served must still be settled, logged and released."""
    task = asyncio.ensure_future(work)
    _SETTLING.add(task)
    task.add_done_callback(_settled)
    return await asyncio.shield(task)


def _settled(task: asyncio.Task) -> None:
    _SETTLING.discard(task)
    if not task.cancelled() and task.exception() is not None:  # nobody may be left to see it: say it here
        log.error("accounting: settling a request failed", exc_info=task.exception())


def refused(e: Refused) -> APIError:
    kind = "rate_limit_error" if e.status == 429 else "permission_error" if e.status == 403 else \
        "authentication_error"
    return APIError(e.status, e.message, kind, code=e.code)


def worst_case(model: Any, req: dict[str, Any]) -> tuple[int, int]:
    """(micro-dollars, tokens) this request can cost at most: its prompt counted as one token per byte (a
    byte-level tokenizer never makes more) plus room for the chat template, every choice at max_tokens, at the
    dearest of the model's backends (fallback may land on any)."""
    prompt = {k: req[k] for k in ("messages", "prompt", "tools", "response_format") if k in req}
    n_in = len(json.dumps(prompt, ensure_ascii=False).encode()) + 64
    n_out = int(req.get("max_tokens") or 0) * int(req.get("n") or 1)
    p_in = max(b.config.cost_per_1k_input for b in model.backends)
    p_out = max(b.config.cost_per_1k_output for b in model.backends)
    return math.ceil((n_in * p_in + n_out * p_out) / 1000 * MICRO), n_in + n_out


class Accounting:
    def __init__(self, config: Any, metrics: Any):
        acc = config.server.accounting
        url = accounting_url(config)
        self.metrics = metrics
        self.keys = open_key_store(config)
        self.spend = SpendLog(url, acc.buffer_rows, acc.retention_days, metrics)

    def check_model(self, call: Call, name: str, model_id: str | None = None) -> None:
        """A 403 unless the call's key may use the model by the name it sent (or, for an alias, its model)."""
        if call.key is not None and not (model_id and model_id != name and model_id in call.key.models):
            try:
                call.key.check_model(name)
            except Refused as e:
                raise refused(e) from None

    async def admit(self, call: Call, model: Any, req: dict[str, Any]) -> None:
        """Reserve the request's worst case against its key's budget and minute (a 429 when either is spent)."""
        key = call.key
        if key is None:
            return
        cost, tokens = worst_case(model, req)
        try:
            call.reservation = await asyncio.to_thread(self.keys.reserve, key, cost, tokens)
        except Refused as e:
            self.metrics.budget_refusals.inc(kind=e.code)
            raise refused(e) from None
        except Exception as e:  # noqa: BLE001 - the database is down: serve, unchecked, and say so in metrics
            self.metrics.accounting_errors.inc(op="reserve")
            log.warning("accounting: could not reserve for key %s (%s); served unchecked", key.id, type(e).__name__)

    async def finish(self, call: Call, model_id: str, backend: Any, endpoint: str, n_in: int, n_out: int,
                     status: int = 200, cache: str | None = None) -> float:
        """Settle the reservation with the real cost and log the request, once (a later call is a no-op that
        returns 0). Returns the cost in dollars."""
        if call.finished:
            return 0.0
        call.finished = True
        cfg = getattr(backend, "config", None)
        cost = 0.0
        if cfg is not None and cache is None:
            cost = (n_in * cfg.cost_per_1k_input + n_out * cfg.cost_per_1k_output) / 1000.0
        if call.reservation is not None and not call.reservation.settled:
            try:
                await asyncio.to_thread(self.keys.settle, call.reservation, math.ceil(cost * MICRO), n_in + n_out)
            except Exception as e:  # noqa: BLE001
                self.metrics.accounting_errors.inc(op="settle")
                log.warning("accounting: could not settle for key %s (%s)", call.reservation.key_id, type(e).__name__)
        key = call.key
        self.spend.record(SpendRow(
            ts=time.time(), user=call.user, team=key.team if key else None, key_id=key.id if key else None,
            model=model_id, backend=getattr(backend, "name", backend), variant=call.variant or None, endpoint=endpoint,
            tokens_in=n_in, tokens_out=n_out, cost_usd=cost, latency_s=time.perf_counter() - call.t0,
            ttft_s=call.ttft_s, cache=cache, status=status))
        return cost
