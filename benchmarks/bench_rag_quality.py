"""Document-level retrieval quality of the default pipeline against two baselines, on three question sets.

- Python FAQ (python3-doc): ~170 questions, each answered by one FAQ section stored as its own file
  (apps/rag/faq.py). The set the original settings were tuned on.
- git manual (git-doc): benchmarks/sets/git_doc.jsonl, 53 questions written in a user's words (no command
  names where a user would not know them), each with the page(s) that answer it, over all 242 HTML pages.
- Python library reference (python3-doc): benchmarks/sets/python_library.jsonl, 60 questions in a user's words over
  its 317 HTML pages, written before the change it first measured and never tuned on (sets/README.md). Some
  questions have two acceptable pages (glob or pathlib), so its rows count a hit: a gold page among the top 5.

Baselines, on the same documents and questions:
- BM25 over whole pages: `bm25s` (English stopwords, Snowball stemmer), each page's title and text as one document.
- dense-only: the same MiniLM chunk vectors, a document ranked by its best chunk.

`python -m benchmarks.run --only rag_quality` records the rows (`make bench` runs it with the rest);
`python -m benchmarks.bench_rag_quality --set faq|git|pylib` prints one set's table. Quick: the FAQ set only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETS = Path(__file__).parent / "sets"


@dataclass(frozen=True)
class ManualSet:
    """A question set over a whole HTML manual that Debian installs."""
    title: str  # as the rows name it
    root: Path  # the manual's folder
    pattern: str  # its pages under root
    questions: Path
    collection: str
    note: str  # what the rows' notes say about the set; the counts are filled in
    metrics: tuple[str, ...] = ("recall@5", "mrr")

    def pages(self) -> list[str]:
        return sorted(str(p) for p in self.root.glob(self.pattern))


MANUALS = {
    "git": ManualSet("git manual", Path("/usr/share/doc/git-doc"), "**/*.html", SETS / "git_doc.jsonl", "gitdoc",
                     "{q} questions in a user's words over git-doc's {p} HTML pages (benchmarks/sets/git_doc.jsonl); "
                     "document level; BM25 pages = bm25s with stemming"),
    "pylib": ManualSet("Python library", Path("/usr/share/doc/python3.11/html/library"), "*.html",
                       SETS / "python_library.jsonl", "pylib",
                       "{q} questions in a user's words over the Python library reference's {p} HTML pages "
                       "(benchmarks/sets/python_library.jsonl), never tuned on; hit = a gold page in the top 5",
                       ("hit@5", "mrr")),
}


def bm25_pages(paths: list[str], questions: list[dict[str, Any]], k: int = 20) -> list[list[str]]:
    """Plain BM25 over whole pages: each question's ranked page paths."""
    import bm25s
    import Stemmer

    from apps.rag.parsers import ParseError, parse_bytes

    texts, kept = [], []
    for p in paths:
        try:
            doc = parse_bytes(Path(p).read_bytes(), p)
        except ParseError:
            continue
        texts.append(f"{doc.title}\n{doc.text}")
        kept.append(p)
    stem = Stemmer.Stemmer("english")
    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)
    found, _ = index.retrieve(bm25s.tokenize([q["question"] for q in questions], stopwords="en", stemmer=stem,
                                             show_progress=False), k=min(k, len(kept)), show_progress=False)
    return [[kept[i] for i in row] for row in found]


def measure(svc: Any, collection: str, questions: list[dict[str, Any]], paths: list[str],
            k: int = 5) -> dict[str, dict[str, float]]:
    """{system: {"recall@5", "hit@5", "mrr"}} for the pipeline's modes and the BM25-pages baseline."""
    from apps.rag.eval import evaluate, score_ranking

    out = {r["mode"]: {m: r[m] for m in (f"recall@{k}", f"hit@{k}", "mrr")} for r in
           evaluate(svc, collection, questions, k)}
    sums = {"recall": 0.0, "hit": 0.0, "mrr": 0.0}
    for q, ranked in zip(questions, bm25_pages(paths, questions)):
        for key, val in score_ranking(ranked, set(q["gold"]), k).items():
            if key in sums:
                sums[key] += val
    n = len(questions)
    out["bm25-pages"] = {f"recall@{k}": sums["recall"] / n, f"hit@{k}": sums["hit"] / n, "mrr": sums["mrr"] / n}
    return out


