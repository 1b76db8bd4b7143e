"""The ingest pipeline: read -> probe + decode/sample + scenes -> ASR / OCR / embed -> rows for the store.

The stages are plain callables over row dicts, so the same code runs single-process (`run_local`) or as a Ray
Data pipeline (`run_ray`: a task per video for decoding, which can be killed without harming the caller, then
actor pools for the models, one row per segment so every model stage scales with segments, not videos).
A segment row is flat and Arrow-friendly: frames travel as JPEG bytes, audio as float32 PCM bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import VideoConfig

AUDIO_PAD_S = 0.4  # speech across a cut: each segment's ASR hears a little of its neighbours
Progress = Callable[[float, str], None]


def file_id(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def decode_segments(row: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Probe (bounded, own process), decode once, detect cuts, and emit one row per segment."""
    from apps.video.decode import AUDIO_SR, decode, histogram
    from apps.video.features import jpeg, visual_vector
    from apps.video.probe import probe
    from apps.video.scenes import build_segments, detect_cuts

    vc = VideoConfig.model_validate(cfg)
    path = row["path"]
    info = probe(path, vc.limits)
    d = decode(path, vc.sampling, vc.sample_fps, vc.analysis_width, audio=vc.asr_model != "none", limits=vc.limits)
    sigs = d.signatures or [(f.t, histogram(f.image)) for f in d.frames]
    cuts = detect_cuts(sigs, vc.scene_threshold, vc.min_scene_s)
    duration = max(d.duration, info.duration) if info.duration < vc.limits.max_duration_s else d.duration
    segs = build_segments(duration, cuts, vc.max_segment_s)
    meta = {"duration": round(duration, 3), "fps": d.fps, "width": d.width, "height": d.height,
            "decoded_frames": d.decoded, "sampled_frames": len(d.frames), "strategy": vc.sampling,
            "decode_s": round(d.seconds, 3), "has_audio": d.audio is not None, "segments": len(segs),
            "cuts": [{"t": c.t, "strength": c.strength} for c in cuts], "codec": info.video_codec}
    vid = row.get("video") or file_id(path)
    rows = []
    for s in segs:
        frames = [f for f in d.frames if s.start - 1e-6 <= f.t < s.end - 1e-6] or \
            [min(d.frames, key=lambda f: abs(f.t - s.start))]
        a0, a1 = max(0.0, s.start - AUDIO_PAD_S), s.end + AUDIO_PAD_S
        audio = d.audio[int(a0 * AUDIO_SR):int(a1 * AUDIO_SR)] if d.audio is not None else np.zeros(0, np.float32)
        rows.append({
            "video": vid, "name": row.get("name") or Path(path).name, "path": path, "index": s.index,
            "start": s.start, "end": s.end, "cut_strength": s.cut.strength if s.cut else 0.0,
            "frames": [jpeg(f.image) for f in frames], "frame_ts": [round(f.t, 3) for f in frames],
            "visual": [visual_vector(f.image).tolist() for f in frames],
            "audio": audio.astype(np.float32).tobytes(), "audio_offset": a0, "meta": json.dumps(meta),
        })
    return rows


class ASRStage:
    """Whisper words for the segment's audio, kept when their midpoint falls inside the segment."""

    def __init__(self, cfg: dict[str, Any], threads: int = 2, warm: bool = False):
        self.vc = VideoConfig.model_validate(cfg)
        self.threads = threads
        if warm and self.vc.asr_model != "none":  # see build_dataset: load while the actor waits for its first row
            from apps.video import asr

            asr.model(self.vc.asr_model, threads)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from apps.video import asr

        words: list[dict[str, Any]] = []
        audio = np.frombuffer(row["audio"], dtype=np.float32)
        if self.vc.asr_model != "none" and len(audio):
            for w in asr.transcribe(audio, self.vc.asr_model, self.vc.asr_language, self.threads):
                s, e = w.start + row["audio_offset"], w.end + row["audio_offset"]
                if row["start"] <= (s + e) / 2 < row["end"]:
                    words.append({"start": round(s, 3), "end": round(e, 3), "text": w.text, "prob": w.prob})
        rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
        return {**row, "words": json.dumps(words), "transcript": " ".join(w["text"] for w in words),
                "loudness": round(rms, 5), "audio": b""}  # audio is not needed downstream


class OCRStage:
    """Text on screen in up to N frames per segment (frames that look like the previous one are skipped)."""

    def __init__(self, cfg: dict[str, Any], warm: bool = False):
        self.vc = VideoConfig.model_validate(cfg)
        if warm and self.vc.ocr:
            from apps.video import ocr

            ocr.engine()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from apps.video import ocr
        from apps.video.features import unjpeg

        lines: list[dict[str, Any]] = []
        if self.vc.ocr:
            frames, ts = list(row["frames"]), list(row["frame_ts"])
            n = self.vc.ocr_frames_per_segment
            picks = sorted({int(round(i * (len(frames) - 1) / max(1, n - 1))) for i in range(n)}) if frames else []
            prev = None
            seen: set[str] = set()
            for i in picks:
                img = unjpeg(frames[i])
                if prev is not None and not ocr.frame_changed(prev, img):
                    continue
                prev = img
                for text, score in ocr.read_text(img):
                    if text.lower() not in seen:
                        seen.add(text.lower())
                        lines.append({"t": ts[i], "text": text, "score": round(score, 3)})
        return {**row, "ocr": json.dumps(lines), "ocr_text": " ".join(x["text"] for x in lines)}


