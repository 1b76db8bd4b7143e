"""On-screen text with RapidOCR (PP-OCRv4 ONNX models shipped inside the rapidocr-onnxruntime wheel)."""

from __future__ import annotations

import threading

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
    """Lines of text in an RGB frame, top to bottom, each with its recognition score."""
    bgr = np.ascontiguousarray(image[:, :, ::-1])  # RapidOCR follows OpenCV's channel order
    with _LOCK:  # onnxruntime sessions are thread-safe, but the pipeline around them is not
        result, _ = engine()(bgr)
    lines = []
    for box, text, score in result or []:
        if text.strip() and float(score) >= min_score:
            lines.append((min(p[1] for p in box), min(p[0] for p in box), text.strip(), float(score)))
    return [(text, score) for _, _, text, score in sorted(lines)]


def frame_changed(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    """Cheap test to skip OCR on a frame that looks like the one just read (mean absolute pixel difference)."""
    if a.shape != b.shape:
        return True
    return float(np.abs(a[::4, ::4].astype(np.int16) - b[::4, ::4].astype(np.int16)).mean()) > tol
