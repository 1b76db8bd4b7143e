"""Qdrant storage for video segments: one point per segment, one named vector per modality.

Kept behind this small class so it can move onto the shared `deployments.vectorstore` wrapper later. Modes:
a Qdrant server (`video.qdrant_url`), the embedded local store persisted under `video.data_dir` (default), or
`:memory:` (tests). A point carries only the vectors it has (no OCR text -> no `ocr` vector).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import numpy as np

TEXT_VECTORS = ("transcript", "ocr", "caption")
NAMESPACE = uuid.UUID("6f1c2d1e-3a55-4f0b-9a53-1c0e2b7d9e10")


class VideoStore:
    def __init__(self, location: str, collection: str, text_dim: int, visual_dim: int, clip_dim: int | None = None,
                 url: str | None = None, api_key: str | None = None):
        from qdrant_client import QdrantClient

        if url:
            self.client = QdrantClient(url=url, api_key=api_key)
        elif location == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            os.makedirs(location, exist_ok=True)
            self.client = QdrantClient(path=location)
        self.collection = collection
        self.remote = bool(url)
        self.dims = {**{n: text_dim for n in TEXT_VECTORS}, "visual": visual_dim}
        if clip_dim:
            self.dims["clip"] = clip_dim
        self._lock = threading.Lock()  # the embedded store is not safe for concurrent writers
        self._ensure()

    def _ensure(self) -> None:
        from qdrant_client import models as m

        if self.client.collection_exists(self.collection):
            info = self.client.get_collection(self.collection)
            have = info.config.params.vectors or {}
            self.dims = {k: v for k, v in self.dims.items() if k in have}  # e.g. clip added to an old store
            return
        self.client.create_collection(self.collection, vectors_config={
            name: m.VectorParams(size=dim, distance=m.Distance.COSINE) for name, dim in self.dims.items()})
        if self.remote:  # the embedded store has no payload indexes (it filters by scanning)
            self.client.create_payload_index(self.collection, "video", m.PayloadSchemaType.KEYWORD)

    @property
    def has_clip(self) -> bool:
        return "clip" in self.dims

    def upsert(self, rows: list[dict[str, Any]]) -> int:
        """rows: {"payload": {... "video", "index" ...}, "vectors": {name: array}}; missing vectors are left out."""
        from qdrant_client import models as m

        points = []
        for r in rows:
            p = r["payload"]
            vecs = {k: np.asarray(v, dtype=np.float32).tolist() for k, v in r["vectors"].items()
                    if v is not None and k in self.dims}
            pid = str(uuid.uuid5(NAMESPACE, f"{p['video']}:{p['index']}"))
            points.append(m.PointStruct(id=pid, vector=vecs, payload=p))
        with self._lock:
            if points:
                self.client.upsert(self.collection, points=points, wait=True)
        return len(points)

    def _filter(self, video: str | None):
        from qdrant_client import models as m

        if not video:
            return None
        return m.Filter(must=[m.FieldCondition(key="video", match=m.MatchValue(value=video))])

    def search(self, using: str, vector: np.ndarray, video: str | None = None, limit: int = 10
               ) -> list[tuple[dict[str, Any], float]]:
        if using not in self.dims:
            return []
        with self._lock:
            res = self.client.query_points(self.collection, query=np.asarray(vector, np.float32).tolist(),
                                           using=using, query_filter=self._filter(video), limit=limit,
                                           with_payload=True)
        return [(p.payload or {}, float(p.score)) for p in res.points]

    def segments(self, video: str) -> list[dict[str, Any]]:
        out, offset = [], None
        with self._lock:
            while True:
                pts, offset = self.client.scroll(self.collection, scroll_filter=self._filter(video), limit=256,
                                                 offset=offset, with_payload=True)
                out += [p.payload for p in pts]
                if offset is None:
                    break
        return sorted(out, key=lambda p: p.get("index", 0))

    def delete_video(self, video: str) -> None:
        from qdrant_client import models as m

        with self._lock:
            self.client.delete(self.collection, points_selector=m.FilterSelector(filter=self._filter(video)))

    def count(self) -> int:
        with self._lock:
            return self.client.count(self.collection).count

    def close(self) -> None:
        self.client.close()
