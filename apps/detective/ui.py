"""The Detective tab: name a server-side path or upload a file, get the card with evidence, a parameter breakdown
chart, the family comparison table and (optionally) attention maps. Runs in the gateway replica and calls the
Python API directly (no model weights cross the network)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from cluster.config import ConductorConfig

EMPTY_CHART = {"component": [], "parameters": []}


def detect_for_ui(config: ConductorConfig, path: str | None, upload: str | None, context: float | None,
                  run: bool) -> tuple[str, str, Any, list[list[Any]], list[str], dict[str, Any]]:
    """(status, card markdown, chart dataframe, candidate rows, map image paths, raw JSON). Never raises: bad input
    becomes a status line with the HTTP-style code the API would give."""
    import pandas as pd

    from apps.common import APIError
    from apps.detective.card import markdown_card
    from apps.detective.report import Report
    from apps.detective.serve import check_path, run_detection

    empty = ("", pd.DataFrame(EMPTY_CHART), [], [], {})
    try:
        target = _target(config, path, upload, check_path)
        data = run_detection(config, target, int(context) if context else None, False)
        report = Report(**data)
        maps: list[str] = []
        if run:
            maps, data["attention_analysis"] = _attention(config, target, report)
    except APIError as e:
        return (f"**{e.status}:** {e.message}", *empty)
    chart = pd.DataFrame({"component": list(report.params_by_component),
                          "parameters": list(report.params_by_component.values())})
    rows = [[c.family, c.name, round(c.score, 3), round(c.feature_score, 3), "; ".join(c.differences[:3])]
            for c in report.candidates]
    card = markdown_card(report)
    if "attention_analysis" in data:
        a = data["attention_analysis"]
        card += (f"\n\n**Attention run:** previous-token heads {', '.join(a['previous_token_heads'][:6]) or 'none'}; "
                 f"induction heads {', '.join(a['induction_heads'][:6]) or 'none'}; sinks "
                 f"{', '.join(a['sink_heads'][:6]) or 'none'}")
    return f"Inspected in {report.elapsed_s:.3f} s", card, chart, rows, maps, data


def _target(config: ConductorConfig, path: str | None, upload: str | None, check_path: Any) -> str:
    from apps.common import APIError

    if upload:
        size = os.path.getsize(upload)
        if size > config.detective.max_upload_bytes:
            raise APIError(413, f"upload of {size} bytes exceeds the limit of {config.detective.max_upload_bytes}")
        return upload
    if path and path.strip():
        return check_path(config, path.strip())
    raise APIError(400, "name a model path or upload a .safetensors / .gguf file")


def _attention(config: ConductorConfig, target: str, report: Any) -> tuple[list[str], dict[str, Any]]:
    from apps.common import APIError
    from apps.detective import DetectiveError
    from apps.detective.attention import analyze_attention

    if not config.detective.allow_run:
        raise APIError(403, "attention runs are disabled on this server (detective.allow_run)")
    folder = tempfile.mkdtemp(prefix="conductor-maps-")
    try:
        result = analyze_attention(target, report, maps_dir=folder, max_params=config.detective.run_max_params)
    except DetectiveError as e:
        raise APIError(400, str(e)) from None
    return result.maps, result.model_dump()


def build_tab(ctx: Any) -> None:
    import gradio as gr

    config: ConductorConfig = ctx.config
    gr.Markdown("Point at a model folder, a `.safetensors` or a `.gguf` file: the detective reads only headers "
                "and says what the model is, with the tensors or keys that prove each fact.")
    with gr.Row():
        path = gr.Textbox(label="Model path on the server", placeholder="/models/my-model", elem_id="detect-path",
                          scale=3)
        upload = gr.File(label="...or upload one file", file_types=[".safetensors", ".gguf"], type="filepath",
                         elem_id="detect-upload", scale=2)
    with gr.Row():
        context = gr.Number(value=config.detective.default_context, label="Context length (KV cache)", precision=0)
        run = gr.Checkbox(label="Run attention analysis (loads small safetensors models)", value=False,
                          interactive=config.detective.allow_run)
        go = gr.Button("Inspect", variant="primary", elem_id="detect-go")
    status = gr.Markdown(elem_id="detect-status")
    card = gr.Markdown(elem_id="detect-card")
    with gr.Row():
        chart = gr.BarPlot(value=None, x="component", y="parameters", title="Parameters by component",
                           elem_id="detect-chart")
        maps = gr.Gallery(label="Attention maps (strongest heads)", columns=3, height=320, elem_id="detect-maps")
    table = gr.Dataframe(headers=["family", "name", "score", "feature score", "differences"],
                         label="Nearest families", interactive=False, elem_id="detect-families")
    raw = gr.JSON(label="Report JSON")

    def on_click(p: str, f: str | None, c: float, r: bool):  # type: ignore[no-untyped-def]
        return detect_for_ui(config, p, f, c, r)

    go.click(on_click, [path, upload, context, run], [status, card, chart, table, maps, raw])
