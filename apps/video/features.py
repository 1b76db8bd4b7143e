"""Per-segment vectors: a visual descriptor for frame-to-frame similarity (no model needed), the text embedding
of transcript and OCR (in-process MiniLM, as the foundation's embedding deployment serves), and, when a
CLIP/SigLIP model is configured, image embeddings that make text-to-frame search possible."""

from __future__ import annotations

import numpy as np

from apps.video.decode import histogram

VISUAL_DIM = 8 * 8 * 3 + 48


def visual_vector(image: np.ndarray) -> np.ndarray:
    """8×8 colour layout + colour histogram, L2-normalised: near-duplicate frames score ~1 (cosine)."""
    h, w = image.shape[:2]
    ys = (np.arange(8) * h // 8 + h // 16).clip(0, h - 1)
    xs = (np.arange(8) * w // 8 + w // 16).clip(0, w - 1)
    layout = image[np.ix_(ys, xs)].astype(np.float32).reshape(-1) / 255.0
    v = np.concatenate([layout - layout.mean(), histogram(image) * 4.0])
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def mean_vector(vs: list[np.ndarray]) -> np.ndarray | None:
    if not vs:
        return None
    m = np.mean(np.stack(vs), axis=0)
    n = float(np.linalg.norm(m))
    return (m / n if n > 0 else m).astype(np.float32)


def jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def unjpeg(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
