"""Evaluation harness: retrieval metrics per retrieval mode on a question set with gold documents, answer metrics
(faithfulness, answer relevance, context precision and recall, grounded rate), and a per-collection history
(re-run automatically after each ingestion when a set is attached).

Questions file: JSON list or JSON lines of {"question": str, "gold": [path, ...]} (paths relative to the file are
resolved against its folder); "gold_source" (one path) is accepted too. Metrics are document-level: hits are
de-duplicated by source in rank order, then hit@k, recall@k, MRR and nDCG@k (binary relevance).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from apps.rag.retrieval import SearchParams
from cluster.config import expand_path

MODES = {"dense": ("dense", False), "sparse": ("sparse", False), "hybrid": ("hybrid", False),
         "hybrid+rerank": ("hybrid", True)}


def load_questions(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"questions file not found: {path}")
    raw = p.read_text().strip()
    try:
        items = json.loads(raw) if raw.startswith("[") else [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON / JSON lines: {e}") from None
    out = []
    for i, q in enumerate(items):
        if not isinstance(q, dict) or not str(q.get("question", "")).strip():
            raise ValueError(f"{path}: item {i} has no 'question'")
        gold = q.get("gold") or ([q["gold_source"]] if q.get("gold_source") else [])
        if not gold:
            raise ValueError(f"{path}: item {i} has no 'gold' documents")
        gold = [g if os.path.isabs(g) else os.path.abspath(p.parent / g) for g in gold]
        out.append({"question": q["question"].strip(), "gold": gold, "answer": q.get("answer")})
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def score_ranking(ranked: list[str], gold: set[str], k: int) -> dict[str, float]:
    top = ranked[:k]
    found = [d for d in top if d in gold]
    first = next((i for i, d in enumerate(ranked) if d in gold), None)
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(top) if d in gold)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(gold), k)))
    return {"hit": float(bool(found)), "recall": len(found) / len(gold), "mrr": 0.0 if first is None else 1 / (first + 1),
            "ndcg": dcg / idcg if idcg else 0.0}


def evaluate(service: Any, collection: str, questions: list[dict[str, Any]], k: int = 5,
             modes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per mode: {"mode", "k", "n", "hit@k", "recall@k", "mrr", "ndcg@k", "ms_per_query"}."""
    service._check_query(collection, questions[0]["question"])
    qvecs = service.embedder.embed([q["question"] for q in questions])
    rows = []
    for mode in modes or list(MODES):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        kind, rerank = MODES[mode]
        # ranked documents (each once), as `conductor rag search --json` returns them; 4k so MRR sees past k
        params = SearchParams(k=k * 4, mode=kind, rerank=rerank)
        sums = {"hit": 0.0, "recall": 0.0, "mrr": 0.0, "ndcg": 0.0}
        t0 = time.perf_counter()
        for q, v in zip(questions, qvecs):
            docs = service.search_documents(collection, q["question"], params, qvec=v)
            for key, val in score_ranking([d.source for d in docs], set(q["gold"]), k).items():
                sums[key] += val
        n = len(questions)
        rows.append({"mode": mode, "k": k, "n": n, f"hit@{k}": sums["hit"] / n, f"recall@{k}": sums["recall"] / n,
                     "mrr": sums["mrr"] / n, f"ndcg@{k}": sums["ndcg"] / n,
                     "ms_per_query": 1000 * (time.perf_counter() - t0) / n})
    return rows


def context_precision(sources: list[str], gold: set[str]) -> float:
    """Rank-aware precision of the retrieved passages (RAGAS' definition): the mean of precision@i over the
    positions i that hold a gold document."""
    hits, total = 0, 0.0
    for i, src in enumerate(sources, 1):
        if src in gold:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def answer_metrics(service: Any, collection: str, questions: list[dict[str, Any]], limit: int = 10) -> dict[str, Any]:
    """Answers to the first `limit` questions, scored: faithfulness (share of the model's sentences that its cited
    passages support), answer relevance (question-answer cosine, or the judge), context precision and recall
    (gold documents among the passages the answer was given), and how often the answer was grounded.
    `method` says whether an LLM judge or the embedding + lexical fallback scored them."""
    import numpy as np

    from apps.rag.grounding import check, judge

    judge_model = service.cfg.judge_model
    rows = []
    for q in questions[:limit]:
        ans = service.ask(collection, q["question"])
        text = ans.model_answer or ans.answer  # the model's own words, before any extractive replacement
        g = ans.grounding  # the check `ask` already made of the model's words against what they cited
        if g is None:  # grounding off in the config: check here, the same way
            cited = [s.text for s in ans.sources if s.cited] or [s.text for s in ans.sources]
            g = judge(service.client, judge_model, text, cited) if judge_model else check(text, q["question"], cited,
                                                                                         service.embedder)
        v = np.asarray(service.embedder.embed([q["question"], text]))
        gold = set(q["gold"])
        srcs = [s.source for s in ans.sources]
        rows.append({"faithfulness": g.supported_share, "answer_relevance": max(0.0, float(v[0] @ v[1])),
                     "context_precision": context_precision(srcs, gold),
                     "context_recall": len(gold & set(srcs)) / len(gold), "grounded": float(bool(ans.grounded))})
    n = len(rows)
    out: dict[str, Any] = {"method": f"llm-judge:{judge_model}" if judge_model else "embedding+lexical", "n": n}
    for key in ("faithfulness", "answer_relevance", "context_precision", "context_recall", "grounded"):
        out[key] = sum(r[key] for r in rows) / n if n else 0.0
    return out


def history_path(service: Any, collection: str) -> Path:
    d = expand_path(service.cfg.data_dir) / "eval"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{collection}.jsonl"


def run_and_record(service: Any, collection: str, questions_file: str, k: int = 5,
                   modes: list[str] | None = None, answers: int = 0) -> dict[str, Any]:
    qs = load_questions(questions_file)
    rows = evaluate(service, collection, qs, k, modes)
    meta = service.store.get_meta(collection)
    entry = {"when": time.time(), "collection": collection, "questions": str(questions_file),
             "chunking": meta.get("chunking"), "chunk_size": meta.get("chunk_size"), "chunks": meta.get("chunks"),
             "rows": rows}
    if answers:
        entry["answers"] = answer_metrics(service, collection, qs, answers)
    # One whole line per append (O_APPEND, fsynced); a torn last line after a crash is skipped by history().
    with history_path(service, collection).open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def history(service: Any, collection: str) -> list[dict[str, Any]]:
    from cluster.files import read_jsonl

    return read_jsonl(history_path(service, collection))


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no results)"
    cols = [c for c in rows[0] if c not in ("k", "n")]
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    line = lambda vals: "  ".join(str(v).ljust(widths[c]) for c, v in zip(cols, vals))  # noqa: E731
    return "\n".join([line(cols), line(["-" * widths[c] for c in cols])] + [line([_fmt(r[c]) for c in cols]) for r in rows])


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
