"""The Gradio app mounted at /ui: Chat and System tabs here, one tab per app from its own `build_tab(ctx)`.

Tabs talk to Conductor through its HTTP API (ctx.client), the same way any user would, so what the UI shows is
what the API does. A tab that fails to build is replaced by a note saying why; the rest of the UI still works.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from apps.client import ConductorAPIError, ConductorClient
from cluster.config import ConductorConfig
from cluster.registry import app_registry, load_attr

log = logging.getLogger("conductor.ui")

@dataclass
class UIContext:
    config: ConductorConfig
    client: ConductorClient
    extras: dict[str, Any] = field(default_factory=dict)


def signed_in_user() -> str | None:
    """The user signed in to the UI for the Gradio event being handled (None without keys or outside an event)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "username", None) or None


def make_client(config: ConductorConfig) -> ConductorClient:
    """Tabs act for the signed-in user: what they create is that user's, and they see only what that user may."""
    return ConductorClient.for_config(config, acting_user=signed_in_user)


def stream_chat(client: ConductorClient, model: str, messages: list[dict[str, Any]], max_tokens: int,
                temperature: float):  # -> Iterator[tuple[str | None, str]]: (backend, new text)
    """Yield (backend, piece) for each streamed piece; backend comes from the x-conductor-backend header."""
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens,
            "temperature": temperature}
    seen: dict[str, str | None] = {}
    try:
        for chunk in client.stream_sse("/v1/chat/completions", body,
                                       on_headers=lambda h: seen.update(backend=h.get("x-conductor-backend"))):
            for c in chunk.get("choices", []):
                piece = (c.get("delta") or {}).get("content")
                if piece:
                    yield seen.get("backend"), piece
    except ConductorAPIError as e:
        raise RuntimeError(str(e) if not e.mid_stream else e.message) from None


def build_chat_tab(ctx: UIContext) -> None:
    import gradio as gr

    model_ids = [m.id for m in ctx.config.models]
    with gr.Row():
        model = gr.Dropdown(model_ids, value=ctx.config.default_model, label="Model", elem_id="chat-model")
        max_tokens = gr.Slider(16, 1024, value=128, step=16, label="Max tokens")
        temperature = gr.Slider(0, 1.5, value=0.7, step=0.1, label="Temperature")
    chatbot = gr.Chatbot(label="Conversation", elem_id="chat-box", height=420)
    backend_md = gr.Markdown("", elem_id="chat-backend")
    with gr.Row():
        box = gr.Textbox(placeholder="Ask something…", show_label=False, scale=8, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("Clear", scale=1)

    def respond(message: str, history: list[dict[str, Any]], model_id: str, n: int, temp: float):
        if not (message or "").strip():
            yield history, "", "Type a message first."
            return
        history = list(history or []) + [{"role": "user", "content": message},
                                         {"role": "assistant", "content": ""}]
        msgs = [{"role": m["role"], "content": _as_text(m["content"])} for m in history[:-1]]
        t0, backend = time.perf_counter(), None
        try:
            for backend, piece in stream_chat(ctx.client, model_id, msgs, int(n), float(temp)):
                history[-1]["content"] += piece
                yield history, "", f"answering: `{backend}`"
        except Exception as e:  # shown to the person, not raised into Gradio's error toast
            history[-1]["content"] += f"\n\n⚠️ {e}"
        yield history, "", f"answered by backend `{backend or 'none'}` in {time.perf_counter() - t0:.2f}s"

    send.click(respond, [box, chatbot, model, max_tokens, temperature], [chatbot, box, backend_md])
    box.submit(respond, [box, chatbot, model, max_tokens, temperature], [chatbot, box, backend_md])
    clear.click(lambda: ([], ""), None, [chatbot, backend_md])


def _as_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def parse_metrics(text: str) -> dict[str, float]:
    """Sum Prometheus samples by metric name (labels dropped) for the System tab's overview."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name.endswith(("_bucket", "_created")):
            continue
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def build_system_tab(ctx: UIContext, tab: Any = None) -> None:
    """Deployments, replicas, breakers and a metrics plot: loaded when the tab is opened, then every 5 s."""
    import gradio as gr
    import pandas as pd

    history: list[dict[str, Any]] = []
    refresh = gr.Button("Refresh", elem_id="system-refresh")
    deployments = gr.Dataframe(label="Deployments and replicas", interactive=False)
    breakers = gr.JSON(label="Models, backends and breakers")
    plot = gr.LinePlot(x="time", y="value", color="metric", label="Requests and tokens (cumulative)",
                       height=300)

    def load():  # -> (deployments df, router json, plot df)
        try:
            st = ctx.client.request("GET", "/v1/status")
            metrics = parse_metrics(ctx.client.response("GET", "/metrics").text)
        except Exception as e:
            return pd.DataFrame([{"error": str(e)}]), {}, pd.DataFrame(columns=["time", "value", "metric"])
        rows = [{"application": a, "deployment": d, "status": info["status"],
                 "replicas": ", ".join(f"{k}: {v}" for k, v in info["replicas"].items())}
                for a, app in st.get("applications", {}).items() if isinstance(app, dict)
                for d, info in app.get("deployments", {}).items()]
        now = time.strftime("%H:%M:%S")
        for key in ("conductor_requests_total", "conductor_tokens_output_total", "conductor_fallbacks_total"):
            history.append({"time": now, "value": metrics.get(key, 0.0), "metric": key.replace("conductor_", "")})
        del history[:-300]
        return pd.DataFrame(rows), st.get("router", {}), pd.DataFrame(history)

    outputs = [deployments, breakers, plot]
    refresh.click(load, None, outputs)
    if tab is not None:
        tab.select(load, None, outputs)
    timer = gr.Timer(5.0)
    timer.tick(load, None, outputs)


def app_tabs(config: ConductorConfig) -> list[tuple[str, str]]:
    """(label, "module:build_tab") of every registered app with a tab, in registry order; each builder is called
    inside `with gr.Tab(label):` with the UIContext."""
    return [d.tab for d in app_registry(config) if d.tab and d.enabled(config)]


def build_ui(config: ConductorConfig, client: ConductorClient | None = None) -> Any:
    import gradio as gr

    ctx = UIContext(config=config, client=client or make_client(config))
    with gr.Blocks(title="Conductor") as demo:
        gr.Markdown("# Conductor")
        with gr.Tab("Chat", id="chat"):
            build_chat_tab(ctx)
        for label, target in app_tabs(config):
            with gr.Tab(label):
                try:
                    load_attr(target)(ctx)
                except Exception as e:
                    log.exception("tab %s failed to build", label)
                    gr.Markdown(f"**{label} is unavailable:** `{type(e).__name__}: {e}`")
        with gr.Tab("System", id="system") as system_tab:
            build_system_tab(ctx, system_tab)
    demo.queue(default_concurrency_limit=8)
    return demo
