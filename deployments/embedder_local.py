"""In-process text embedder: what the Serve embedding deployment wraps, and what CLIs and tests use directly."""

from __future__ import annotations

import threading

import numpy as np

from deployments.packaged import resolve_model_spec


class LocalEmbedder:
    """sentence-transformers model; `embed` returns L2-normalised float32 vectors, one row per input, in order."""

    def __init__(self, model: str = "packaged:minilm", device: str = "cpu"):
        from sentence_transformers import SentenceTransformer  # heavy: torch + transformers

        self.spec = model
        self.model = SentenceTransformer(resolve_model_spec(model), device=device)
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self._lock = threading.Lock()  # torch modules are not safe to call from many threads at once

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vecs.astype(np.float32, copy=False)

    def embed_counted(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, int]:
        """`embed` plus the number of tokens the model read, counted from the encode's own attention masks (one
        tokenization, not a second pass over the texts)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), 0
        import torch

        with self._lock:
            rows = self.model.encode(list(texts), batch_size=batch_size, output_value=None, convert_to_numpy=False,
                                     show_progress_bar=False)
        tokens = int(sum(int(r["attention_mask"].sum()) for r in rows))
        vecs = torch.nn.functional.normalize(torch.stack([r["sentence_embedding"] for r in rows]).float(), dim=1)
        return vecs.numpy(), tokens


_SHARED: dict[str, LocalEmbedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(model: str = "packaged:minilm") -> LocalEmbedder:
    """One embedder per model per process (loading takes seconds)."""
    with _SHARED_LOCK:
        if model not in _SHARED:
            _SHARED[model] = LocalEmbedder(model)
        return _SHARED[model]
