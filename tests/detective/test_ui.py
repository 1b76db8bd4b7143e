"""The Detective tab: its handler on real inputs, and the Blocks build."""

from __future__ import annotations

from apps.detective.ui import detect_for_ui
from cluster.config import ConductorConfig
from deployments import packaged


def test_handler_renders_card_chart_and_table():
    status, card, chart, rows, maps, raw = detect_for_ui(ConductorConfig(), str(packaged.smollm2_gguf()), None,
                                                         4096, False)
    assert status.startswith("Inspected") and "`llama`" in card and "blk.0.attn_k.weight" in card
    assert set(chart["component"]) >= {"mlp", "attention", "embedding"}
    assert rows[0][0] == "llama" and len(rows) >= 20 and raw["num_key_value_heads"] == 3 and maps == []


def test_handler_attention_maps(zoo):
    status, card, _, _, maps, raw = detect_for_ui(ConductorConfig(), str(zoo("llama", hide="strip")), None, 512,
                                                  True)
    assert "Attention run" in card and maps and all(m.endswith(".png") for m in maps)
    assert len(raw["attention_analysis"]["heads"]) == 18


def test_handler_bad_input_is_a_4xx_status(tmp_path):
    assert detect_for_ui(ConductorConfig(), str(tmp_path / "missing"), None, 4096, False)[0].startswith("**404:**")
    assert detect_for_ui(ConductorConfig(), "", None, 4096, False)[0].startswith("**400:**")
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"GGUF" + b"\x63\0\0\0" + b"\0" * 40)
    status = detect_for_ui(ConductorConfig(), None, str(fake), 4096, False)[0]
    assert status.startswith("**400:**") and "version 99" in status


def test_tab_builds():
    import gradio as gr

    from apps.gateway.ui import UIContext

    with gr.Blocks() as demo:
        from apps.detective.ui import build_tab

        build_tab(UIContext(config=ConductorConfig(), client=None))  # type: ignore[arg-type]
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"detect-path", "detect-go", "detect-card", "detect-chart", "detect-families"} <= ids