class CaptionStage:
    """Caption each segment's first frame with a hosted vision model (images in OpenAI messages), if configured.

    Captions are optional context: a failing caption service leaves the caption empty instead of failing ingest."""

    PROMPT = "Describe this video frame in one short sentence: the setting, people, objects and any visible text."

    def __init__(self, cfg: dict[str, Any]):

        from apps.client import ConductorClient

        self.vc = VideoConfig.model_validate(cfg)
        from deployments.secrets import read_secret

        key = read_secret(self.vc.caption_api_key_env)
        self.client = ConductorClient(self.vc.caption_base_url, api_key=key, timeout=60) \
            if self.vc.caption_model else None
        self.errors = 0

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import base64

        caption = ""
        if self.client is not None and row["frames"] and self.errors < 3:
            url = "data:image/jpeg;base64," + base64.b64encode(row["frames"][0]).decode()
            msg = [{"role": "user", "content": [{"type": "text", "text": self.PROMPT},
                                                {"type": "image_url", "image_url": {"url": url}}]}]
            try:
                caption = self.client.chat_text(msg, model=self.vc.caption_model, max_tokens=60, temperature=0)
            except Exception:  # after 3 failures stop asking for this run
                self.errors += 1
        return {**row, "caption": caption.strip()}


class EmbedStage:
    """Text vectors (transcript, OCR) with the in-process embedder; CLIP image vectors when configured."""

    def __init__(self, cfg: dict[str, Any], warm: bool = False):
        self.vc = VideoConfig.model_validate(cfg)
        if warm:
            from deployments.embedder_local import shared_embedder

            shared_embedder(self.vc.embedding_model)
            if self.vc.vision_model:
                from deployments.vision import shared_vision

                shared_vision(self.vc.vision_model)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from apps.video.features import mean_vector, unjpeg
        from deployments.embedder_local import shared_embedder

        emb = shared_embedder(self.vc.embedding_model)
        texts = [row["transcript"], row["ocr_text"], row.get("caption") or ""]
        vecs = emb.embed([t for t in texts if t.strip()]) if any(t.strip() for t in texts) else []
        it = iter(vecs)
        tv, ov, cv = [next(it).tolist() if t.strip() else None for t in texts]
        out = {**row, "transcript_vec": tv, "ocr_vec": ov, "caption_vec": cv,
               "visual_vec": mean_vector([np.asarray(v, np.float32) for v in row["visual"]]).tolist()}
        out["clip_vec"] = None
        if self.vc.vision_model:
            from deployments.vision import shared_vision

            imgs = [unjpeg(b) for b in row["frames"]]
            out["clip_vec"] = mean_vector(list(shared_vision(self.vc.vision_model).embed_images(imgs))).tolist()
        return out


def run_local(paths: list[str], cfg: dict[str, Any], progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Single process: the same stages, one segment at a time. Yields finished segment rows."""
    stages = model_stages(cfg)
    for k, path in enumerate(paths):
        rows = decode_segments({"path": path}, cfg)
        for i, row in enumerate(rows):
            if progress:
                progress((k + (i + 0.5) / len(rows)) / len(paths), f"{Path(path).name}: segment {i + 1}/{len(rows)}")
            for stage in stages:
                row = stage(row)
            yield row


def model_stages(cfg: dict[str, Any]) -> list[Callable[[dict[str, Any]], dict[str, Any]]]:
    """The per-segment stages in order, for single-process runners (CLI, the Serve decode worker)."""
    stages: list[Any] = [ASRStage(cfg), OCRStage(cfg)]
    if cfg.get("caption_model"):
        stages.append(CaptionStage(cfg))
    return stages + [EmbedStage(cfg)]


def build_dataset(paths: list[str], cfg: dict[str, Any], workers: int = 2, warm: bool = True):
    """The Ray Data pipeline (lazy): read -> decode (tasks) -> ASR -> OCR -> embed (actor pools of `workers`).

    `warm`: each model actor loads its model in its constructor, while it waits for the first decoded segment,
    instead of in its first call, when the stages before it are already holding the cores."""
    import ray
    from ray.data import ActorPoolStrategy

    threads = 1 if workers > 1 else 2
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
    # Decoding runs as plain tasks (a crash or kill loses one task, never a model actor) ...
    ds = ds.flat_map(decode_segments, fn_kwargs={"cfg": cfg}, num_cpus=1)
    # ... and one block per segment lets every actor in a pool work on the same video at once (this barrier
    # also keeps Ray Data from fusing the decode task into the first actor stage).
    ds = ds.repartition(target_num_rows_per_block=1)
    pool = ActorPoolStrategy(size=workers)
    ds = ds.map(ASRStage, fn_constructor_kwargs={"cfg": cfg, "threads": threads, "warm": warm}, compute=pool,
                num_cpus=1)
    ds = ds.map(OCRStage, fn_constructor_kwargs={"cfg": cfg, "warm": warm}, compute=pool, num_cpus=1)
    if cfg.get("caption_model"):  # network-bound: a small pool with little CPU
        ds = ds.map(CaptionStage, fn_constructor_kwargs={"cfg": cfg}, compute=pool, num_cpus=0.1)
    return ds.map(EmbedStage, fn_constructor_kwargs={"cfg": cfg, "warm": warm}, compute=ActorPoolStrategy(size=1),
                  num_cpus=1)


def run_ray(paths: list[str], cfg: dict[str, Any], workers: int = 2, address: str | None = None,
            progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress is None
    start, n = time.time(), 0
    for row in build_dataset(paths, cfg, workers).iter_rows():
        n += 1
        if progress:
            progress(min(0.99, n / max(n + 1, len(paths) * 4)), f"{n} segments done ({time.time() - start:.0f} s)")
        yield row
