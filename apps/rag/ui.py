"""The Documents tab: upload files or name a server folder (progress bar), pick a collection, ask with a streamed
answer and clickable citations (the cited passage shown in its context), and an Evaluation view (metrics table +
history plot). Everything goes through the HTTP API (`ctx.client` -> /v1/rag/...), like any other client.
"""

from __future__ import annotations

import html
import os
from typing import Any

PREFIX = "/v1/rag"


def _collections(client: Any) -> list[str]:
    try:
        return [c["name"] for c in client.request("GET", f"{PREFIX}/collections")["collections"]]
    except Exception:  # server not up yet: an empty picker, the user can type a name
        return []


def upload_files(client: Any, collection: str, paths: list[str], chunking: str | None,
                 progress: Any = None) -> str:
    """Upload each file (the server ingests it) -> a Markdown report."""
    lines, total = [], len(paths)
    for i, p in enumerate(paths):
        if progress is not None:
            progress((i, total), desc=f"ingesting {os.path.basename(p)}")
        params = {"filename": os.path.basename(p)} | ({"chunking": chunking} if chunking else {})
        try:
            with open(p, "rb") as f:
                rep = client.upload(f"{PREFIX}/{collection}/upload", f.read(), params)
            skipped = "; ".join(f"{os.path.basename(k)}: {v}" for k, v in rep["skipped"].items())
            lines.append(f"- **{os.path.basename(p)}**: {rep['chunks']} chunks" + (f" (skipped: {skipped})" if skipped else ""))
        except Exception as e:
            lines.append(f"- **{os.path.basename(p)}**: {getattr(e, 'message', str(e))}")
    return "\n".join(lines) or "no files"


def render_context(ctx_json: dict[str, Any]) -> str:
    """The cited span highlighted inside the text around it."""
    e = html.escape
    page = f" · page {ctx_json['page']}" if ctx_json.get("page") else ""
    section = ctx_json.get("section") or ""
    section = "" if section == f"page {ctx_json.get('page')}" else f" § {e(section)}"
    return (f"<div><b>{e(ctx_json['source'])}</b>{page}{section} "
            f"(chars {ctx_json['start']}–{ctx_json['end']})<pre style='white-space:pre-wrap'>"
            f"{e(ctx_json['before'])}<mark>{e(ctx_json['passage'])}</mark>{e(ctx_json['after'])}</pre></div>")


def stream_answer(client: Any, collection: str, question: str, k: int, mode: str, rerank: bool):  # type: ignore[no-untyped-def]
    """Yields (answer markdown, citation labels, sources list) as the answer streams."""
    body = {"question": question, "k": int(k), "mode": mode, "rerank": bool(rerank), "stream": True}
    text, sources, warning = "", [], None
    for ev in client.stream_sse(f"{PREFIX}/{collection}/query", body):
        if ev["type"] == "sources":
            sources, warning = ev["sources"], ev.get("warning")
        elif ev["type"] == "delta":
            text += ev["text"]
        elif ev["type"] == "answer":
            text, sources = ev["answer"] + grounding_note(ev), ev["sources"]
        elif ev["type"] == "error":
            text += f"\n\n**error:** {ev['message']}"
        yield (f"⚠️ {warning}\n\n" if warning else "") + text, [citation_label(i, s) for i, s in
                                                                enumerate(sources, 1)], sources


def citation_label(n: int, s: dict[str, Any]) -> str:
    """`[2] manual.pdf#page=12 § Reset`: the page a PDF viewer opens, then the heading."""
    ref = os.path.basename(s["source"]) + (f"#page={s['page']}" if s.get("page") else "")
    section = s.get("section") if s.get("section") != f"page {s.get('page')}" else ""  # a PDF's page is its section
    return f"[{n}] {ref}" + (f" § {section}" if section else "")


def grounding_note(ans: dict[str, Any]) -> str:
    """What the grounding check found, under the answer."""
    g = ans.get("grounding")
    if not g:
        return ""
    if ans.get("grounded"):
        return (f"\n\n<small>✅ supported by the cited passages ({g['supported_share']:.0%} of sentences, "
                f"{g['method']})</small>")
    said = ans.get("model_answer")
    return (f"\n\n<small>⚠️ not grounded: {g.get('reason') or 'unsupported'} ({g['method']}). "
            + (f"The model had answered: “{said}”" if said else "") + "</small>")


def history_frames(history: list[dict[str, Any]]) -> tuple[Any, Any]:
    """-> (latest metrics table, long-format history for the plot)."""
    import pandas as pd

    if not history:
        return pd.DataFrame(), pd.DataFrame({"run": [], "value": [], "series": []})
    last = history[-1]
    rows = list(last["rows"])
    if last.get("answers"):  # answer scores as one more row of the table
        a = last["answers"]
        rows.append({"mode": f"answers ({a['method']}, n={a['n']})", **{k: a[k] for k in ANSWER_METRICS if k in a}})
    latest = pd.DataFrame(rows).round(3)
    recs = []
    for i, h in enumerate(history, 1):
        for r in h["rows"]:
            for metric in ("recall@5", "mrr"):
                if metric in r:
                    recs.append({"run": i, "value": r[metric], "series": f"{r['mode']} {metric}"})
        for metric in ANSWER_METRICS:
            if metric in (h.get("answers") or {}):
                recs.append({"run": i, "value": h["answers"][metric], "series": f"answers {metric}"})
    return latest, pd.DataFrame(recs)


ANSWER_METRICS = ("faithfulness", "answer_relevance", "context_precision", "context_recall", "grounded")


