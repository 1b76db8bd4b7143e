"""The Keys & spend tab: spend and requests over time (the spend log, by hour), totals by user and model, and for
admins the rollouts' state and the virtual keys: create one (shown once), list, revoke. It calls /v1/spend and
/v1/admin/keys as the signed-in user, so a user sees their own spend and only an admin manages keys."""

from __future__ import annotations

from typing import Any

KEY_COLUMNS = ["id", "hint", "user", "team", "models", "budget_usd", "period", "spent_usd", "rpm", "tpm", "expires_at"]


def spend_frames(client: Any, days: float = 2.0) -> tuple[Any, Any, str]:
    """(hourly series for the plots, totals by user and model, a status line)."""
    import pandas as pd

    try:
        hourly = client.request("GET", "/v1/spend", params={"group_by": "hour,model", "days": days})
        totals = client.request("GET", "/v1/spend", params={"group_by": "user,model", "days": 30})
    except Exception as e:  # noqa: BLE001 - shown in the tab
        import time

        empty = pd.DataFrame([{"hour": time.strftime("%Y-%m-%d %H:00", time.gmtime()), "cost_usd": 0.0,
                               "requests": 0.0}])
        return empty, pd.DataFrame(), f"spend unavailable: {e}"
    import time

    # Never an empty frame: after one, Gradio's bar plot draws no bars for later data (a zero row for this hour).
    rows = hourly["data"] or [{"hour": time.strftime("%Y-%m-%d %H:00", time.gmtime()), "model": "",
                               "requests": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "errors": 0}]
    by_model = pd.DataFrame(rows, columns=["hour", "model", "requests", "tokens_in", "tokens_out", "cost_usd",
                                           "errors"])
    # One bar per hour, as floats: Gradio's bar plot draws no bar for an integer column, nor for a colour (model)
    # it did not see in its first frame. The models are in the totals table.
    series = by_model.groupby("hour", as_index=False)[["requests", "cost_usd"]].sum().astype(
        {"requests": float, "cost_usd": float}).sort_values("hour")
    table = pd.DataFrame(totals["data"] or [], columns=["user", "model", "requests", "tokens_in", "tokens_out",
                                                        "cost_usd", "errors"])
    spent = float(table["cost_usd"].sum()) if len(table) else 0.0
    note = f"{int(table['requests'].sum()) if len(table) else 0} requests, ${spent:.4f} in the last 30 days"
    if hourly.get("buffered_rows"):
        note += f" ({hourly['buffered_rows']} rows not yet written: the database is catching up)"
    return series, table, note


def key_frame(client: Any) -> tuple[Any, str]:
    import pandas as pd

    try:
        data = client.request("GET", "/v1/admin/keys")["data"]
    except Exception as e:  # noqa: BLE001 - a user who is not an admin sees why
        return pd.DataFrame(columns=KEY_COLUMNS), f"keys: {getattr(e, 'message', e)}"
    rows = [{c: (",".join(k[c]) if c == "models" else k.get(c)) for c in KEY_COLUMNS} for k in data]
    return pd.DataFrame(rows, columns=KEY_COLUMNS), f"{len(rows)} active keys"


ROLLOUT_COLUMNS = ["model", "stable", "canary", "weight", "state", "reason", "canary_requests", "canary_errors"]


def rollout_frame(client: Any) -> Any:
    import pandas as pd

    try:
        data = client.request("GET", "/v1/admin/rollouts")["data"]
    except Exception:  # noqa: BLE001 - not an admin: the keys line already says why
        data = []
    rows = [{**{c: r.get(c) for c in ROLLOUT_COLUMNS[:6]}, "canary_requests": r["window"]["canary"]["samples"],
             "canary_errors": f"{r['window']['canary']['error_rate']:.0%}"} for r in data]
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def build_tab(ctx: Any) -> None:
    import gradio as gr

    client = ctx.client
    refresh = gr.Button("Refresh", elem_id="spend-refresh")
    status = gr.Markdown("", elem_id="spend-status")
    with gr.Row():
        # From zero: one hour's bar would otherwise span no height at all.
        cost_plot = gr.BarPlot(x="hour", y="cost_usd", label="Spend per hour (USD)", height=260, y_lim=[0, None])
        req_plot = gr.BarPlot(x="hour", y="requests", label="Requests per hour", height=260, y_lim=[0, None])
    totals = gr.Dataframe(label="Last 30 days by user and model", interactive=False, elem_id="spend-totals")
    rollouts = gr.Dataframe(label="Rollouts (admins)", interactive=False, elem_id="rollouts-table")
    gr.Markdown("### Virtual keys (admins)")
    keys_table = gr.Dataframe(label="Keys", interactive=False, elem_id="keys-table")
    with gr.Row():
        user = gr.Textbox(label="User", elem_id="key-user")
        models = gr.Textbox(label="Models (comma-separated, empty: all)")
        budget = gr.Number(label="Budget USD (empty: none)", value=None)
        period = gr.Dropdown(["month", "day"], value="month", label="Period")
    create = gr.Button("Create key", elem_id="key-create")
    created = gr.Textbox(label="New key (shown once)", interactive=False, elem_id="key-created")
    with gr.Row():
        revoke_id = gr.Textbox(label="Key id to revoke")
        revoke = gr.Button("Revoke", elem_id="key-revoke")

    def load():
        series, table, note = spend_frames(client)
        keys, key_note = key_frame(client)
        return series, series, table, rollout_frame(client), keys, f"{note} · {key_note}"

    def make(u: str, m: str, b: float | None, p: str):
        body: dict[str, Any] = {"user": (u or "").strip(), "period": p}
        if m and m.strip():
            body["models"] = [x.strip() for x in m.split(",") if x.strip()]
        if b:
            body["budget_usd"] = float(b)
        try:
            doc = client.request("POST", "/v1/admin/keys", json=body)
        except Exception as e:  # noqa: BLE001 - the reason, in the tab
            return f"not created: {getattr(e, 'message', e)}", *load()
        return doc["key"], *load()

    def drop(key_id: str):
        try:
            client.request("DELETE", f"/v1/admin/keys/{(key_id or '').strip()}")
        except Exception as e:  # noqa: BLE001
            return (*load()[:-1], f"not revoked: {getattr(e, 'message', e)}")
        return load()

    outputs = [cost_plot, req_plot, totals, rollouts, keys_table, status]
    refresh.click(load, None, outputs)
    create.click(make, [user, models, budget, period], [created, *outputs])
    revoke.click(drop, [revoke_id], outputs)
