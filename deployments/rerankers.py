"""Rerank models: score (question, passage) pairs. `rag.reranker` and the gateway's `reranker` name one:

- a `.gguf` file: a llama.cpp reranker (bge-reranker, jina-reranker, Qwen3-Reranker GGUFs) run in this process by
  the `xllamacpp` wheel's rerank endpoint, the same llama.cpp build that serves the chat models;
- a folder: a sentence-transformers CrossEncoder;
- an `http(s)://` URL: a rerank service speaking the Cohere/Jina protocol (`POST {model, query, documents,
  top_n}` -> `{results: [{index, relevance_score}]}`), which llama.cpp's server, vLLM, Jina, Cohere and
  Conductor's own `/v1/rerank` answer.

None ships in a package here (shared/MODELS.md), so RAG's offline default stays the built-in rescoring in
`apps/rag/retrieval.Reranker`. A model that cannot be loaded or a service that fails is the server's fault, not the
caller's: `RerankerUnavailable` answers 503 with the reason, and searches without rerank go on working.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

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

    def score_counted(self, question: str, passages: list[str], stop: threading.Event | None = None
                      ) -> tuple[list[float], int]:
        """`score`, and the tokens the model read (0 where it does not say: a rerank API that reports none)."""


class CrossEncoderModel:
    def __init__(self, path: str):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(path, device="cpu")

    def score(self, question: str, passages: list[str], stop: threading.Event | None = None) -> list[float]:
        return self.score_counted(question, passages, stop)[0]

    def score_counted(self, question: str, passages: list[str], stop: threading.Event | None = None
                      ) -> tuple[list[float], int]:
        pairs = [(_cut(question, MAX_QUESTION_BYTES), _cut(p, MAX_PASSAGE_BYTES)) for p in passages]
        scores, tokens = [], 0
        for part in _groups(len(pairs), stop):
            scores += [float(s) for s in self.model.predict(pairs[part])]
            # The model's own tokenizer, truncated as predict truncates: what the model read.
            q, p = zip(*pairs[part])
            tokens += sum(map(len, self.model.tokenizer(list(q), list(p), truncation=True)["input_ids"]))
        return scores, tokens


class _ScoredByGroup:
    """`score` for a model that answers a group of pairs as (index in the group, score) pairs, in any order."""

    def score(self, question: str, passages: list[str], stop: threading.Event | None = None) -> list[float]:
        return self.score_counted(question, passages, stop)[0]

    def score_counted(self, question: str, passages: list[str], stop: threading.Event | None = None
                      ) -> tuple[list[float], int]:
        scores, tokens = [math.nan] * len(passages), 0
        for part in _groups(len(passages), stop):
            pairs, read = self._score(question, passages[part])
            tokens += read
            for i, score in pairs:
                scores[part.start + i] = score
        unusable = sum(not math.isfinite(s) for s in scores)  # a passage left out, or a NaN: no order can be made
        if unusable:
            raise RerankerUnavailable(f"the reranker gave no usable score for {unusable} of the {len(passages)} "
                                      "passages")
        return scores, tokens

    def _score(self, question: str, passages: list[str]) -> tuple[list[tuple[int, float]], int]:
        """((index in `passages`, score) pairs in any order, the tokens read)."""
        raise NotImplementedError


class LlamaCppRerankModel(_ScoredByGroup):
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

    def _score(self, question: str, passages: list[str]) -> tuple[list[tuple[int, float]], int]:
        """llama.cpp answers best first, with the tokens it read as `usage`."""
        try:
            out = self.server.handle_rerank({"query": _cut(question, MAX_QUESTION_BYTES), "top_n": len(passages),
                                             "documents": [_cut(p, MAX_PASSAGE_BYTES) for p in passages]})
        except ValueError as e:
            raise RerankerUnavailable(f"llama.cpp refused the rerank: {str(e)[:200]}") from None
        if not isinstance(out, dict) or "results" not in out:
            err = out.get("error") if isinstance(out, dict) else out
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise RerankerUnavailable(f"llama.cpp's rerank failed: {str(msg)[:200]}")
        return [(int(r["index"]), float(r["relevance_score"])) for r in out["results"]], _tokens(out)


def has_rank_head(path: str) -> bool:
    """Whether a GGUF carries a classification head. llama.cpp loads a chat model in rank mode too and scores with
    whatever its pooled state holds: numbers, but not relevance."""
    import gguf

    try:
        return any(t.name in ("cls.output.weight", "cls.weight") for t in gguf.GGUFReader(path).tensors)
    except (ValueError, OSError) as e:  # not a GGUF, or truncated
        raise RerankerUnavailable(f"reranker: {Path(path).name} is not a readable GGUF file") from e


class HttpRerankModel(_ScoredByGroup):
    """A rerank service over HTTP. Pairs go PAIRS_PER_CALL to a call, as in-process, so a caller who leaves stops
    the scoring within one call; a reranker's score is per pair, so splitting a list does not change the scores."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout_s: float = 60.0,
                 http: Any = None):
        """`http`: an OpenAIHTTP client for the URL's host to send through instead of a plain one (the gateway's
        own client, which says which user a RAG search is for); `timeout_s` holds for each call either way."""
        from deployments.openai_http import OpenAIHTTP

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RerankerUnavailable("a rerank URL must be http(s)://host[:port]/path")
        port = f":{parts.port}" if parts.port else ""
        # Host and port only: a user:password in the URL must not reach an error message.
        self.where, self.model = f"{parts.scheme}://{parts.hostname}{port}", model
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._secret, self._timeout_s = api_key or "", timeout_s
        self._http = http if http is not None else OpenAIHTTP(self.where, api_key, timeout_s)

    def _score(self, question: str, passages: list[str]) -> tuple[list[tuple[int, float]], int]:
        import httpx

        from deployments.engines.base import redact
        from deployments.openai_http import APIStatusError

        body: dict[str, Any] = {"query": _cut(question, MAX_QUESTION_BYTES), "top_n": len(passages),
                                "documents": [_cut(p, MAX_PASSAGE_BYTES) for p in passages]}
        if self.model:
            body["model"] = self.model
        try:
            r = self._http.response("POST", self.path, json=body, timeout=self._timeout_s)
        except httpx.HTTPError as e:
            raise RerankerUnavailable(f"the reranker at {self.where} did not answer ({type(e).__name__})") from None
        except APIStatusError as e:  # redacted before it is cut, so no part of a key survives at the cut
            raise RerankerUnavailable(f"the reranker at {self.where} answered {e.status}: "
                                      f"{redact(e.message, (self._secret,))[:200]}") from None
        return self._results(r, len(passages))

    def _results(self, r: Any, n: int) -> tuple[list[tuple[int, float]], int]:
        """(index, score) from Cohere/Jina's `{results: [{index, relevance_score}]}` or TEI's `[{index, score}]`,
        and the tokens it says it read (Jina's, vLLM's and llama.cpp's `usage`; 0 from Cohere and TEI); anything
        else, or an index out of range, is the service's fault."""
        try:
            data = r.json()
            rows = data["results"] if isinstance(data, dict) else data
            out = [(int(row["index"]), float(row.get("relevance_score", row.get("score")))) for row in rows]
        except (ValueError, KeyError, TypeError):
            raise RerankerUnavailable(f"the reranker at {self.where} answered in an unknown shape") from None
        if any(not 0 <= i < n for i, _ in out):
            raise RerankerUnavailable(f"the reranker at {self.where} answered an index outside the {n} documents")
        return out, _tokens(data)


