"""The Agent tab: chat with an agent, watch its steps stream in as collapsible items (thoughts, tool calls,
results), approve or reject dangerous calls, and browse past traces. Talks to `/v1/agent` through `ctx.client`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

PREFIX = "/v1/agent"


def _short(value: Any, n: int = 1500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= n else text[:n] + " …"


def step_messages(step: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat items for one streamed step; `metadata.title` makes Gradio render them as collapsible blocks."""
    who = f"{step['agent']}" + (f" (consulted, depth {step['depth']})" if step.get("depth") else "")
    if step["kind"] != "model":
        return [{"role": "assistant", "content": step.get("note") or step["kind"],
                 "metadata": {"title": f"{step['kind']} · {who}"}}]
    items = []
    if step.get("thought"):
        items.append({"role": "assistant", "content": step["thought"], "metadata": {"title": f"thought · {who}"}})
    if step.get("error"):
        items.append({"role": "assistant", "content": f"{step['error']}\n\nraw output:\n{_short(step.get('output'))}",
                      "metadata": {"title": f"invalid step · {who}"}})
    for c in step.get("calls", []):
        body = f"arguments: {_short(c.get('args'), 600)}\n\n"
        body += f"result:\n{_short(c['result'])}" if c.get("result") is not None else f"{c['status']}: {c.get('error') or ''}"
        timing = f" · {c['duration_ms']:.0f} ms" if c.get("duration_ms") else ""
        items.append({"role": "assistant", "content": body,
                      "metadata": {"title": f"🔧 {c['tool']} [{c['status']}]{timing} · {who}"}})
    if step.get("final_answer") is not None and not step.get("depth"):
        items.append({"role": "assistant", "content": step["final_answer"]})
    return items


def consume(events: Iterator[dict[str, Any]], history: list[dict], state: dict) -> Iterator[tuple[list, dict, str]]:
    """Fold a run's SSE events into (chat history, state, status line) snapshots."""
    for ev in events:
        if ev.get("type") == "run":
            state["run_id"] = ev["run_id"]
        elif ev.get("type") == "step":
            history = history + step_messages(ev["step"])
        elif ev.get("type") == "error":
            history = history + [{"role": "assistant", "content": f"Error: {ev['message']}"}]
        elif ev.get("type") == "done":
            state["pending"] = ev.get("pending") or []
            if state["pending"]:
                calls = "\n".join(f"- {p['tool']}: {_short(p['args'], 400)}" for p in state["pending"])
                history = history + [{"role": "assistant", "content": f"Waiting for your approval:\n{calls}",
                                      "metadata": {"title": "⚠ approval needed"}}]
            elif ev.get("stopped_reason") != "final_answer":
                history = history + [{"role": "assistant", "content": f"(stopped: {ev.get('stopped_reason')})"}]
        status = f"run {state.get('run_id', '?')}" + (" · waiting for approval" if state.get("pending") else "")
        yield history, state, status


def _agents(config) -> list[str]:
    """From config, not from the agent app: tabs are built while the gateway replica starts, before any app
    answers (a request then would queue behind the very replica that is starting)."""
    from apps.agent.agents import configured_agents

    return sorted(configured_agents(config.agent.agents))


def build_tab(ctx) -> None:
    """Called by the gateway inside `gr.Tab("Agent")`."""
    import gradio as gr

    client = ctx.client
    state = gr.State({})
    with gr.Row():
        agent = gr.Dropdown(_agents(ctx.config), value=ctx.config.agent.default_agent, label="Agent",
                            elem_id="agent-name", scale=1)
        session = gr.Textbox(label="Session (optional: continue a conversation)", elem_id="agent-session",
                             scale=1)
        status = gr.Markdown("", elem_id="agent-status")
    chat = gr.Chatbot(label="Agent", elem_id="agent-chat", height=480)
    with gr.Row():
        task = gr.Textbox(placeholder="Ask the agent…", show_label=False, scale=5, elem_id="agent-task")
        run = gr.Button("Run", variant="primary", scale=1, elem_id="agent-run")
    with gr.Row():
        approve = gr.Button("Approve pending call", elem_id="agent-approve")
        reject = gr.Button("Reject pending call", variant="stop", elem_id="agent-reject")
    def start(text: str, name: str, sid: str, history: list, st: dict):
        if not text or not text.strip():
            raise gr.Error("Type a task first.")
        history = (history or []) + [{"role": "user", "content": text}]
        st = {}
        try:
            body = {"task": text, "agent": name, "stream": True,
                    **({"session_id": sid.strip()} if (sid or "").strip() else {})}
            events = client.stream_sse(f"{PREFIX}/runs", body)
            yield from consume(events, history, st)
        except Exception as e:  # noqa: BLE001 - shown in the tab, not a stack trace
            yield history + [{"role": "assistant", "content": f"Error: {e}"}], st, "error"

    def decide(ok: bool):
        def fn(history: list, st: dict):
            if not st.get("pending"):
                raise gr.Error("Nothing is waiting for approval.")
            history = (history or []) + [{"role": "user", "content": "✅ approved" if ok else "❌ rejected"}]
            try:
                events = client.stream_sse(f"{PREFIX}/runs/{st['run_id']}/approval", {"approve": ok})
                yield from consume(events, history, st)
            except Exception as e:  # noqa: BLE001
                yield history + [{"role": "assistant", "content": f"Error: {e}"}], st, "error"
        return fn

    run.click(start, [task, agent, session, chat, state], [chat, state, status])
    task.submit(start, [task, agent, session, chat, state], [chat, state, status])
    approve.click(decide(True), [chat, state], [chat, state, status])
    reject.click(decide(False), [chat, state], [chat, state, status])

    _runs_section(client, chat, state, status)
    _mcp_section(client)


