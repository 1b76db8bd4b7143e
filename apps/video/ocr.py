"""On-screen text: the shared RapidOCR engine (deployments/ocr.py) plus the check that skips unchanged frames."""

from __future__ import annotations

import numpy as np

from deployments.ocr import engine, read_text

__all__ = ["engine", "read_text", "frame_changed"]


def frame_changed(a: np.ndarray, b: np.ndarray, tol: float = 6.0) -> bool:
    """Cheap test to skip OCR on a frame that looks like the one just read (mean absolute pixel difference)."""
    if a.shape != b.shape:
        return True
    return float(np.abs(a[::4, ::4].astype(np.int16) - b[::4, ::4].astype(np.int16)).mean()) > tol