def _tokens(answer: Any) -> int:
    """`usage.total_tokens` (or `prompt_tokens`) of a rerank answer; 0 where it has none or a nonsense one."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return 0
    value = usage.get("total_tokens", usage.get("prompt_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31 else 0


_loaded: dict[tuple[str, int], RerankModel] = {}
_loading = threading.Lock()


def load_rerank_model(spec: str, threads: int = 2) -> RerankModel:
    """The model file or folder `spec` names, loaded once per process (a RagService per request must not reload
    it). A URL is `HttpRerankModel`, made by its user with its key and model name."""
    path = Path(spec).expanduser()
    key = (str(path), threads)
    with _loading:
        if key in _loaded:
            return _loaded[key]
        if not path.exists():
            raise RerankerUnavailable(f"reranker: {path} does not exist on this server")
        try:
            model: RerankModel = (LlamaCppRerankModel(str(path), threads) if path.suffix.lower() == ".gguf"
                                  else CrossEncoderModel(str(path)))
        except RerankerUnavailable:
            raise
        except Exception as e:  # a folder that is not a CrossEncoder, a corrupt file
            raise RerankerUnavailable(f"reranker: {path.name} could not be loaded "
                                      f"({type(e).__name__})") from e
        _loaded[key] = model
        return model


def open_rerank_model(spec: str, remote_model: str | None = None, api_key: str | None = None, threads: int = 2,
                      timeout_s: float = 60.0) -> RerankModel:
    """What a config's reranker names: an http(s) URL is a rerank service (`remote_model` and `api_key` are sent
    to it); anything else a file or folder loaded in this process."""
    if spec.startswith(("http://", "https://")):
        return HttpRerankModel(spec, remote_model, api_key, timeout_s)
    return load_rerank_model(spec, threads)
