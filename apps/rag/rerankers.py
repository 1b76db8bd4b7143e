"""Rerank models: `rag.reranker` names one, and rerank scores the fused candidates' passages with it.

- a `.gguf` file: a llama.cpp reranker (bge-reranker, jina-reranker, Qwen3-Reranker GGUFs) run in this process by
  the `xllamacpp` wheel's rerank endpoint, the same llama.cpp build that serves the chat models;
- a folder: a sentence-transformers CrossEncoder.

None ships in a package here (shared/MODELS.md), so the offline default stays the built-in rescoring in
`retrieval.Reranker`. A model that cannot be loaded is the server's fault, not the caller's: `RerankerUnavailable`
answers 503 with the reason, and searches without rerank go on working.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

PAIRS_PER_CALL = 4  # pairs scored between two looks at the caller: a stop waits for at most this many
RERANK_CONTEXT = 2048  # tokens llama.cpp gives one pair: the rerank template, the question and the passage
# A reranker reads a pair in one pass and refuses one larger than its context, so a pair must fit whatever the
# script. No llama.cpp tokenizer makes more tokens than the text has UTF-8 bytes: question and passage are cut by
# bytes. A passage of the default ~800 characters of English passes whole; 2,000 characters of Chinese did not fit
# when they were cut by characters, and every rerank over that document failed.
MAX_QUESTION_BYTES = 512
MAX_PASSAGE_BYTES = RERANK_CONTEXT - MAX_QUESTION_BYTES - 256  # 256: a rerank template's own tokens (Qwen3's ~100)


class RerankerUnavailable(RuntimeError):
    """The configured reranker could not be loaded or failed: the reason, without the caller's text."""


class RerankCancelled(Exception):
    """The request that asked for the rerank was cancelled (its client left); the scoring stopped."""


def _groups(n: int, stop: threading.Event | None) -> Iterator[slice]:
    """Slices of PAIRS_PER_CALL pairs, checking `stop` before each: a model that takes seconds a pair on a CPU
    stops within one group of a caller leaving, instead of scoring on for nobody."""
    for i in range(0, n, PAIRS_PER_CALL):
        if stop is not None and stop.is_set():
            raise RerankCancelled
        yield slice(i, min(i + PAIRS_PER_CALL, n))


def _cut(text: str, max_bytes: int) -> str:
    """The longest start of `text` within `max_bytes` of UTF-8 (a character cut in half is dropped)."""
    return text.encode()[:max_bytes].decode(errors="ignore")


class RerankModel(Protocol):
    def score(self, question: str, passages: list[str], stop: threading.Event | None = None) -> list[float]:
        """One relevance score per passage, higher = more relevant; RerankCancelled once `stop` is set."""


class CrossEncoderModel:
    def __init__(self, path: str):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(path, device="cpu")

    def score(self, question: str, passages: list[str], stop: threading.Event | None = None) -> list[float]:
        pairs = [(_cut(question, MAX_QUESTION_BYTES), _cut(p, MAX_PASSAGE_BYTES)) for p in passages]
        return [float(s) for part in _groups(len(pairs), stop) for s in self.model.predict(pairs[part])]


class LlamaCppRerankModel:
    """A GGUF reranker in llama.cpp's rerank mode (rank pooling): one server, one slot; concurrent searches queue
    inside llama.cpp rather than each loading the model."""

    def __init__(self, path: str, threads: int):
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RerankerUnavailable("a .gguf reranker needs `pip install xllamacpp`") from e
        if not has_rank_head(path):
            raise RerankerUnavailable(f"llama.cpp could not load {Path(path).name} as a reranker: it has no "
                                      "classification head (cls.output), so it is not a reranker GGUF")
        p = xllamacpp.CommonParams()
        p.model.path = path
        p.embedding = True
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK
        p.n_parallel = 1
        p.n_ctx = p.n_batch = p.n_ubatch = RERANK_CONTEXT
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
        try:
            self.server = xllamacpp.Server(p)
        except RuntimeError as e:  # llama.cpp logs why; the usual cause is a GGUF without a rank head
            raise RerankerUnavailable(f"llama.cpp could not load {Path(path).name} as a reranker (a reranker GGUF "
                                      "has a classification head; the server log has llama.cpp's reason)") from e

    def score(self, question: str, passages: list[str], stop: threading.Event | None = None) -> list[float]:
        scores = [float("-inf")] * len(passages)
        for part in _groups(len(passages), stop):
            for i, score in self._score(question, passages[part]):
                scores[part.start + i] = score
        return scores

    def _score(self, question: str, passages: list[str]) -> list[tuple[int, float]]:
        """(index in `passages`, score) pairs: llama.cpp answers best first."""
        try:
            out = self.server.handle_rerank({"query": _cut(question, MAX_QUESTION_BYTES), "top_n": len(passages),
                                             "documents": [_cut(p, MAX_PASSAGE_BYTES) for p in passages]})
        except ValueError as e:
            raise RerankerUnavailable(f"llama.cpp refused the rerank: {str(e)[:200]}") from None
        if not isinstance(out, dict) or "results" not in out:
            err = out.get("error") if isinstance(out, dict) else out
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise RerankerUnavailable(f"llama.cpp's rerank failed: {str(msg)[:200]}")
        return [(int(r["index"]), float(r["relevance_score"])) for r in out["results"]]


def has_rank_head(path: str) -> bool:
    """Whether a GGUF carries a classification head. llama.cpp loads a chat model in rank mode too and scores with
    whatever its pooled state holds: numbers, but not relevance."""
    import gguf

    try:
        return any(t.name in ("cls.output.weight", "cls.weight") for t in gguf.GGUFReader(path).tensors)
    except (ValueError, OSError) as e:  # not a GGUF, or truncated
        raise RerankerUnavailable(f"rag.reranker: {Path(path).name} is not a readable GGUF file") from e


_loaded: dict[tuple[str, int], RerankModel] = {}
_loading = threading.Lock()


def load_rerank_model(spec: str, threads: int = 2) -> RerankModel:
    """The model `rag.reranker` names, loaded once per process (a RagService per request must not reload it)."""
    path = Path(spec).expanduser()
    key = (str(path), threads)
    with _loading:
        if key in _loaded:
            return _loaded[key]
        if not path.exists():
            raise RerankerUnavailable(f"rag.reranker: {path} does not exist on this server")
        try:
            model: RerankModel = (LlamaCppRerankModel(str(path), threads) if path.suffix.lower() == ".gguf"
                                  else CrossEncoderModel(str(path)))
        except RerankerUnavailable:
            raise
        except Exception as e:  # a folder that is not a CrossEncoder, a corrupt file
            raise RerankerUnavailable(f"rag.reranker: {path.name} could not be loaded "
                                      f"({type(e).__name__})") from e
        _loaded[key] = model
        return model

