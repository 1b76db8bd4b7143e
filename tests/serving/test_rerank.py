"""/v1/rerank on the served stack (Cohere/Jina protocol), with the stand-in GGUF reranker that tests/conftest.py
configures (tests/rag/rerank_model.py), and RAG's searches with `rag.reranker: gateway` going through it."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.serve

QUERY = "how do I reset the router?"
DOCS = ["Paris is the capital of France.", "Hold the reset pin for twelve seconds to reset the router.",
        "Bananas are yellow when they are ripe.", "The router's LED blinks red while it resets.",
        "The kettle boils water in two minutes."]


def _rerank_requests(c) -> float:
    """conductor_requests_total for answered reranks in the gateway's own registry."""
    m = re.search(r'^conductor_requests_total\{[^}]*endpoint="rerank"[^}]*status="ok"[^}]*\} (\S+)$',
                  c.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_rerank_scores_each_document_with_the_served_model(serve_stack):
    from deployments.rerankers import load_rerank_model

    with serve_stack.http() as c:
        r = c.post("/v1/rerank", json={"model": "test-reranker", "query": QUERY, "documents": DOCS,
                                       "return_documents": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "test-reranker" and r.headers["x-conductor-backend"] == "reranker"
        results = body["results"]
        assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
        scores = [x["relevance_score"] for x in results]
        assert scores == sorted(scores, reverse=True)  # best first
        assert all(x["document"]["text"] == DOCS[x["index"]] for x in results)
        # each score belongs to its document: the same model in this process gives the same numbers
        local, tokens = load_rerank_model(serve_stack.config.reranker.model).score_counted(QUERY, DOCS)
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens} and tokens > 0
        assert [x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])] == pytest.approx(local,
                                                                                                        abs=1e-4)
        top = c.post("/v1/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS], "top_n": 2})
        assert top.status_code == 200, top.text
        assert [x["index"] for x in top.json()["results"]] == [x["index"] for x in results[:2]]
        assert "document" not in top.json()["results"][0]
        listed = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert listed["test-reranker"]["backends"] == ["reranker"]


@pytest.mark.parametrize("body, status, says", [
    ({"query": QUERY, "documents": DOCS, "model": "no-such-reranker"}, 404, "does not exist"),
    ({"query": QUERY, "documents": DOCS * 2}, 400, "limit is 8"),
    ({"query": "   ", "documents": DOCS}, 400, "blank"),
    ({"query": QUERY, "documents": []}, 400, "documents"),
    ({"query": QUERY, "documents": [3, 4]}, 400, "documents"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n"),
    ({"query": QUERY, "documents": DOCS, "rank_fields": ["title"]}, 400, "rank_fields"),
    ({"documents": DOCS}, 400, "query"),
])
def test_a_bad_rerank_request_is_a_4xx_with_its_reason(serve_stack, body, status, says):
    with serve_stack.http() as c:
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == status, r.text
        assert says in r.json()["error"]["message"]


def test_the_cohere_sdk_reranks_through_conductor(serve_stack):
    """The official Cohere client, both generations: `ClientV2` posts to /v2/rerank, `Client` to /v1/rerank."""
    import cohere

    v2 = cohere.ClientV2(api_key=serve_stack.api_key, base_url=serve_stack.base_url, timeout=120)
    top = v2.rerank(model="test-reranker", query=QUERY, documents=DOCS, top_n=2)
    assert len(top.results) == 2 and top.results[0].relevance_score >= top.results[1].relevance_score
    v1 = cohere.Client(api_key=serve_stack.api_key, base_url=serve_stack.base_url, timeout=120)
    every = v1.rerank(model="test-reranker", query=QUERY, documents=DOCS, return_documents=True)
    assert sorted(r.index for r in every.results) == list(range(len(DOCS)))
    assert all(r.document.text == DOCS[r.index] for r in every.results)
    assert [r.index for r in every.results[:2]] == [r.index for r in top.results]
    with pytest.raises(cohere.errors.NotFoundError):
        v2.rerank(model="no-such-reranker", query=QUERY, documents=DOCS)
    with pytest.raises(cohere.errors.BadRequestError):
        v2.rerank(model="test-reranker", query=QUERY, documents=DOCS, max_tokens_per_doc=64)  # not ours: refused
    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere.ClientV2(api_key="not-a-key-0000", base_url=serve_stack.base_url).rerank(
            model="test-reranker", query=QUERY, documents=DOCS)


def test_rerank_needs_a_key(serve_stack):
    with serve_stack.http(key=None, source="127.0.7.7") as c:
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 401


def test_an_http_rerank_model_reads_the_served_route_and_hides_its_key(serve_stack):
    """`rag.reranker: <URL>`: the Cohere-protocol client, here against Conductor's own route."""
    from deployments.rerankers import HttpRerankModel, RerankerUnavailable, load_rerank_model

    url = serve_stack.base_url + "/v1/rerank"
    scores = HttpRerankModel(url, "test-reranker", serve_stack.api_key).score(QUERY, DOCS)
    local = load_rerank_model(serve_stack.config.reranker.model).score(QUERY, DOCS)
    assert scores == pytest.approx(local, abs=1e-4)
    wrong = "wrong-key-that-must-not-leak-123"
    with pytest.raises(RerankerUnavailable, match="answered 401") as e:
        HttpRerankModel(url, "test-reranker", wrong).score(QUERY, DOCS)
    assert wrong not in str(e.value)
    with pytest.raises(RerankerUnavailable, match="answered 404"):
        HttpRerankModel(url, "no-such-reranker", serve_stack.api_key).score(QUERY, DOCS)


def test_rag_search_with_rerank_goes_through_the_gateways_reranker(serve_stack):
    octet = {"content-type": "application/octet-stream"}
    with serve_stack.http() as c:
        for i, text in enumerate(DOCS):
            r = c.post("/v1/rag/rerank-kb/upload", params={"filename": f"note{i}.md"}, headers=octet,
                       content=f"# Note {i}\n\n{text}\n".encode())
            assert r.status_code == 200, r.text
        before = _rerank_requests(c)
        r = c.post("/v1/rag/rerank-kb/search", json={"question": QUERY, "k": 3, "rerank": True})
        assert r.status_code == 200, r.text
        assert r.json()["documents"]
        after = _rerank_requests(c)
        assert after > before  # the RAG app asked the gateway's reranker
        plain = c.post("/v1/rag/rerank-kb/search", json={"question": QUERY, "k": 3})
        assert plain.status_code == 200 and _rerank_requests(c) == after
    # The rerank was the tester's request, as the search was: in their spend, not the internal key's.
    from tests.stack import ADMIN_KEY

    def users() -> set[str]:
        with serve_stack.http(ADMIN_KEY) as h:
            rows = h.get("/v1/spend", params={"group_by": "user,model"}).json()["data"]
        return {r["user"] for r in rows if r["model"] == "test-reranker"}

    deadline = time.monotonic() + 30  # rows are written by a background thread, in batches
    while "tester" not in users() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "tester" in users() and "conductor-internal" not in users()


def test_the_readmes_rerank_example_runs_as_written(serve_stack):
    """The README's Cohere block, as written but for this stack's address, key and reranker's name."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "cohere" in b]
    code = (block.replace("http://127.0.0.1:8000", serve_stack.base_url)
            .replace('"unused-on-loopback"', repr(serve_stack.api_key)).replace('"bge-reranker"', '"test-reranker"'))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.fullmatch(r"\[\(\d, -?[\d.]+\), \(\d, -?[\d.]+\)\]\n", r.stdout), r.stdout


def test_a_served_reranker_can_forward_to_a_hosted_api_and_only_it_gets_the_key(serve_stack, monkeypatch):
    """`reranker.model` a URL: the Reranker replica asks the hosted API (a real HTTP server standing in for it) with
    the key named by `api_key_env`, which reaches that deployment's replicas and nothing else."""
    from ray import serve

    from cluster.config import RerankerConfig
    from cluster.runtime import secret_env_names
    from deployments.reranker import reranker_deployment
    from tests.fake_rerank import FakeRerankAPI

    def hosted(body):
        n = len(body["documents"])
        return 200, {"results": [{"index": i, "relevance_score": float(n - i)} for i in range(n)]}

    svc = FakeRerankAPI(hosted)
    monkeypatch.setenv("HOSTED_RERANK_KEY", "hosted-secret-4242")
    cfg = RerankerConfig(id="hosted", model=svc.url + "/v1/rerank", remote_model="rerank-v3.5",
                         api_key_env="HOSTED_RERANK_KEY", resources={"num_cpus": 0.01})
    try:
        serve.run(reranker_deployment(cfg), name="rerank-forward", route_prefix=None)
        handle = serve.get_app_handle("rerank-forward")
        result = handle.score.remote(QUERY, DOCS[:3]).result(timeout_s=120)
        assert result.scores == [3.0, 2.0, 1.0] and not result.error
        path, body, auth = svc.sent[0]
        assert auth == "Bearer hosted-secret-4242" and body["model"] == "rerank-v3.5" and path == "/v1/rerank"
        # the head never holds it: only the deployment whose config names it does
        assert "HOSTED_RERANK_KEY" in secret_env_names(serve_stack.config.model_copy(update={"reranker": cfg}))
    finally:
        serve.delete("rerank-forward")
        svc.close()
