"""`conductor rag ...` through click's CliRunner against a real store, embedder and HTTP servers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cluster.cli import cli


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDUCTOR__RAG__DATA_DIR", str(tmp_path / "store"))
    # No server here (a test stack started earlier in the session exports its URL): the CLI opens the store.
    monkeypatch.setenv("CONDUCTOR_BASE_URL", "http://127.0.0.1:9")

    def _run(*args: str, code: int = 0):
        res = CliRunner().invoke(cli, ["rag", *args], catch_exceptions=False)
        assert res.exit_code == code, res.output
        return res

    return _run


def test_ingest_search_ask_json(run, docs, hosted_apis, monkeypatch):
    out = json.loads(run("ingest", str(docs), "--collection", "kb", "--json").stdout)
    assert len(out["added"]) == 5 and out["chunks"] > 0
    hits = json.loads(run("search", "how long to hold the reset pin", "--collection", "kb", "--k", "3",
                          "--json").stdout)
    assert isinstance(hits, list) and len(hits) == 3  # documents, each once, best first
    assert len({h["source"] for h in hits}) == 3
    assert hits[0]["source"] == str(docs / "router.md") and {"score", "best", "title"} <= set(hits[0])
    assert "twelve seconds" in hits[0]["best"]["text"] and hits[0]["best"]["source"] == hits[0]["source"]
    # answers go through the gateway's chat API: here a real OpenAI-protocol server standing in for it
    monkeypatch.setenv("CONDUCTOR_BASE_URL", hosted_apis["a"].base_url.removesuffix("/v1"))
    ans = json.loads(run("ask", "How do I reset the Zephyr router?", "--collection", "kb", "--json").stdout)
    assert {"answer", "sources", "warning"} <= set(ans) and ans["warning"] is None
    assert (ans["model_answer"] or ans["answer"]).startswith("hosted a:") and ans["citations"]
    assert ans["sources"][0]["source"] == str(docs / "router.md")
    text = run("search", "penguins", "--collection", "kb").stdout
    assert "penguins.txt" in text


def test_errors_are_one_line(run, docs):
    r = run("search", "x", "--collection", "missing", code=1)
    assert "does not exist" in r.output and "Traceback" not in r.output
    run("ingest", str(docs / "penguins.txt"), "--collection", "kb")
    assert "empty" in run("ask", "  ", "--collection", "kb", code=1).output
    assert "no such file" in run("ingest", "/nonexistent/dir", "--collection", "kb", code=1).output
    assert "invalid collection name" in run("ingest", str(docs), "--collection", "bad/name", code=1).output
    assert run("search", "x", "--collection", "kb", "--k", "0", code=2).exit_code == 2


def test_low_relevance_ask_needs_no_model(run, docs):
    run("ingest", str(docs), "--collection", "kb")
    ans = json.loads(run("ask", "gluon propagator lattice QCD renormalisation", "--collection", "kb",
                         "--json").stdout)
    assert "low relevance" in ans["warning"] and ans["citations"] == []


def test_cli_routes_through_the_server_when_it_holds_the_store(run, service, docs, rag_http, monkeypatch):
    service.ingest([str(docs)], "kb")  # the "server" process now holds the embedded store
    monkeypatch.setenv("CONDUCTOR__RAG__DATA_DIR", str(service.store.root.parent))
    monkeypatch.setenv("CONDUCTOR_BASE_URL", rag_http)
    hits = json.loads(run("search", "descaling with vinegar", "--collection", "kb", "--json").stdout)
    assert hits[0]["source"] == str(docs / "kettle.html")
    # ingest goes through the server too: the files are uploaded, the server (the store's owner) ingests them
    (docs.parent / "more").mkdir()
    (docs.parent / "more" / "tea.md").write_text("# Tea\n\nSteep green tea for two minutes at 80 degrees.\n")
    r = json.loads(run("ingest", str(docs.parent / "more"), "--collection", "kb", "--json").stdout)
    assert r["chunks"] >= 1 and any(p.endswith("tea.md") for p in r["added"])
    hits = json.loads(run("search", "how long to steep green tea", "--collection", "kb", "--json").stdout)
    assert hits[0]["source"].endswith("tea.md")
    assert "kb" in run("collections").stdout
    # the README's eval with a local question set works through the server too (gold files named as uploaded)
    qfile = docs.parent / "q.jsonl"
    qfile.write_text(json.dumps({"question": "how long should green tea steep?", "gold": ["more/tea.md"]}) + "\n")
    out = json.loads(run("eval", "--collection", "kb", "--questions", str(qfile), "--modes", "dense,hybrid",
                         "--json").stdout)
    assert [r["mode"] for r in out["rows"]] == ["dense", "hybrid"] and out["rows"][0]["recall@5"] == 1.0
    # options that need the store itself are refused with a reason while the server owns it
    r = run("ingest", str(docs), "--collection", "kb", "--chunk-size", "500", code=1)
    assert "need the store itself" in r.output


def test_eval_and_faq_set(run, tmp_path):
    from apps.rag import faq

    if not faq.available():
        pytest.skip("python3-doc is not installed")
    q = faq.build_faq_set(tmp_path / "faq", limit=12)
    run("ingest", str(tmp_path / "faq" / "docs"), "--collection", "faq", "--chunking", "recursive")
    out = json.loads(run("eval", "--collection", "faq", "--questions", str(q), "--json").stdout)
    assert [r["mode"] for r in out["rows"]] == ["dense", "sparse", "hybrid", "hybrid+rerank"]
    assert out["chunking"] == "recursive"
    table = run("eval", "--collection", "faq", "--questions", str(q), "--modes", "dense,hybrid").stdout
    assert "recall@5" in table and "hybrid" in table
    assert "unknown mode" in run("eval", "--collection", "faq", "--questions", str(q), "--modes", "x", code=1).output
    cols = json.loads(run("collections", "--json").stdout)
    assert cols[0]["name"] == "faq" and cols[0]["embedding_model"] == "packaged:minilm"
