"""`rag.reranker`: a GGUF reranker run by llama.cpp (tests/rag/rerank_model.py writes one from the packaged SmolLM2),
and what a caller sees when the configured model cannot be used."""

from __future__ import annotations

import httpx
import pytest

from tests.rag.conftest import MD

OCTET = {"content-type": "application/octet-stream"}
PASSAGES = ["Paris is the capital of France.", "Bananas are yellow when they are ripe.",
            "The Eiffel tower stands in Paris.", "Hold the reset pin for twelve seconds."]


@pytest.fixture(scope="module")
def rank_gguf(tmp_path_factory):
    from tests.rag.rerank_model import write_rerank_gguf

    return write_rerank_gguf(tmp_path_factory.mktemp("reranker") / "rerank.gguf")


def test_a_gguf_reranker_scores_each_passage_in_its_place(rank_gguf):
    from apps.rag.rerankers import LlamaCppRerankModel, load_rerank_model

    model = load_rerank_model(str(rank_gguf), threads=2)
    assert isinstance(model, LlamaCppRerankModel)
    assert load_rerank_model(str(rank_gguf), threads=2) is model  # loaded once per process, not per search
    question = "what is the capital of France?"
    scores = model.score(question, PASSAGES)
    assert len(scores) == len(PASSAGES) and len(set(scores)) == len(PASSAGES)  # the model's, one each
    # llama.cpp answers best first; each score must come back to the passage it belongs to
    assert model.score(question, PASSAGES[::-1]) == pytest.approx(scores[::-1], abs=1e-5)


def test_rerank_orders_candidates_by_the_models_scores(rank_gguf):
    from apps.rag.retrieval import Hit, Reranker

    reranker = Reranker(str(rank_gguf), sparse=None)
    hits = [Hit(source=f"d{i}", score=0.0, dense_score=0.9 - i / 10, text=t) for i, t in enumerate(PASSAGES)]
    scores = dict(zip(PASSAGES, reranker.model.score("what is the capital of France?", PASSAGES)))
    out = reranker.rescore("what is the capital of France?", hits)
    assert [h.text for h in out] == sorted(PASSAGES, key=lambda t: -scores[t])
    assert [h.score for h in out] == pytest.approx(sorted(scores.values(), reverse=True))


@pytest.fixture
def reranker_spec():
    return None


@pytest.fixture
def rag_config(tmp_path, request, reranker_spec):
    """The RAG app's config with `rag.reranker` set as the test names it."""
    from cluster.config import load_config

    spec = {"gguf": lambda: str(request.getfixturevalue("rank_gguf")),
            "missing": lambda: str(tmp_path / "no-such-reranker.gguf"),
            "chat-model": lambda: __import__("deployments.packaged", fromlist=["x"]).smollm2_gguf()}[reranker_spec]()
    return load_config(environ={"CONDUCTOR__RAG__DATA_DIR": str(tmp_path / "store"),
                                "CONDUCTOR__RAG__RERANKER": str(spec)})


def _search(base: str, rerank: bool) -> httpx.Response:
    with httpx.Client(base_url=base + "/v1/rag", timeout=120) as c:
        if c.get("/collections").json()["collections"] == []:
            r = c.post("/kb/upload", params={"filename": "router.md"}, headers=OCTET, content=MD.encode())
            assert r.status_code == 200, r.text
        return c.post("/kb/search", json={"question": "how do I reset the router?", "k": 3, "rerank": rerank})


@pytest.mark.parametrize("reranker_spec", ["gguf"])
def test_search_with_rerank_uses_the_configured_gguf(rag_http, service, reranker_spec):
    r = _search(rag_http, rerank=True)
    assert r.status_code == 200, r.text
    assert r.json()["documents"][0]["best"]["text"]
    assert service.reranker.model is not None  # the llama.cpp model, not the built-in rescoring


@pytest.mark.parametrize("reranker_spec", ["missing", "chat-model"])
def test_a_reranker_that_cannot_load_is_a_503_with_its_reason_and_plain_search_still_works(rag_http, reranker_spec):
    r = _search(rag_http, rerank=True)
    assert r.status_code == 503, r.text
    msg = r.json()["error"]["message"]
    assert ("does not exist" if reranker_spec == "missing" else "could not load") in msg
    assert "rag.reranker" in msg or "reranker" in msg
    assert _search(rag_http, rerank=False).status_code == 200
