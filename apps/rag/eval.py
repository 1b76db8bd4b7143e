"""Evaluation harness: retrieval metrics per retrieval mode on a question set with gold documents, answer
faithfulness, and a per-collection history (re-run automatically after each ingestion when a set is attached).

Questions file: JSON list or JSON lines of {"question": str, "gold": [path, ...]} (paths relative to the file are
resolved against its folder); "gold_source" (one path) is accepted too. Metrics are document-level: hits are
de-duplicated by source in rank order, then hit@k, recall@k, MRR and nDCG@k (binary relevance).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from apps.rag.retrieval import SearchParams, search
from cluster.config import expand_path

MODES = {"dense": ("dense", False), "sparse": ("sparse", False), "hybrid": ("hybrid", False),
         "hybrid+rerank": ("hybrid", True)}
_WORD = re.compile(r"[A-Za-z0-9_]{3,}")


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


def doc_ranking(hits: list[Any]) -> list[str]:
    seen: list[str] = []
    for h in hits:
        if h.source not in seen:
            seen.append(h.source)
    return seen


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
        # fetch more chunks than k so k distinct documents remain after de-duplication
        params = SearchParams(k=k * 4, mode=kind, rerank=rerank)
        sums = {"hit": 0.0, "recall": 0.0, "mrr": 0.0, "ndcg": 0.0}
        t0 = time.perf_counter()
        for q, v in zip(questions, qvecs):
            hits = search(service.store, collection, q["question"], v, service.sparse, params, service.cfg,
                          service.reranker if rerank else None)
            for key, val in score_ranking(doc_ranking(hits), set(q["gold"]), k).items():
                sums[key] += val
        n = len(questions)
        rows.append({"mode": mode, "k": k, "n": n, f"hit@{k}": sums["hit"] / n, f"recall@{k}": sums["recall"] / n,
                     "mrr": sums["mrr"] / n, f"ndcg@{k}": sums["ndcg"] / n,
                     "ms_per_query": 1000 * (time.perf_counter() - t0) / n})
    return rows


def lexical_faithfulness(answer: str, passages: list[str]) -> float:
    """Share of the answer's content words that appear in the cited passages (1.0 = fully grounded)."""
    aw = {w.lower() for w in _WORD.findall(answer)}
    if not aw:
        return 0.0
    pw = {w.lower() for p in passages for w in _WORD.findall(p)}
    return len(aw & pw) / len(aw)


def judge_faithfulness(client: Any, model: str, answer: str, passages: list[str]) -> float:
    """LLM judge: 1.0 if the model says the passages support the answer, else 0.0."""
    prompt = ("Passages:\n" + "\n\n".join(passages) + f"\n\nAnswer: {answer}\n\nIs every claim in the answer "
              "supported by the passages? Reply with exactly one word: yes or no.")
    reply = client.chat_text([{"role": "user", "content": prompt}], model=model, temperature=0.0, max_tokens=3)
    return 1.0 if reply.strip().lower().startswith("yes") else 0.0


def faithfulness(service: Any, collection: str, questions: list[dict[str, Any]], limit: int = 10) -> dict[str, Any]:
    scores, method = [], "llm-judge" if service.cfg.judge_model else "lexical-overlap"
    for q in questions[:limit]:
        ans = service.ask(collection, q["question"])
        passages = [s.text for s in ans.sources if s.cited] or [s.text for s in ans.sources[:1]]
        if service.cfg.judge_model:
            scores.append(judge_faithfulness(service.client, service.cfg.judge_model, ans.answer, passages))
        else:
            scores.append(lexical_faithfulness(ans.answer, passages))
    return {"method": method, "n": len(scores), "faithfulness": sum(scores) / len(scores) if scores else 0.0}


def history_path(service: Any, collection: str) -> Path:
    d = expand_path(service.cfg.data_dir) / "eval"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{collection}.jsonl"


def run_and_record(service: Any, collection: str, questions_file: str, k: int = 5,
                   modes: list[str] | None = None) -> dict[str, Any]:
    rows = evaluate(service, collection, load_questions(questions_file), k, modes)
    meta = service.store.get_meta(collection)
    entry = {"when": time.time(), "collection": collection, "questions": str(questions_file),
             "chunking": meta.get("chunking"), "chunk_size": meta.get("chunk_size"), "chunks": meta.get("chunks"),
             "rows": rows}
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
