"""Ingest the synthetic clip with the real models (RapidOCR, Whisper base, MiniLM, Qdrant local) and search it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from apps.video.analyze import analysis


def test_segments_carry_speech_and_text(library, std_clip):
    _, rec = library
    assert [round(s["start"], 2) for s in rec["scenes"]] == [0.0, 2.0, 4.0]
    assert "REVENUE" in " ".join(x["text"] for x in rec["scenes"][1]["ocr"]).upper()
    said = rec["scenes"][2]["transcript"].lower()
    assert "launch window" in said and "tuesday" in said
    assert not rec["scenes"][0]["transcript"] and not rec["scenes"][0]["ocr"]


def test_spoken_phrase_finds_its_segment_first(library):
    index, rec = library
    hits = index.search("when does the launch window open", k=3)
    top = hits[0]
    assert top["video"] == rec["video"] and top["segment"] == 2 and "transcript" in top["why"]
    assert 4.0 <= top["start"] < top["end"] <= 7.2
    assert top["score"] > (hits[1]["score"] if len(hits) > 1 else 0)


def test_on_screen_text_finds_its_segment_first(library):
    index, _ = library
    top = index.search("quarterly revenue")[0]
    assert top["segment"] == 1 and top["why"][0] == "ocr" and (top["start"], top["end"]) == (2.0, 4.0)


def test_search_filters_by_video_and_rejects_empty(library):
    index, _ = library
    assert index.search("quarterly revenue", video="0000000000000000") == []
    with pytest.raises(ValueError):
        index.search("   ")


def test_visual_similarity_finds_the_same_shot(library, std_clip):
    from apps.video.decode import frames_at

    index, _ = library
    frame = frames_at(str(std_clip.path), [5.0])[0].image
    assert index.similar_frames(frame, k=1)[0]["segment"] == 2


def test_analysis_document_and_key_moments(library):
    _, rec = library
    doc = analysis(rec, client=None)
    assert doc["duration"] == pytest.approx(7.0, abs=0.2)
    assert [round(s["start"], 2) for s in doc["scenes"]] == [0.0, 2.0, 4.0]
    kinds = {m["kind"] for m in doc["key_moments"]}
    assert kinds == {"scene_change", "text", "speech"}
    assert "launch window" in doc["transcript"].lower()
    assert doc["summary_source"].startswith("extractive") and "REVENUE" in doc["summary"].upper()


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint (the network edge), recording the prompt it was sent."""

    prompts: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.prompts.append(body["messages"][-1]["content"])
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A launch briefing."}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_summary_through_the_gateway_client_and_fallback(library):
    from apps.client import ConductorClient

    _, rec = library
    srv = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        doc = analysis(rec, ConductorClient(f"http://127.0.0.1:{srv.server_port}"), "smollm2")
    finally:
        srv.shutdown()
    assert doc["summary"] == "A launch briefing." and doc["summary_source"] == "llm:smollm2"
    assert "[00:04.0-" in _FakeLLM.prompts[-1] and "launch window" in _FakeLLM.prompts[-1].lower()
    down = analysis(rec, ConductorClient(f"http://127.0.0.1:{srv.server_port}", timeout=2), "smollm2")
    assert down["summary_source"].startswith("extractive (LLM unavailable")
