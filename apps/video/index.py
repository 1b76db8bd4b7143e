"""The video library: ingest files through the pipeline into Qdrant + per-video records, and search moments.

A search embeds the query once, asks each modality's named vector (transcript, OCR, caption, and CLIP when a
vision model is configured), and fuses per segment: the score is the best modality's cosine plus a bonus when
the query's words literally occur in the segment's text (OCR often drops spaces: "QUARTERLYREVENUE"); `why`
names the modalities that matched.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from apps.video.pipeline import Progress, file_id, run_local, run_ray
from apps.video.probe import ProbeError, probe
from apps.video.store import TEXT_VECTORS, VideoStore
from cluster.config import VideoConfig, expand_path
from cluster.files import atomic_write_json, read_json, read_json_records

log = logging.getLogger("conductor.video")


def owners(rec: dict[str, Any]) -> list[str]:
    """Users a video belongs to; records made by the local CLI (no user) belong to the local user."""
    return list(rec.get("owners") or ["local"])

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".y4m", ".flv", ".wmv"}
MIN_SCORE = 0.2  # below this cosine a modality is not called a match


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


def lexical(query: str, text: str) -> float:
    """1.0 when the whole query occurs in the text (ignoring case, spaces, punctuation), else the share of words."""
    if not query.strip() or not text.strip():
        return 0.0
    q, t = _norm(query), _norm(text)
    if q and q in t:
        return 1.0
    words = [w for w in re.findall(r"[a-z0-9]+", query.lower()) if len(w) > 2]
    return sum(1 for w in words if w in t) / len(words) if words else 0.0


def expand_inputs(target: str) -> list[str]:
    p = Path(target).expanduser()
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
        if not files:
            raise ProbeError(f"no video files ({', '.join(sorted(VIDEO_EXTS))}) under {p}", 400)
        return files
    if not p.is_file():
        raise ProbeError(f"no such file or folder: {target}", 400)
    return [str(p)]


class VideoIndex:
    def __init__(self, vc: VideoConfig, location: str | None = None):
        from apps.video.features import VISUAL_DIM
        from deployments.embedder_local import shared_embedder

        self.vc = vc
        self.root = expand_path(vc.data_dir)
        self._owners_lock = threading.Lock()
        self.embedder = shared_embedder(vc.embedding_model)
        clip_dim = None
        if vc.vision_model:
            from deployments.vision import shared_vision

            clip_dim = shared_vision(vc.vision_model).dim

        from deployments.secrets import read_secret

        key = read_secret(vc.qdrant_api_key_env)
        self.store = VideoStore(location or str(self.root / "qdrant"), vc.collection, self.embedder.dim, VISUAL_DIM,
                                clip_dim, url=vc.qdrant_url, api_key=key)
        (self.root / "videos").mkdir(parents=True, exist_ok=True)

    # --- ingest ---------------------------------------------------------------------------------------------
    def ingest(self, paths: list[str], mode: str = "local", workers: int = 2, address: str | None = None,
               progress: Progress | None = None, force: bool = False) -> list[dict[str, Any]]:
        """Probe every file first (fast, bounded, own process: bad files fail before any work), then run."""
        todo, done = [], []
        for p in paths:
            probe(p, self.vc.limits)
            vid = file_id(p)
            if not force and self.record(vid):
                done.append(self.record(vid))
            else:
                todo.append(p)
        if todo:
            cfg = self.vc.model_dump()
            rows = run_ray(todo, cfg, workers, address, progress) if mode == "ray" else run_local(todo, cfg, progress)
            done += self._write(rows)
        return done

    def _write(self, rows) -> list[dict[str, Any]]:
        from apps.video.analyze import build_record

        by_video: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_video.setdefault(row["video"], []).append(row)
        records = []
        for vid, segs in by_video.items():
            segs.sort(key=lambda r: r["index"])
            self.store.delete_video(vid)
            self.store.upsert([self._point(r) for r in segs])
            rec = build_record(vid, segs, self.root / "thumbs" / vid)
            atomic_write_json(self.root / "videos" / f"{vid}.json", rec)
            records.append(rec)
        return records

    @staticmethod
    def _point(r: dict[str, Any]) -> dict[str, Any]:
        payload = {k: r[k] for k in ("video", "name", "index", "start", "end", "transcript", "ocr_text", "frame_ts")}
        payload["words"] = json.loads(r["words"])
        payload["caption"] = r.get("caption") or ""
        return {"payload": payload, "vectors": {"transcript": r["transcript_vec"], "ocr": r["ocr_vec"],
                                                "visual": r["visual_vec"], "clip": r.get("clip_vec"),
                                                "caption": r.get("caption_vec")}}

    def record(self, video: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[0-9a-f]{16}", video or ""):
            return None
        return read_json(self.root / "videos" / f"{video}.json")

    def videos(self, owner: str | None = None) -> list[dict[str, Any]]:
        """The library, or only `owner`'s videos when given."""
        out = []
        for p, r in read_json_records(sorted((self.root / "videos").glob("*.json"))):
            try:
                if owner is not None and owner not in owners(r):
                    continue
                out.append({k: r[k] for k in ("video", "name", "duration")} | {"segments": len(r["scenes"])})
            except (KeyError, TypeError):
                log.warning("skipping malformed video record %s", p)
        return out

    def add_owner(self, video: str, user: str) -> None:
        """Give `user` the video (the same bytes uploaded by two users are stored once, owned by both)."""
        with self._owners_lock:
            rec = self.record(video)
            if rec is not None and user not in rec.get("owners", []):
                rec["owners"] = rec.get("owners", []) + [user]  # a new record has none yet
                atomic_write_json(self.root / "videos" / f"{video}.json", rec)

    # --- search ---------------------------------------------------------------------------------------------
    def search(self, query: str, video: str | None = None, k: int = 5) -> list[dict[str, Any]]:
        if not query.strip():
            raise ValueError("query is empty")
        qv = self.embedder.embed([query])[0]
        hits: dict[tuple[str, int], dict[str, Any]] = {}
        wide = max(20, k * 4)
        modal = [(name, qv) for name in TEXT_VECTORS]
        if self.store.has_clip:
            from deployments.vision import shared_vision

            modal.append(("clip", shared_vision(self.vc.vision_model).embed_texts([query])[0]))
        for name, vec in modal:
            for payload, score in self.store.search(name, vec, video, wide):
                h = hits.setdefault((payload["video"], payload["index"]), {"payload": payload, "scores": {}})
                h["scores"][name] = round(score, 4)
        return sorted((self._moment(query, h) for h in hits.values()), key=lambda m: -m["score"])[:k]

    @staticmethod
    def _moment(query: str, h: dict[str, Any]) -> dict[str, Any]:
        p, scores = h["payload"], dict(h["scores"])
        lex = {"transcript": lexical(query, p.get("transcript", "")), "ocr": lexical(query, p.get("ocr_text", "")),
               "caption": lexical(query, p.get("caption", ""))}
        fused = {m: scores.get(m, 0.0) + 0.5 * lex.get(m, 0.0) for m in set(scores) | set(lex)}
        best = max(fused.values(), default=0.0)
        why = sorted((m for m, s in fused.items() if s >= MIN_SCORE and s >= best - 0.15), key=lambda m: -fused[m])
        start, end = p["start"], p["end"]
        words = p.get("words") or []
        span = [w for w in words if _norm(w["text"]) and _norm(w["text"]) in _norm(query)]
        if "transcript" in why and span:  # narrow to the spoken words that matched
            start, end = span[0]["start"], span[-1]["end"]
        return {"video": p["video"], "name": p.get("name"), "segment": p["index"], "start": round(start, 3),
                "end": round(end, 3), "segment_start": p["start"], "segment_end": p["end"],
                "score": round(best, 4), "why": why, "scores": {m: round(s, 4) for m, s in fused.items()},
                "transcript": p.get("transcript", ""), "ocr": p.get("ocr_text", ""), "caption": p.get("caption", "")}

    def similar_frames(self, image: np.ndarray, video: str | None = None, k: int = 5) -> list[dict[str, Any]]:
        """Frame-to-frame similarity on the visual descriptor (works with no vision model)."""
        from apps.video.features import visual_vector

        return [{"video": p["video"], "segment": p["index"], "start": p["start"], "end": p["end"],
                 "score": round(s, 4), "why": ["visual"]}
                for p, s in self.store.search("visual", visual_vector(image), video, k)]

    def close(self) -> None:
        self.store.close()
