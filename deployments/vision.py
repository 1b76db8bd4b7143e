"""Image-text embeddings (CLIP / SigLIP through transformers) for text-to-frame visual search.

No CLIP-like model ships in any package, so this is off by default: `video.vision_model` names a local
directory or a hub id a user has. `VisionEmbedder` is the in-process model (pipeline actors, tests);
`VisionDeployment` serves it (`build_vision(config)` returns None and `vision_status` says why when disabled).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

DISABLED = ("visual text-to-frame search is off: no vision model configured (set video.vision_model to a "
            "CLIP/SigLIP directory or hub id)")


class VisionEmbedder:
    def __init__(self, spec: str, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoProcessor

        self.spec = spec
        self.model = AutoModel.from_pretrained(spec).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(spec)
        self.device = device
        self.siglip = "siglip" in type(self.model).__name__.lower()
        cfg = self.model.config
        self.dim = int(getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size)
        self._lock = threading.Lock()
        self._torch = torch

    @staticmethod
    def _tensor(out: Any):
        # transformers 5 may return a model output instead of a bare tensor
        return out if hasattr(out, "norm") else getattr(out, "pooler_output", None) if getattr(
            out, "pooler_output", None) is not None else out[0]

    def _norm(self, t) -> np.ndarray:
        t = self._tensor(t)
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return t.detach().cpu().float().numpy()

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        from PIL import Image

        pil = [Image.fromarray(np.asarray(i, dtype=np.uint8)) for i in images]
        with self._lock, self._torch.inference_mode():
            inputs = self.processor(images=pil, return_tensors="pt").to(self.device)
            return self._norm(self.model.get_image_features(**inputs))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        kw = {"padding": "max_length"} if self.siglip else {"padding": True}
        with self._lock, self._torch.inference_mode():
            inputs = self.processor(text=list(texts), return_tensors="pt", truncation=True, **kw).to(self.device)
            return self._norm(self.model.get_text_features(**inputs))


_SHARED: dict[str, VisionEmbedder] = {}
_LOCK = threading.Lock()


def shared_vision(spec: str) -> VisionEmbedder:
    with _LOCK:
        if spec not in _SHARED:
            _SHARED[spec] = VisionEmbedder(spec)
        return _SHARED[spec]


def vision_status(config: dict[str, Any] | Any) -> str:
    from cluster.config import config_from_dict

    cfg = config_from_dict(config)
    return f"vision model: {cfg.video.vision_model}" if cfg.video.vision_model else DISABLED


class VisionDeployment:
    """Serve deployment body: base64 JPEG/PNG images or texts in, normalised vectors out."""

    def __init__(self, spec: str):
        self.embedder = VisionEmbedder(spec)

    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_texts(texts).tolist()

    def embed_images(self, images_b64: list[str]) -> list[list[float]]:
        import base64
        import io

        from PIL import Image

        imgs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in images_b64]
        return self.embedder.embed_images(imgs).tolist()


def build_vision(config: dict[str, Any]):
    """A bound Serve deployment, or None (with `vision_status` saying why) when no model is configured."""
    from ray import serve

    from cluster.config import config_from_dict

    cfg = config_from_dict(config)
    if not cfg.video.vision_model:
        return None
    res = cfg.video.resources
    return serve.deployment(**res.serve_options("Vision", fixed_replicas=1))(VisionDeployment).bind(
        cfg.video.vision_model)
