"""A video's record (scenes, transcript, on-screen text, key moments) and its summary.

Key moments are candidates of three kinds, each scored 0..1 within its kind and then ranked together:
scene changes (histogram distance at the cut), on-screen text appearances (new text, by OCR confidence and
length) and speech peaks (words per second × loudness). The summary is written by the LLM from the segment
timeline through the gateway (`ConductorClient`); without a reachable LLM it falls back to an extractive
summary and says so in `summary_source`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_KEY_MOMENTS = 8


def fmt_t(t: float) -> str:
    return f"{int(t // 60):02d}:{t % 60:04.1f}"


def build_record(vid: str, segs: list[dict[str, Any]], thumbs: Path) -> dict[str, Any]:
    thumbs.mkdir(parents=True, exist_ok=True)
    meta = json.loads(segs[0]["meta"])
    scenes, speech = [], []
    for r in segs:
        thumb = thumbs / f"{r['index']}.jpg"
        thumb.write_bytes(r["frames"][0])
        words = json.loads(r["words"])
        scenes.append({"index": r["index"], "start": r["start"], "end": r["end"], "thumbnail": str(thumb),
                       "thumbnail_t": r["frame_ts"][0], "transcript": r["transcript"], "ocr": json.loads(r["ocr"]),
                       "caption": r.get("caption") or "", "cut_strength": r["cut_strength"],
                       "words": len(words), "loudness": r.get("loudness", 0.0)})
        if words:
            speech.append({"start": words[0]["start"], "end": words[-1]["end"], "text": r["transcript"]})
    rec = {"video": vid, "name": segs[0]["name"], "path": segs[0]["path"], "duration": meta["duration"],
           "meta": meta, "scenes": scenes, "speech": speech,
           "transcript": " ".join(s["text"] for s in speech)}
    rec["key_moments"] = key_moments(rec)
    return rec


def key_moments(rec: dict[str, Any], limit: int = MAX_KEY_MOMENTS) -> list[dict[str, Any]]:
    cands: list[dict[str, Any]] = []
    seen_text: set[str] = set()
    peak = max((s["words"] / max(0.5, s["end"] - s["start"]) * (0.5 + 10 * s["loudness"])
                for s in rec["scenes"]), default=0.0) or 1.0
    for s in rec["scenes"]:
        if s["cut_strength"] > 0:
            cands.append({"t": s["start"], "kind": "scene_change", "score": round(s["cut_strength"], 3),
                          "segment": s["index"], "label": f"scene change at {fmt_t(s['start'])}"})
        for line in s["ocr"]:
            key = line["text"].lower()
            if key not in seen_text:
                seen_text.add(key)
                score = line["score"] * min(1.0, 0.4 + len(key) / 30)
                cands.append({"t": line["t"], "kind": "text", "score": round(score, 3), "segment": s["index"],
                              "label": f"text on screen: {line['text']}"})
        if s["words"]:
            rate = s["words"] / max(0.5, s["end"] - s["start"]) * (0.5 + 10 * s["loudness"])
            cands.append({"t": s["start"], "kind": "speech", "score": round(rate / peak, 3), "segment": s["index"],
                          "label": f"speech: {s['transcript'][:80]}"})
    cands.sort(key=lambda c: (-c["score"], c["t"]))
    out: list[dict[str, Any]] = []
    for c in cands:  # at most one moment per kind per second
        if not any(o["kind"] == c["kind"] and abs(o["t"] - c["t"]) < 1.0 for o in out):
            out.append(c)
    return sorted(out[:limit], key=lambda c: c["t"])


def timeline(rec: dict[str, Any], max_chars: int = 3000) -> str:
    lines = []
    for s in rec["scenes"]:
        parts = []
        if s["transcript"]:
            parts.append(f'said: "{s["transcript"]}"')
        if s["ocr"]:
            parts.append("on screen: " + "; ".join(x["text"] for x in s["ocr"]))
        if s.get("caption"):
            parts.append(f"shows: {s['caption']}")
        lines.append(f"[{fmt_t(s['start'])}-{fmt_t(s['end'])}] " + (" | ".join(parts) or "(no speech or text)"))
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[:max_chars] + "\n[...]"


def extractive_summary(rec: dict[str, Any]) -> str:
    bits = [f"{len(rec['scenes'])} segment(s) over {rec['duration']:.1f} s."]
    texts = [x["text"] for s in rec["scenes"] for x in s["ocr"]]
    if texts:
        bits.append("On screen: " + "; ".join(dict.fromkeys(texts)) + ".")
    if rec["transcript"]:
        said = rec["transcript"]
        bits.append("Speech: " + (said if len(said) < 400 else said[:400] + "..."))
    else:
        bits.append("No speech was recognised.")
    return " ".join(bits)


def summarize(rec: dict[str, Any], client=None, model: str | None = None) -> tuple[str, str]:
    """(summary, source). `client`: a ConductorClient (or None: extractive, saying why)."""
    if client is None:
        return extractive_summary(rec), "extractive (no LLM client configured)"
    prompt = ("Summarise this video in 2-4 sentences from its timeline of speech and on-screen text. "
              "Mention what is said and shown; do not invent details.\n\n" + timeline(rec))
    try:
        text = client.chat_text([{"role": "user", "content": prompt}], model=model, max_tokens=200, temperature=0)
    except Exception as e:  # the LLM is optional: the summary must still exist
        return extractive_summary(rec), f"extractive (LLM unavailable: {type(e).__name__}: {str(e)[:120]})"
    if not text.strip():
        return extractive_summary(rec), "extractive (LLM returned no text)"
    return text.strip(), f"llm:{model or 'default'}"


def analysis(rec: dict[str, Any], client=None, model: str | None = None) -> dict[str, Any]:
    """The `conductor video analyze --json` document."""
    summary, source = summarize(rec, client, model)
    return {"video": rec["video"], "name": rec["name"], "duration": rec["duration"],
            "scenes": [{"start": s["start"], "end": s["end"], "thumbnail": s["thumbnail"]} for s in rec["scenes"]],
            "key_moments": rec["key_moments"], "transcript": rec["transcript"], "speech": rec["speech"],
            "on_screen_text": [{"t": x["t"], "text": x["text"]} for s in rec["scenes"] for x in s["ocr"]],
            "summary": summary, "summary_source": source,
            "sampling": {k: rec["meta"][k] for k in ("strategy", "decoded_frames", "sampled_frames", "decode_s")}}
