"""The Documents tab's logic against the real RAG HTTP API, and that the tab builds."""

from __future__ import annotations

from types import SimpleNamespace

from apps.client import ConductorClient
from apps.rag import ui


def test_tab_flow_over_http(rag_http, service, docs, hosted_apis, rag_config, tmp_path):
    client = ConductorClient(base_url=rag_http)
    service._client = ConductorClient(base_url=hosted_apis["a"].base_url.removesuffix("/v1"))
    steps = []
    report = ui.upload_files(client, "kb", [str(docs / "router.md"), str(docs / "kettle.html")], "structure",
                             progress=lambda p, desc="": steps.append(p))
    assert "router.md**: " in report and "chunks" in report and steps == [(0, 2), (1, 2)]
    assert ui._collections(client) == ["kb"]

    frames = list(ui.stream_answer(client, "kb", "How do I descale the kettle?", 3, "hybrid", False))
    text, labels, sources = frames[-1]
    assert "hosted a:" in text and len(frames) > 2  # streamed: several partial frames
    assert "supported by the cited passages" in text or "not grounded" in text  # the grounding check, shown
    assert labels[0].startswith("[1] kettle.html") and sources[0]["source"].endswith("kettle.html")
    ctx = client.request("GET", "/v1/rag/kb/context", params={"source": sources[0]["source"],
                                                              "start": sources[0]["start"], "end": sources[0]["end"]})
    html = ui.render_context(ctx)
    assert "<mark>" in html and "vinegar" in html

    table, plot = ui.history_frames([{"rows": [{"mode": "dense", "recall@5": 0.9, "mrr": 0.8}]},
                                     {"rows": [{"mode": "dense", "recall@5": 0.95, "mrr": 0.85}]}])
    assert list(table["mode"]) == ["dense"] and len(plot) == 4 and set(plot["run"]) == {1, 2}
    answers = {"method": "embedding+lexical", "n": 3, "faithfulness": 0.7, "answer_relevance": 0.6,
               "context_precision": 1.0, "context_recall": 1.0, "grounded": 0.67}
    table, plot = ui.history_frames([{"rows": [{"mode": "hybrid", "recall@5": 0.9, "mrr": 0.8}], "answers": answers}])
    assert list(table["mode"]) == ["hybrid", "answers (embedding+lexical, n=3)"]
    assert "answers faithfulness" in set(plot["series"]) and len(plot) == 2 + 5
    assert ui.citation_label(2, {"source": "/x/manual.pdf", "page": 12, "section": "page 12"}) == \
        "[2] manual.pdf#page=12"

    import gradio as gr

    with gr.Blocks() as demo:
        ui.build_tab(SimpleNamespace(client=client, config=rag_config))
    assert demo is not None
