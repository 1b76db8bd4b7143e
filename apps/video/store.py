"""Qdrant storage for video segments: one point per segment, one named vector per modality.

The Qdrant calls are the shared wrapper's (deployments/vectorstore.py, as for RAG); this class keeps only what is
video's: modalities, point ids, one lock. Modes: a Qdrant server (`video.qdrant_url`), the embedded local store
under `video.data_dir` (default), or `:memory:` (tests). A point carries only the vectors it has.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np

TEXT_VECTORS = ("transcript", "ocr", "caption")
NAMESPACE = uuid.UUID("6f1c2d1e-3a55-4f0b-9a53-1c0e2b7d9e10")


class VideoStore:
    """Video segments on the shared Qdrant wrapper (deployments/vectorstore.ClientStore)."""

    def __init__(self, location: str, collection: str, text_dim: int, visual_dim: int, clip_dim: int | None = None,
                 url: str | None = None, api_key: str | None = None):
        from deployments.vectorstore import ClientStore

        self.store = ClientStore(url=url, api_key=api_key, path=None if url else location)
        self.collection = collection
        dims = {**{n: text_dim for n in TEXT_VECTORS}, "visual": visual_dim}
        if clip_dim:
            dims["clip"] = clip_dim
        self._lock = threading.Lock()  # the embedded store is not safe for concurrent writers
        # An old store keeps the vectors it was made with (e.g. no clip vector yet).
        self.dims = self.store.ensure_named(collection, dims, keyword_index=("video",))

    @property
    def has_clip(self) -> bool:
        return "clip" in self.dims

    def upsert(self, rows: list[dict[str, Any]]) -> int:
        """rows: {"payload": {... "video", "index" ...}, "vectors": {name: array}}; missing vectors are left out."""
        points = []
        for r in rows:
            p = r["payload"]
            vecs = {k: np.asarray(v, dtype=np.float32).tolist() for k, v in r["vectors"].items()
                    if v is not None and k in self.dims}
            points.append((str(uuid.uuid5(NAMESPACE, f"{p['video']}:{p['index']}")), vecs, p))
        with self._lock:
            self.store.upsert_named(self.collection, points)
        return len(points)

    def search(self, using: str, vector: np.ndarray, video: str | None = None, limit: int = 10
               ) -> list[tuple[dict[str, Any], float]]:
        if using not in self.dims:
            return []
        with self._lock:
            hits = self.store.query_named(self.collection, using, np.asarray(vector, np.float32).tolist(),
                                          {"video": video} if video else None, limit)
        return [(h.payload, h.score) for h in hits]

    def segments(self, video: str) -> list[dict[str, Any]]:
        with self._lock:
            out = self.store.payloads_where(self.collection, {"video": video} if video else None)
        return sorted(out, key=lambda p: p.get("index", 0))

    def delete_video(self, video: str) -> None:
        with self._lock:
            self.store.delete_where(self.collection, "video", [video])

    def count(self) -> int:
        with self._lock:
            return self.store.count(self.collection)

    def close(self) -> None:
        self.store.close()
