"""`conductor keys create|list|revoke|rotate` and `conductor spend`: clients of the running gateway's admin and
spend routes (apps/gateway/admin_routes.py), authenticated with $CONDUCTOR_API_KEY (an admin's key; on a loopback
server without keys, none is needed)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

url_option = click.option("--url", default=None, help="The Conductor server (default: found as the CLI does).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _call(url: str | None, method: str, path: str, **kw: Any) -> Any:
    from apps.client import ConductorClient, cli_api_key, cli_base_url, cli_request

    with ConductorClient(cli_base_url(url), cli_api_key(), timeout=60) as client:
        return cli_request(client, method, path, **kw)


@click.group("keys")
def keys() -> None:
    """Virtual API keys: per-user keys with model rights, rate and token limits, budgets and expiry."""


@keys.command("create")
@click.option("--user", required=True, help="The user the key acts as (owner of what it creates).")
@click.option("--team", default=None, help="A team, for spend reports.")
@click.option("--models", default=None, help="Comma-separated models the key may use (default: all).")
@click.option("--rpm", type=int, default=None, help="Requests per minute.")
@click.option("--tpm", type=int, default=None, help="Tokens (prompt + completion) per minute.")
@click.option("--budget", type=float, default=None, help="USD per period.")
@click.option("--period", type=click.Choice(["day", "month"]), default="month", show_default=True)
@click.option("--expires", default=None, help="ISO 8601 expiry, e.g. 2027-01-31T00:00:00Z.")
@json_option
@url_option
def create(user: str, team: str | None, models: str | None, rpm: int | None, tpm: int | None,
           budget: float | None, period: str, expires: str | None, as_json: bool, url: str | None) -> None:
    """Create a key and print it once (it is stored hashed: it cannot be shown again)."""
    body: dict[str, Any] = {"user": user, "period": period}
    for name, value in (("team", team), ("rpm", rpm), ("tpm", tpm), ("budget_usd", budget), ("expires", expires)):
        if value is not None:
            body[name] = value
    if models:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    doc = _call(url, "POST", "/v1/admin/keys", json=body)
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"key:  {doc['key']}")
    click.echo(f"id:   {doc['id']}  (user {doc['user']}; keep the key now: it is not shown again)")


def _describe(k: dict[str, Any]) -> str:
    limits = [f"models={','.join(k['models'])}" if k["models"] else "", f"rpm={k['rpm']}" if k["rpm"] else "",
              f"tpm={k['tpm']}" if k["tpm"] else "",
              f"budget=${k['budget_usd']}/{k['period']}" if k["budget_usd"] is not None else ""]
    state = "revoked" if k.get("revoked_at") else "active"
    return (f"{k['id']}  {k['hint']}…  user={k['user']}  team={k.get('team') or '-'}  {state}  "
            f"spent=${k.get('spent_usd', 0):.4f}  " + "  ".join(x for x in limits if x))


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked keys too.")
@json_option
@url_option
def list_keys(user: str | None, include_revoked: bool, as_json: bool, url: str | None) -> None:
    """The keys (never their secrets), with this period's spend."""
    params: dict[str, Any] = {"include_revoked": include_revoked}
    if user:
        params["user"] = user
    data = _call(url, "GET", "/v1/admin/keys", params=params)["data"]
    if as_json:
        click.echo(json.dumps(data))
        return
    for k in data:
        click.echo(_describe(k))
    if not data:
        click.echo("no keys")


def _key_action(method: str, suffix: str, show: Any) -> Any:
    """A `keys` subcommand on one key id: the admin route's answer, as JSON or as `show(doc)`."""
    @click.argument("key_id")
    @json_option
    @url_option
    def run(key_id: str, as_json: bool, url: str | None) -> None:
        doc = _call(url, method, f"/v1/admin/keys/{key_id}{suffix}")
        click.echo(json.dumps(doc) if as_json else show(doc))

    return run


