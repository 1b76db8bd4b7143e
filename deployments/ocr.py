"""Text in images with RapidOCR (PP-OCRv4 ONNX models shipped inside the rapidocr-onnxruntime wheel): video frames
and scanned PDF pages use the same engine, loaded once per process."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

_ENGINE = None
_LOCK = threading.RLock()


def engine():
    """One RapidOCR per process (loading its three ONNX sessions takes ~1 s)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            import logging

            from rapidocr_onnxruntime import RapidOCR

            _ENGINE = RapidOCR()
            logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        return _ENGINE


def read_text(image: np.ndarray, min_score: float = 0.6) -> list[tuple[str, float]]:
    """Lines of text in an RGB image, top to bottom then left to right, each with its recognition score."""
    bgr = np.ascontiguousarray(image[:, :, ::-1])  # RapidOCR follows OpenCV's channel order
    with _LOCK:  # onnxruntime sessions are thread-safe, but the pipeline around them is not
        result, _ = engine()(bgr)
    lines = []
    for box, text, score in result or []:
        if text.strip() and float(score) >= min_score:
            lines.append((min(p[1] for p in box), min(p[0] for p in box), text.strip(), float(score)))
    return [(text, score) for _, _, text, score in sorted(lines)]


def read_page(image: np.ndarray, min_score: float = 0.5) -> list[str]:
    """Lines of a scanned page in reading order, with the spaces between words put back.

    PP-OCRv4's recogniser often drops the space between English words ("Toresetthedevice"); its per-character
    boxes still show the gaps, so a gap wider than 0.3 of the line's median character width is a space."""
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    with _LOCK:
        result, _ = engine()(bgr, return_word_box=True)
    lines = []
    for item in result or []:
        box, text, score = item[0], item[1], float(item[2])
        if not text.strip() or score < min_score:
            continue
        if len(item) > 4 and len(item[3]) == len(item[4]):
            text = _respace(item[3], item[4])
        lines.append((min(p[1] for p in box), min(p[0] for p in box), text.strip()))
    return [text for _, _, text in sorted(lines)]


def _respace(boxes: list[Any], chars: list[str]) -> str:
    spans = [(min(p[0] for p in b), max(p[0] for p in b)) for b in boxes]
    widths = sorted(x1 - x0 for (x0, x1), c in zip(spans, chars) if c.strip())
    if not widths:
        return "".join(chars)
    gap_min = max(2.5, widths[len(widths) // 2] * 0.3)
    out = chars[0]
    for (prev, cur), c, last in zip(zip(spans, spans[1:]), chars[1:], chars):
        if c.strip() and last.strip() and cur[0] - prev[1] > gap_min:
            out += " "
        out += c
    return out