def _runs_section(client, chat, state, status) -> None:
    """Past runs: list them, show a trace, resume one interrupted mid-run; the user's sessions."""
    import gradio as gr

    with gr.Accordion("Past runs", open=False):
        refresh = gr.Button("Refresh", elem_id="agent-refresh")
        runs = gr.Dataframe(headers=["run_id", "agent", "task", "stopped_reason", "steps", "answer"],
                            interactive=False, elem_id="agent-runs")
        run_id = gr.Textbox(label="Run id", elem_id="agent-run-id")
        show = gr.Button("Show trace")
        resume = gr.Button("Resume this run (interrupted mid-run)", elem_id="agent-resume")
        sessions_btn = gr.Button("List sessions", elem_id="agent-sessions-list")
        sessions = gr.Dataframe(headers=["session_id", "turns", "updated"], interactive=False,
                                elem_id="agent-sessions")
        trace = gr.JSON(label="Trace", elem_id="agent-trace")

    def list_runs():
        rows = client.request("GET", f"{PREFIX}/runs")["runs"]
        return [[r["run_id"], r["agent"], _short(r["task"], 80), r["stopped_reason"], r["steps"],
                 _short(r.get("answer") or "", 80)] for r in rows]

    def get_trace(rid: str):
        if not rid.strip():
            raise gr.Error("Give a run id.")
        return client.request("GET", f"{PREFIX}/runs/{rid.strip()}")

    def resume_run(rid: str, history: list, st: dict):
        if not rid.strip():
            raise gr.Error("Give a run id.")
        history = (history or []) + [{"role": "user", "content": f"↻ resume {rid.strip()}"}]
        st = {}
        try:
            events = client.stream_sse(f"{PREFIX}/runs/{rid.strip()}/resume", {"stream": True})
            yield from consume(events, history, st)
        except Exception as e:  # noqa: BLE001 - e.g. 409: the run is not interrupted
            yield history + [{"role": "assistant", "content": f"Error: {getattr(e, 'message', e)}"}], st, "error"

    refresh.click(list_runs, None, runs)
    show.click(get_trace, run_id, trace)
    resume.click(resume_run, [run_id, chat, state], [chat, state, status])

    def list_sessions():
        import datetime as dt

        rows = client.request("GET", f"{PREFIX}/sessions")["sessions"]
        return [[s["session_id"], s["turns"], dt.datetime.fromtimestamp(s["updated_at"]).isoformat(" ", "seconds")]
                for s in rows]

    sessions_btn.click(list_sessions, None, sessions)


def mcp_rows(servers: list[dict]) -> list[list]:
    """One row per configured MCP server: how it is reached, whether it is connected, its tools or its error."""
    return [[s["name"], s["transport"], "yes" if s["connected"] else "no", ", ".join(s.get("tools") or []) or "-",
             s.get("error") or "; ".join(f"{k}: {v}" for k, v in (s.get("refused") or {}).items()) or ""]
            for s in servers]


def _mcp_section(client) -> None:
    import gradio as gr

    with gr.Accordion("MCP servers", open=False):
        connect = gr.Button("Connect and list tools", elem_id="agent-mcp-connect")
        table = gr.Dataframe(headers=["server", "transport", "connected", "tools", "error"], interactive=False,
                             elem_id="agent-mcp")

    def load():
        try:
            return mcp_rows(client.request("GET", f"{PREFIX}/mcp", params={"connect": "true"})["servers"])
        except Exception as e:  # noqa: BLE001 - shown in the tab
            return [["(error)", "", "", "", getattr(e, "message", str(e))]]

    connect.click(load, None, table)
