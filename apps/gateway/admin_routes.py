"""Virtual keys, rollouts and spend over HTTP: `/v1/admin/keys` (create, list, revoke, rotate) and
`/v1/admin/rollouts` (status, set, promote, rollback, resume, pause), admins only, and `/v1/spend` (everyone: their
own; admins: anyone's). The CLI (`conductor keys`, `conductor rollout`, `conductor spend`) and the Keys & spend tab
are clients of these routes.

Admins are server.admin_users; on a loopback server without keys, whoever is on the machine (the local user).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from apps.common import APIError, read_json_body
from apps.gateway.spend import GROUPS


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=256)
    team: str | None = Field(None, min_length=1, max_length=256)
    models: list[str] | None = Field(None, min_length=1, max_length=256)
    rpm: int | None = Field(None, ge=1, le=10_000_000)
    tpm: int | None = Field(None, ge=1, le=10_000_000_000)
    budget_usd: float | None = Field(None, gt=0, le=1e9, description="Dollars per period; must be above 0.")
    period: Literal["day", "month"] = "month"
    expires: str | None = Field(None, description="ISO 8601 time; a time without a zone is UTC.")

    @field_validator("user", "team")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and not v.isprintable():
            raise ValueError("must be printable")
        return v

    def expires_at(self) -> float | None:
        if self.expires is None:
            return None
        try:
            when = datetime.fromisoformat(self.expires.replace("Z", "+00:00"))
        except ValueError:
            raise APIError(400, f"expires: {self.expires!r} is not an ISO 8601 time", param="expires") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if when.timestamp() <= time.time():
            raise APIError(400, f"expires: {self.expires} is in the past", param="expires")
        return when.timestamp()


def may_manage_keys(config: Any, user: str) -> bool:
    from apps.security import LOCAL_USER, is_admin, keys_required

    return is_admin(config, user) or (user == LOCAL_USER and not keys_required(config))


def _parse(model_cls: Any, body: dict[str, Any]) -> Any:
    from apps.gateway.schemas import validate

    return validate(model_cls, body)


def add_admin_routes(app: FastAPI, gw: Any) -> None:
    store = gw.accounting.keys

    def admin(request: Request) -> str:
        user = getattr(request.state, "user", "local")
        if not may_manage_keys(gw.config, user):
            raise APIError(403, "only an admin (server.admin_users) may manage keys and rollouts",
                           "permission_error", code="admin_only")
        return user

    add_rollout_routes(app, gw, admin)

    def described(key: Any) -> dict[str, Any]:
        return {**key.public(), **store.spent(key)}

    @app.post("/v1/admin/keys", status_code=201)
    async def create_key(request: Request) -> JSONResponse:
        admin(request)
        spec = _parse(KeyCreate, await read_json_body(request, gw.config.server.max_body_bytes))
        known = set(gw.names) | {gw.config.embeddings.id}
        unknown = sorted(set(spec.models or ()) - known)
        if unknown:
            raise APIError(400, f"models: {unknown} do not exist; available: {sorted(known)}", param="models",
                           code="model_not_found")
        plain, key = await asyncio.to_thread(store.create, spec.user, spec.team, spec.models, spec.rpm, spec.tpm,
                                             spec.budget_usd, spec.period, spec.expires_at())
        return JSONResponse({"key": plain, **key.public()}, status_code=201)

    @app.get("/v1/admin/keys")
    async def list_keys(request: Request, user: str | None = None, include_revoked: bool = False) -> dict[str, Any]:
        admin(request)
        keys = await asyncio.to_thread(store.list, user)
        keys = [k for k in keys if include_revoked or k.revoked_at is None]
        return {"object": "list", "data": await asyncio.to_thread(lambda: [described(k) for k in keys])}

    def found(key_id: str) -> Any:
        key = store.get(key_id)
        if key is None:
            raise APIError(404, f"no key {key_id!r}", code="key_not_found")
        return key

    @app.delete("/v1/admin/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
        admin(request)
        await asyncio.to_thread(found, key_id)
        return (await asyncio.to_thread(store.revoke, key_id)).public()

    @app.post("/v1/admin/keys/{key_id}/rotate")
    async def rotate_key(request: Request, key_id: str) -> dict[str, Any]:
        admin(request)
        await asyncio.to_thread(found, key_id)
        rotated = await asyncio.to_thread(store.rotate, key_id)
        if rotated is None:
            raise APIError(409, f"key {key_id!r} is revoked; create a new one", code="key_revoked")
        plain, key = rotated
        return {"key": plain, **key.public()}

    @app.get("/v1/spend")
    async def spend(request: Request, group_by: str = "user,model", days: float = 30.0,
                    user: str | None = None) -> dict[str, Any]:
        """Requests, tokens and cost over the last `days`, grouped by any of user, team, key, model, backend,
        day, hour. A user sees their own; an admin sees everyone's (or `user`'s)."""
        me = getattr(request.state, "user", "local")
        groups = [g.strip() for g in group_by.split(",") if g.strip()]
        bad = [g for g in groups if g not in GROUPS]
        if bad or len(groups) != len(set(groups)):
            raise APIError(400, f"group_by: {bad or groups} invalid; use any of {list(GROUPS)}, each once",
                           param="group_by")
        if not 0 < days <= 3660:
            raise APIError(400, "days must be in (0, 3660]", param="days")
        who = user if may_manage_keys(gw.config, me) else me
        if user is not None and who != user:
            raise APIError(403, "only an admin may read another user's spend", "permission_error", code="admin_only")
        rows = await asyncio.to_thread(gw.accounting.spend.summary, groups, who, time.time() - days * 86400)
        return {"object": "list", "group_by": groups, "user": who, "days": days, "data": rows,
                "buffered_rows": gw.accounting.spend.buffered()}


class RolloutAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["set", "promote", "rollback", "resume", "pause"]
    weight: int | None = Field(None, ge=0, le=100, description="Canary percent, for `set`.")


def apply_rollout_action(rollout: Any, act: RolloutAction, who: str) -> Any:
    """One admin decision on a rollout, written to the shared state (every replica follows within a second)."""
    cur, steps = rollout.current, rollout.config.steps
    if act.action == "set":
        if act.weight is None:
            raise APIError(400, "set needs a weight (0..100)", param="weight")
        return rollout.change("set", act.weight, "paused", f"set to {act.weight}% by {who}")
    if act.weight is not None:
        raise APIError(400, f"{act.action} takes no weight", param="weight")
    if act.action == "promote":
        return rollout.change("promote", 100, "promoted", f"promoted by {who}", step=len(steps) - 1)
    if act.action == "rollback":
        return rollout.change("rollback", 0, "rolled_back", f"rolled back by {who}")
    if act.action == "pause":
        return rollout.change("pause", cur.weight, "paused", f"paused by {who}")
    if cur.weight == 0:  # resuming after a rollback starts the steps again
        return rollout.change("resume", steps[0], "progressing", f"restarted by {who}", step=0)
    return rollout.change("resume", cur.weight, "progressing", f"resumed by {who}")


def add_rollout_routes(app: FastAPI, gw: Any, admin: Any) -> None:
    def rollout_of(model_id: str) -> Any:
        rollout = gw.router.rollouts.get(model_id)
        if rollout is None:
            what = "has no rollout (configure models[].rollout)" if model_id in gw.router.models else "does not exist"
            raise APIError(404, f"model {model_id!r} {what}", code="rollout_not_found")
        return rollout

    @app.get("/v1/admin/rollouts")
    async def rollouts(request: Request) -> dict[str, Any]:
        admin(request)
        return {"object": "list", "data": [await asyncio.to_thread(r.status) for r in gw.router.rollouts.values()]}

    @app.get("/v1/admin/rollouts/{model_id}")
    async def rollout_status(request: Request, model_id: str) -> dict[str, Any]:
        admin(request)
        return await asyncio.to_thread(rollout_of(model_id).status)

    @app.post("/v1/admin/rollouts/{model_id}")
    async def rollout_change(request: Request, model_id: str) -> dict[str, Any]:
        who = admin(request)
        rollout = rollout_of(model_id)
        act = _parse(RolloutAction, await read_json_body(request, gw.config.server.max_body_bytes))
        await asyncio.to_thread(apply_rollout_action, rollout, act, who)
        return await asyncio.to_thread(rollout.status)
