"""The Video tab: upload (with progress), scene timeline with thumbnails, search that jumps the player to the
moment, the summary, and key moments as a gallery. Talks to `/v1/video` through `ctx.client` (ConductorClient)."""

from __future__ import annotations

import base64
import io
from typing import Any

from apps.video.upload import PREFIX, ingest_with_progress

# Seek the page's <video> element (Gradio has no seek API): runs in the browser after a jump time is set.
JUMP_JS = """(t) => { const v = document.querySelector('#conductor-video-player video');
  if (v && t !== null && t >= 0) { v.currentTime = t; v.play(); } return t; }"""


def _image(data_uri: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB")


def load_video(client, video: str, summary: bool = True) -> dict[str, Any]:
    return client.request("GET", f"{PREFIX}/videos/{video}",
                          params={"summary": str(summary).lower(), "inline_thumbnails": "true"})


def search(client, query: str, video: str | None, k: int = 5) -> list[dict[str, Any]]:
    body = {"query": query, "k": k, **({"video": video} if video else {})}
    return client.post_json(f"{PREFIX}/search", body)["data"]


def timeline_items(doc: dict[str, Any]) -> list[tuple[Any, str]]:
    return [(_image(s["thumbnail"]), f"{s['start']:.1f}-{s['end']:.1f}s  {(s['transcript'] or ' / '.join(s['ocr']))[:40]}")
            for s in doc["scenes"]]


def moment_items(doc: dict[str, Any]) -> list[tuple[Any, str]]:
    scenes = doc["scenes"]
    return [(_image(scenes[m["segment"]]["thumbnail"]), f"{m['t']:.1f}s  {m['label']}") for m in doc["key_moments"]]


def results_rows(hits: list[dict[str, Any]]) -> list[list[Any]]:
    return [[h["start"], h["end"], round(h["score"], 3), ",".join(h["why"]), (h["transcript"] or h["ocr"])[:80]]
            for h in hits]


def build_tab(ctx) -> None:
    """Called by the gateway inside `gr.Tab("Video")`."""
    import gradio as gr

    state = gr.State({})
    with gr.Row():
        with gr.Column(scale=3):
            player = gr.Video(label="Video", elem_id="conductor-video-player", sources=["upload"])
            ingest_btn = gr.Button("Analyse video", variant="primary")
            status = gr.Markdown()
        with gr.Column(scale=2):
            summary = gr.Markdown(label="Summary")
    timeline = gr.Gallery(label="Scenes (click to jump)", columns=8, height=180, allow_preview=False)
    with gr.Row():
        query = gr.Textbox(label="Find a moment", placeholder="something said, shown or written", scale=4)
        search_btn = gr.Button("Search", scale=1)
    results = gr.Dataframe(headers=["start", "end", "score", "why", "text"], interactive=False, label="Moments")
    moments = gr.Gallery(label="Key moments", columns=6, height=200, allow_preview=False)
    jump = gr.Number(visible=False, value=-1)

    def do_ingest(path, progress=gr.Progress()):
        if not path:
            raise gr.Error("Upload a video first.")
        progress(0.01, desc="uploading")
        try:
            rec = ingest_with_progress(ctx.client, path, lambda frac, text: progress(frac, desc=text))
            progress(0.96, desc="writing the summary")
            doc = load_video(ctx.client, rec["video"])
        except Exception as e:  # show the API's reason (4xx for bad files) instead of a traceback
            raise gr.Error(str(e)) from None
        progress(1.0)
        head = f"**{doc['name']}** — {doc['duration']:.1f} s, {len(doc['scenes'])} scenes"
        return (doc, head, f"{doc['summary']}\n\n_{doc['summary_source']}_", timeline_items(doc), moment_items(doc))

    def do_search(q, doc):
        if not (q or "").strip():
            raise gr.Error("Type what to look for.")
        try:
            hits = search(ctx.client, q, (doc or {}).get("video"))
        except Exception as e:
            raise gr.Error(str(e)) from None
        return results_rows(hits), (hits[0]["start"] if hits else -1)

    def scene_time(doc, evt: gr.SelectData):
        return doc["scenes"][evt.index]["start"] if doc else -1

    def moment_time(doc, evt: gr.SelectData):
        return doc["key_moments"][evt.index]["t"] if doc else -1

    def row_time(evt: gr.SelectData):
        return float(evt.row_value[0]) if evt.row_value else -1

    ingest_btn.click(do_ingest, [player], [state, status, summary, timeline, moments])
    search_btn.click(do_search, [query, state], [results, jump])
    query.submit(do_search, [query, state], [results, jump])
    timeline.select(scene_time, [state], [jump])
    moments.select(moment_time, [state], [jump])
    results.select(row_time, None, [jump])
    jump.change(None, [jump], [jump], js=JUMP_JS)