keys.command("revoke", help="Revoke a key: it stops working at once (within server.accounting.key_cache_s on "
             "other replicas).")(_key_action("DELETE", "", lambda d: f"revoked {d['id']}"))
keys.command("rotate", help="A new secret for a key (same id, limits and spend); the old secret stops working.")(
    _key_action("POST", "/rotate", lambda d: f"key:  {d['key']}\nid:   {d['id']}"))


@click.command("spend")
@click.option("--by", "group_by", default="user,model", show_default=True,
              help="Group by any of user,team,key,model,backend,day,hour.")
@click.option("--days", type=float, default=30.0, show_default=True)
@click.option("--user", default=None, help="One user's spend (admins).")
@json_option
@url_option
def spend(group_by: str, days: float, user: str | None, as_json: bool, url: str | None) -> None:
    """Requests, tokens and cost from the spend log."""
    params: dict[str, Any] = {"group_by": group_by, "days": days}
    if user:
        params["user"] = user
    doc = _call(url, "GET", "/v1/spend", params=params)
    if as_json:
        click.echo(json.dumps(doc["data"]))
        return
    groups = doc["group_by"]
    for row in doc["data"]:
        who = "  ".join(f"{g}={row[g]}" for g in groups)
        click.echo(f"{who}  requests={row['requests']}  tokens={row['tokens_in']}+{row['tokens_out']}  "
                   f"cost=${row['cost_usd']:.6f}  errors={row['errors']}")
    if not doc["data"]:
        click.echo("no spend recorded")


@click.group("rollout")
def rollout() -> None:
    """Canary rollouts: status, and live weight changes every gateway replica follows."""


def _show_rollout(doc: dict[str, Any]) -> str:
    win = doc["window"]
    lines = [f"{doc['model']}: canary {doc['canary']} at {doc['weight']}% (stable {doc['stable']}"
             + (f", shadow {doc['shadow']}" if doc["shadow"] else "") + f"), {doc['state']}: {doc['reason']}",
             "  window: " + "  ".join(f"{v} {s['samples']} requests, {s['error_rate']:.0%} errors, p95 "
                                      f"{s['p95_latency_s'] if s['p95_latency_s'] is not None else '-'}s"
                                      for v, s in win.items())]
    lines += [f"  {time.strftime('%H:%M:%S', time.gmtime(e['ts']))} {e['event']} -> {e['weight']}%: {e['reason']}"
              for e in doc["events"][:5]]
    return "\n".join(lines)


@rollout.command("status")
@click.argument("model", required=False)
@json_option
@url_option
def rollout_status(model: str | None, as_json: bool, url: str | None) -> None:
    """One model's rollout (or every one): weight, state, the analysis window and recent events."""
    docs = [_call(url, "GET", f"/v1/admin/rollouts/{model}")] if model else \
        _call(url, "GET", "/v1/admin/rollouts")["data"]
    click.echo(json.dumps(docs if not model else docs[0]) if as_json else
               "\n".join(_show_rollout(d) for d in docs) or "no rollouts configured")


def _rollout_action(action: str, *more: Any) -> Any:
    @json_option
    @url_option
    def run(model: str, as_json: bool, url: str | None, **kw: Any) -> None:
        body: dict[str, Any] = {"action": action}
        if "weight" in kw:
            body["weight"] = kw["weight"]
        doc = _call(url, "POST", f"/v1/admin/rollouts/{model}", json=body)
        click.echo(json.dumps(doc) if as_json else _show_rollout(doc))

    for decorate in more:  # arguments after MODEL
        run = decorate(run)
    return click.argument("model")(run)


rollout.command("set", help="Send WEIGHT% of users to the canary and pause the automatic steps.")(
    _rollout_action("set", click.argument("weight", type=click.IntRange(0, 100))))
for _name, _help in (("promote", "Send every user to the canary."), ("rollback", "Send every user to stable."),
                     ("resume", "Resume the automatic steps (after a rollback: from the first)."),
                     ("pause", "Stop the automatic steps at the current weight.")):
    rollout.command(_name, help=_help)(_rollout_action(_name))