def build_tab(ctx: Any) -> None:
    """The Documents tab: a collection picker, then the ingest, ask and evaluation sections, top to bottom."""
    import gradio as gr

    client = ctx.client
    with gr.Row():
        # No request while the tab is built: the gateway replica building it is not serving yet. The picker fills
        # on the Refresh button and after each ingestion.
        collection = gr.Dropdown([], label="Collection", allow_custom_value=True, value="docs",
                                 elem_id="rag-collection")
        refresh = gr.Button("↻", scale=0)
        chunking = gr.Radio(["structure", "recursive", "fixed"], value="structure", label="Chunking (new collection)")
    refresh.click(lambda: gr.update(choices=_collections(client)), outputs=collection)
    _ingest_section(client, collection, chunking)
    _ask_section(client, collection)
    _eval_section(client, collection)


def _message(e: Exception) -> str:
    return getattr(e, "message", str(e))


def _ingest_section(client: Any, collection: Any, chunking: Any) -> None:
    import gradio as gr

    with gr.Accordion("Add documents", open=True):
        files = gr.File(file_count="multiple", label="Markdown, text, reST, HTML or PDF", type="filepath",
                        elem_id="rag-files")
        folder = gr.Textbox(label="…or a folder on the server (must be under rag.ingest_roots)")
        ingest_btn = gr.Button("Ingest", variant="primary", elem_id="rag-ingest")
        ingest_out = gr.Markdown(elem_id="rag-ingest-out")

    def do_ingest(coll, chunk, paths, folder_path, progress=gr.Progress()):  # type: ignore[no-untyped-def]
        if not coll:
            return "choose or type a collection name", gr.update()
        out = upload_files(client, coll, list(paths or []), chunk, progress) if paths else ""
        if folder_path:
            try:
                rep = client.post_json(f"{PREFIX}/{coll}/ingest", {"paths": [folder_path], "chunking": chunk})
                out += (f"\n- folder: {len(rep['added'])} added, {len(rep['updated'])} updated, "
                        f"{len(rep['deleted'])} deleted, {len(rep['skipped'])} skipped, {rep['chunks']} chunks")
            except Exception as e:
                out += f"\n- folder: {_message(e)}"
        return out or "nothing to ingest", gr.update(choices=_collections(client), value=coll)

    ingest_btn.click(do_ingest, [collection, chunking, files, folder], [ingest_out, collection])


def _ask_section(client: Any, collection: Any) -> None:
    import gradio as gr

    with gr.Row():
        question = gr.Textbox(label="Question", scale=4, elem_id="rag-question")
        ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="rag-ask")
    with gr.Row():
        k = gr.Slider(1, 20, value=5, step=1, label="k")
        mode = gr.Radio(["hybrid", "dense", "sparse"], value="hybrid", label="Retrieval")
        rerank = gr.Checkbox(label="Rerank")
    answer = gr.Markdown(elem_id="rag-answer")
    cites = gr.Radio([], label="Citations (click one to see it in context)", elem_id="rag-citations")
    passage = gr.HTML()
    sources_state = gr.State([])

    def do_ask(coll, q, k_, mode_, rr):  # type: ignore[no-untyped-def]
        try:
            for text, labels, srcs in stream_answer(client, coll, q, k_, mode_, rr):
                yield text, gr.update(choices=labels, value=None), srcs, ""
        except Exception as e:
            yield f"**error:** {_message(e)}", gr.update(choices=[]), [], ""

    def show(coll, label, srcs):  # type: ignore[no-untyped-def]
        if not label or not srcs:
            return ""
        s = srcs[int(label[1:label.index("]")]) - 1]
        try:
            return render_context(client.request("GET", f"{PREFIX}/{coll}/context",
                                                  params={"source": s["source"], "start": s["start"], "end": s["end"]}))
        except Exception as e:
            return f"<pre>{html.escape(s['text'])}</pre><i>{html.escape(_message(e))}</i>"

    ask_btn.click(do_ask, [collection, question, k, mode, rerank], [answer, cites, sources_state, passage])
    question.submit(do_ask, [collection, question, k, mode, rerank], [answer, cites, sources_state, passage])
    cites.change(show, [collection, cites, sources_state], passage)


def _eval_section(client: Any, collection: Any) -> None:
    import gradio as gr

    with gr.Accordion("Evaluation", open=False):
        eval_btn = gr.Button("Run evaluation on the attached question set")
        answers = gr.Slider(0, 50, value=0, step=1, label="Also answer and score the first N questions",
                            elem_id="rag-eval-answers")
        hist_btn = gr.Button("Load history")
        table = gr.Dataframe(label="Latest metrics")
        plot = gr.LinePlot(x="run", y="value", color="series", label="History", height=300)
        eval_msg = gr.Markdown()

    def load_history(coll):  # type: ignore[no-untyped-def]
        try:
            t, p = history_frames(client.request("GET", f"{PREFIX}/{coll}/eval")["history"])
            return t, p, "" if len(t) else "no evaluation yet"
        except Exception as e:
            return None, None, _message(e)

    def run_eval(coll, n):  # type: ignore[no-untyped-def]
        try:
            client.post_json(f"{PREFIX}/{coll}/eval", {"answers": int(n)})
        except Exception as e:
            return None, None, _message(e)
        return load_history(coll)

    hist_btn.click(load_history, collection, [table, plot, eval_msg])
    eval_btn.click(run_eval, [collection, answers], [table, plot, eval_msg])