def _row(name: str, conductor: float, baseline: float, unit: str, goal: str, notes: str,
         higher: bool = True) -> dict[str, Any]:
    return {"name": name, "conductor": round(conductor, 4), "baseline": round(baseline, 4), "unit": unit,
            "higher_is_better": higher, "goal": goal, "notes": notes}


def rows(name: str, scores: dict[str, dict[str, float]], note: str,
         metrics: tuple[str, ...] = ("recall@5", "mrr")) -> list[dict[str, Any]]:
    h = scores["hybrid"]
    out = []
    for metric in metrics:
        out += [_row(f"{name} {metric}: default (hybrid) vs BM25 whole pages", h[metric],
                     scores["bm25-pages"][metric], metric, "clearly above", note),
                _row(f"{name} {metric}: default (hybrid) vs dense-only", h[metric], scores["dense"][metric], metric,
                     "clearly above", note),
                _row(f"{name} {metric}: hybrid+rerank vs default", scores["hybrid+rerank"][metric], h[metric], metric,
                     "measured", note)]
    return out


def manual_rows(svc: Any, manual: ManualSet) -> list[dict[str, Any]]:
    from apps.rag.eval import load_questions

    pages = manual.pages()
    svc.ingest(pages, manual.collection)
    qs = load_questions(manual.questions)
    note = manual.note.format(q=len(qs), p=len(pages))
    return rows(manual.title, measure(svc, manual.collection, qs, pages), note, manual.metrics)


def faq_rows(svc: Any, out_dir: Path) -> list[dict[str, Any]]:
    from apps.rag import faq
    from apps.rag.eval import load_questions

    qfile = faq.build_faq_set(out_dir)
    qs = load_questions(qfile)
    docs = sorted(str(p) for p in (qfile.parent / "docs").iterdir())
    svc.ingest(docs, "faq")
    note = f"{len(qs)} FAQ questions, gold = the answer section (heading removed), one file per section"
    out = rows("Python FAQ", measure(svc, "faq", qs, docs), note)
    t0 = time.perf_counter()
    for q in qs[:40]:
        svc.search("faq", q["question"])
    out.append(_row("FAQ query latency, hybrid, question embedding included", 1000 * (time.perf_counter() - t0) / 40,
                    0.0, "ms/query", "< 100 ms (interactive)",
                    "question embedding + four engine queries (chunks and documents, dense and BM25) + fusion",
                    higher=False))
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    from apps.rag import faq
    from apps.rag.library import RagService
    from cluster.config import load_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not faq.available():
        raise RuntimeError("python3-doc is not installed: apt-get install -y python3-doc")
    with tempfile.TemporaryDirectory() as tmp:
        svc = RagService(load_config(environ={"CONDUCTOR__RAG__DATA_DIR": str(Path(tmp) / "store")}))
        try:
            out = faq_rows(svc, Path(tmp) / "faq")
            for manual in MANUALS.values():
                if manual.root.is_dir() and not quick:
                    out += manual_rows(svc, manual)
        finally:
            svc.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=["faq", *MANUALS], default="git")
    args = ap.parse_args()
    from apps.rag import faq
    from apps.rag.eval import load_questions
    from apps.rag.library import RagService
    from cluster.config import load_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        svc = RagService(load_config(environ={"CONDUCTOR__RAG__DATA_DIR": str(Path(tmp) / "store")}))
        try:
            if args.set in MANUALS:
                manual = MANUALS[args.set]
                qs, paths, coll = load_questions(manual.questions), manual.pages(), manual.collection
            else:
                qfile = faq.build_faq_set(Path(tmp) / "faq")
                qs, coll = load_questions(qfile), "faq"
                paths = sorted(str(p) for p in (qfile.parent / "docs").iterdir())
            svc.ingest(paths, coll)
            for system, m in measure(svc, coll, qs, paths).items():
                print(f"{system:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
        finally:
            svc.close()


if __name__ == "__main__":
    main()
