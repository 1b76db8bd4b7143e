"""Evaluation harness: metric arithmetic, the python3-doc FAQ set, history and auto re-evaluation."""

from __future__ import annotations

import json

import pytest

from apps.rag import faq
from apps.rag.eval import (context_precision, evaluate, format_table, history, load_questions, run_and_record,
                           score_ranking)


def test_metric_arithmetic():
    m = score_ranking(["x", "g1", "y", "g2"], {"g1", "g2"}, k=3)
    assert m["hit"] == 1.0 and m["recall"] == 0.5 and m["mrr"] == 0.5
    assert m["ndcg"] == pytest.approx((1 / 1.5849625) / (1 + 1 / 1.5849625))
    assert score_ranking(["a", "b"], {"z"}, 5) == {"hit": 0.0, "recall": 0.0, "mrr": 0.0, "ndcg": 0.0}


def test_context_precision_is_rank_aware():
    assert context_precision(["g", "x", "y"], {"g"}) == 1.0
    assert context_precision(["x", "g"], {"g"}) == 0.5
    assert context_precision(["x", "y"], {"g"}) == 0.0


def test_questions_file_errors(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="gold"):
        load_questions(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="JSON"):
        load_questions(bad)
    with pytest.raises(ValueError, match="not found"):
        load_questions(tmp_path / "missing.json")
    ok = tmp_path / "q.json"
    ok.write_text(json.dumps([{"question": "q?", "gold_source": "docs/a.md"}]))
    assert load_questions(ok)[0]["gold"] == [str(tmp_path / "docs" / "a.md")]


@pytest.fixture(scope="module")
def faq_set(tmp_path_factory):
    if not faq.available():
        pytest.skip("python3-doc is not installed (apt-get install -y python3-doc)")
    return faq.build_faq_set(tmp_path_factory.mktemp("faq"), limit=40)


def test_faq_set_shape(faq_set):
    qs = load_questions(faq_set)
    assert len(qs) == 40 and all(q["question"].endswith("?") for q in qs)
    body = open(qs[0]["gold"][0]).read()
    assert qs[0]["question"] not in body  # the question heading is not in its answer document


def test_faq_retrieval_quality_history_and_auto_rerun(service, faq_set):
    docs = str(faq_set.parent / "docs")
    report = service.ingest([docs], "faq", questions=str(faq_set))
    assert len(report.added) == 40
    hist = history(service, "faq")
    assert len(hist) == 1  # evaluated automatically after the ingestion
    rows = {r["mode"]: r for r in hist[0]["rows"]}
    assert set(rows) == {"dense", "sparse", "hybrid", "hybrid+rerank"}
    # a small set (40 answers) is easy; these floors catch a broken retriever, not a 1-point regression
    assert rows["dense"]["recall@5"] >= 0.85 and rows["hybrid"]["recall@5"] >= 0.85
    assert rows["sparse"]["mrr"] >= 0.5 and rows["hybrid"]["mrr"] >= rows["sparse"]["mrr"]
    assert "recall@5" in format_table(hist[0]["rows"])
    # re-ingesting (nothing changed) still re-runs and keeps the history
    service.ingest([docs], "faq")
    assert len(history(service, "faq")) == 2
    entry = run_and_record(service, "faq", str(faq_set), k=3, modes=["dense"])
    assert entry["rows"][0]["mode"] == "dense" and "recall@3" in entry["rows"][0]
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(service, "faq", load_questions(faq_set), modes=["magic"])
