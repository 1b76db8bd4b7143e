"""Semantic cache: an answer reused for a later prompt that means the same (kept whole; a stream replays it).

The prompt's text is embedded by the Embedder deployment; its nearest cached prompt in Qdrant (in memory per
replica, or a configured server shared by replicas), within the same scope (the user, or `shared`), model and
parameters (everything but the messages must be equal), newer than `ttl_s` and at least `threshold` cosine
similar, gives its answer. Off for temperature > 0 and for tools unless configured; never for n > 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any

COLLECTION = "conductor_semantic_cache"


def prompt_text(req: dict[str, Any]) -> str:
    """What is compared: each message as `role: text` (a prompt for completions)."""
    if "prompt" in req:
        return str(req["prompt"])
    lines = []
    for m in req.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role')}: {content or ''}")
    return "\n".join(lines)


def params_key(endpoint: str, model: str, req: dict[str, Any]) -> str:
    """Everything that must match exactly: the endpoint, the model and every parameter but the prompt."""
    rest = {k: v for k, v in req.items() if k not in ("messages", "prompt", "stream", "stream_options", "user")}
    return hashlib.sha256(json.dumps([endpoint, model, rest], sort_keys=True, default=str).encode()).hexdigest()


class SemanticCache:
    def __init__(self, config: Any, embedder: Any):
        self.cfg, self.embedder = config, embedder
        self._client: Any = None
        self._dim: int | None = None
        self._lock = asyncio.Lock()
        self._stored = 0

    def eligible(self, model_id: str, req: dict[str, Any]) -> bool:
        cfg = self.cfg
        if not cfg.enabled or (cfg.models and model_id not in cfg.models):
            return False
        if int(req.get("n") or 1) != 1:
            return False
        if req.get("tools") and not cfg.allow_tools:
            return False
        temperature = req.get("temperature")
        return cfg.allow_sampling or (temperature is not None and float(temperature) == 0.0)

    def _scope(self, user: str) -> str:
        return "shared" if self.cfg.scope == "shared" else f"user:{user}"

    async def _vector(self, req: dict[str, Any]) -> list[float]:
        result = await self.embedder.embed.remote([prompt_text(req)])
        return [float(x) for x in result.vectors[0]]

    def _ensure(self, dim: int) -> Any:
        from qdrant_client import models as m

        from deployments.vectorstore import ClientStore

        if self._client is None:  # the one Qdrant wrapper opens it; the cache speaks qdrant-client's own API
            self._client = ClientStore(url=self.cfg.qdrant_url, path=None if self.cfg.qdrant_url else ":memory:").client
        if self._dim is None:
            if not self._client.collection_exists(COLLECTION):
                self._client.create_collection(COLLECTION, vectors_config=m.VectorParams(
                    size=dim, distance=m.Distance.COSINE))
                self._client.create_payload_index(COLLECTION, "created_at", m.PayloadSchemaType.FLOAT)
            self._dim = dim
        return self._client

    def _filter(self, scope: str, params: str) -> Any:
        from qdrant_client import models as m

        return m.Filter(must=[m.FieldCondition(key="scope", match=m.MatchValue(value=scope)),
                              m.FieldCondition(key="params", match=m.MatchValue(value=params)),
                              m.FieldCondition(key="created_at", range=m.Range(gte=time.time() - self.cfg.ttl_s))])

    async def lookup(self, endpoint: str, model_id: str, req: dict[str, Any], user: str
                     ) -> tuple[list[float], tuple[str, dict[str, Any], float] | None]:
        """(the prompt's vector, for `store`; (backend, answer, similarity) of the nearest cached prompt or None)."""
        vector = await self._vector(req)
        flt = self._filter(self._scope(user), params_key(endpoint, model_id, req))

        def search() -> Any:
            client = self._ensure(len(vector))
            return client.query_points(COLLECTION, query=vector, query_filter=flt, limit=1,
                                       score_threshold=self.cfg.threshold, with_payload=True).points

        async with self._lock:  # the in-memory client is not made for concurrent threads
            points = await asyncio.to_thread(search)
        if not points:
            return vector, None
        p = points[0]
        return vector, (p.payload["backend"], json.loads(p.payload["answer"]), float(p.score))

    async def store(self, vector: list[float], endpoint: str, model_id: str, req: dict[str, Any], user: str,
                    backend: str, answer: dict[str, Any]) -> None:
        from qdrant_client import models as m

        payload = {"scope": self._scope(user), "params": params_key(endpoint, model_id, req), "backend": backend,
                   "created_at": time.time(), "answer": json.dumps(answer)}

        def put() -> None:
            client = self._ensure(len(vector))
            client.upsert(COLLECTION, [m.PointStruct(id=str(uuid.uuid4()), vector=vector, payload=payload)])
            self._stored += 1
            if self._stored % 100 == 0:  # expired entries, then the oldest past max_entries
                self._trim(client)

        async with self._lock:
            await asyncio.to_thread(put)

    def _trim(self, client: Any) -> None:
        from qdrant_client import models as m

        client.delete(COLLECTION, points_selector=m.FilterSelector(filter=m.Filter(must=[m.FieldCondition(
            key="created_at", range=m.Range(lt=time.time() - self.cfg.ttl_s))])))
        extra = client.count(COLLECTION).count - self.cfg.max_entries
        if extra > 0:
            oldest, _ = client.scroll(COLLECTION, limit=extra, with_payload=["created_at"],
                                      order_by=m.OrderBy(key="created_at"))
            client.delete(COLLECTION, points_selector=m.PointIdsList(points=[p.id for p in oldest]))
