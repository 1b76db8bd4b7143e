"""`rag.reranker`: a GGUF reranker run by llama.cpp (tests/rag/rerank_model.py writes one from the packaged SmolLM2),
and what a caller sees when the configured model cannot be used."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.rag.conftest import MD

OCTET = {"content-type": "application/octet-stream"}
PASSAGES = ["Paris is the capital of France.", "Bananas are yellow when they are ripe.",
            "The Eiffel tower stands in Paris.", "Hold the reset pin for twelve seconds.",
            "Lyon is a large city in France.", "The kettle boils water in two minutes."]  # two groups of pairs


@pytest.fixture(scope="module")
def rank_gguf(tmp_path_factory):
    from tests.rag.rerank_model import write_rerank_gguf

    return write_rerank_gguf(tmp_path_factory.mktemp("reranker") / "rerank.gguf")


def test_a_gguf_reranker_scores_each_passage_in_its_place(rank_gguf):
    from deployments.rerankers import LlamaCppRerankModel, load_rerank_model

    model = load_rerank_model(str(rank_gguf), threads=2)
    assert isinstance(model, LlamaCppRerankModel)
    assert load_rerank_model(str(rank_gguf), threads=2) is model  # loaded once per process, not per search
    question = "what is the capital of France?"
    scores = model.score(question, PASSAGES)
    assert len(scores) == len(PASSAGES) and len(set(scores)) == len(PASSAGES)  # the model's, one each
    # llama.cpp answers best first; each score must come back to the passage it belongs to
    assert model.score(question, PASSAGES[::-1]) == pytest.approx(scores[::-1], abs=1e-5)
    counted, tokens = model.score_counted(question, PASSAGES)
    assert counted == pytest.approx(scores, abs=1e-5)
    one = model.score_counted(question, PASSAGES[:1])[1]
    assert 0 < one < tokens  # llama.cpp's own count of what it read: more passages, more tokens


def test_a_cross_encoder_folder_scores_each_passage_and_counts_what_it_read(tmp_path):
    """A sentence-transformers CrossEncoder by path (here a one-layer BERT with random weights and a vocabulary of
    the test's words, saved as Hugging Face saves one): its scores, in each passage's place, and the tokens of
    each (question, passage) pair as its own tokenizer makes them."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from deployments.rerankers import CrossEncoderModel, load_rerank_model

    question = "what is the capital of France?"
    words = {w for t in [question, *PASSAGES] for w in t.lower().replace("?", " ?").replace(".", " .").split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)
                                  ).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_rerank_model(str(tmp_path))
    assert isinstance(model, CrossEncoderModel)
    scores, tokens = model.score_counted(question, PASSAGES)
    assert len(set(scores)) == len(PASSAGES)
    assert model.score(question, PASSAGES[::-1]) == pytest.approx(scores[::-1], abs=1e-5)
    assert tokens == sum(len(tokenizer(question, p)["input_ids"]) for p in PASSAGES)


def test_a_long_question_and_a_dense_script_passage_still_fit_the_reranker(rank_gguf):
    """Cut by UTF-8 bytes, a pair fits llama.cpp's context whatever the script: cut by characters, 2,000 characters
    of Chinese overflowed it and the search answered 503."""
    from deployments.rerankers import load_rerank_model

    model = load_rerank_model(str(rank_gguf), threads=2)
    passages = ["一二三四五六七八九十" * 300, "Hold the reset pin for twelve seconds. " * 100, PASSAGES[0]]
    scores = model.score("how do I reset the router? " * 800, passages)
    assert len(scores) == 3 and all(s > float("-inf") for s in scores)


def test_rerank_orders_candidates_by_the_models_scores(rank_gguf):
    from apps.rag.retrieval import Hit, Reranker

    from deployments.rerankers import load_rerank_model

    reranker = Reranker(load_rerank_model(str(rank_gguf)), sparse=None)
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
    from deployments.packaged import smollm2_gguf

    spec = {"gguf": lambda: request.getfixturevalue("rank_gguf"),
            "missing": lambda: tmp_path / "no-such-reranker.gguf",
            "chat-model": smollm2_gguf}[reranker_spec]()
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


class _Spy:
    """Stands between a loaded GGUF model and its llama.cpp server: counts the rerank calls, runs `on_call` at each,
    and with `hold` keeps the first one waiting until the test sets `go`, so a test can act while a rerank runs."""

    def __init__(self, server, hold: bool = False, on_call=None):
        import threading

        self.server, self.calls, self.on_call = server, 0, on_call
        self.started, self.go, self.returned = threading.Event(), threading.Event(), threading.Event()
        if not hold:
            self.go.set()

    def handle_rerank(self, req):
        self.calls += 1
        self.started.set()
        if self.on_call:
            self.on_call()
        self.go.wait(30)
        try:
            return self.server.handle_rerank(req)
        finally:
            self.returned.set()


@pytest.fixture
def spy(rank_gguf):
    """`spy(...)` puts a _Spy between the process's loaded reranker and its server; the server is put back after."""
    from deployments.rerankers import load_rerank_model

    model = load_rerank_model(str(rank_gguf), threads=2)
    real = model.server

    def install(**kwargs):
        model.server = _Spy(real, **kwargs)
        return model

    yield install
    model.server = real


def test_a_stopped_rerank_ends_within_one_group_of_pairs(spy):
    import threading

    from deployments.rerankers import PAIRS_PER_CALL, RerankCancelled

    passages = PASSAGES * 2
    model = spy()
    assert len(model.score("a question", passages)) == len(passages)
    assert model.server.calls == len(passages) / PAIRS_PER_CALL
    stop = threading.Event()
    model = spy(on_call=stop.set)  # the caller leaves while the first group is scored
    with pytest.raises(RerankCancelled):
        model.score("a question", passages, stop)
    assert model.server.calls == 1


@pytest.mark.parametrize("reranker_spec", ["gguf"])
def test_a_cancelled_search_stops_its_rerank(rag_config, service, spy, tmp_path, reranker_spec):
    """Serve cancels a request whose client left; the search route must pass that on to the rerank running in its
    worker thread, which a sync route never learns of."""
    import asyncio

    from apps.rag.serve import create_app

    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(12):  # 12 documents: three groups of four pairs to score
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nThe router resets when the pin is held for {i + 5} seconds.\n")
    service.ingest(sorted(str(p) for p in docs.iterdir()), "kb")
    held = spy(hold=True).server
    app = create_app(rag_config, lambda: service)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            task = asyncio.create_task(c.post("/kb/search", json={"question": "how long to hold the pin?", "k": 12,
                                                                 "rerank": True}))
            assert await asyncio.to_thread(held.started.wait, 60)  # the first group is in llama.cpp
            task.cancel()  # as Serve does when the client goes away
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    held.go.set()  # the first group goes on in llama.cpp; the stop must be seen before a second one starts
    assert held.returned.wait(60)
    time.sleep(1.0)  # a worker that was not stopped calls again at once
    assert held.calls == 1


def test_a_rerank_url_is_asked_in_cohere_shape_and_its_bad_answers_are_the_services_fault():
    from tests.fake_rerank import FakeRerankAPI

    from deployments.rerankers import PAIRS_PER_CALL, RerankerUnavailable, open_rerank_model

    def cohere(body):  # relevance = the passage's length, best first as Cohere answers
        order = sorted(range(len(body["documents"])), key=lambda i: -len(body["documents"][i]))
        return 200, {"results": [{"index": i, "relevance_score": float(len(body["documents"][i]))} for i in order]}

    svc = FakeRerankAPI(cohere)
    try:
        model = open_rerank_model(svc.url + "/v1/rerank?api-version=2", "rerank-english-v3.0", "secret-key-12345")
        assert model.score_counted("q", PASSAGES) == ([float(len(p)) for p in PASSAGES], 0)  # Cohere counts none
        path, body, auth = svc.sent[0]
        assert path == "/v1/rerank?api-version=2" and auth == "Bearer secret-key-12345"
        assert body == {"query": "q", "documents": PASSAGES[:PAIRS_PER_CALL], "top_n": PAIRS_PER_CALL,
                        "model": "rerank-english-v3.0"}
    finally:
        svc.close()

    answers = {"unknown shape": (200, {"scores": [1, 2]}),
               "outside the": (200, {"results": [{"index": 9, "relevance_score": 1.0}]}),
               "no usable score for 1 of the 2": (200, {"results": [{"index": 0, "relevance_score": 1.0}]}),
               "answered 429: slow down": (429, {"error": {"message": "slow down, secret-key-12345"}})}
    for says, answer in answers.items():
        svc = FakeRerankAPI(lambda body, answer=answer: answer)
        try:
            with pytest.raises(RerankerUnavailable, match=says) as e:
                open_rerank_model(svc.url + "/rerank", api_key="secret-key-12345").score("q", PASSAGES[:2])
            assert "secret-key-12345" not in str(e.value)
        finally:
            svc.close()

    tei = FakeRerankAPI(lambda body: (200, [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}]))
    try:  # Hugging Face TEI's /rerank answers a bare list
        assert open_rerank_model(tei.url + "/rerank").score("q", PASSAGES[:2]) == [0.1, 0.9]
    finally:
        tei.close()

    for usage, tokens in (({"total_tokens": 37}, 37), ({"prompt_tokens": 12}, 12), ({"total_tokens": "many"}, 0),
                          ({"total_tokens": -5}, 0), ([], 0)):  # Jina's and vLLM's usage; nonsense counts nothing
        jina = FakeRerankAPI(lambda body, usage=usage: (200, {"results": [{"index": 0, "relevance_score": 0.5}],
                                                               "usage": usage}))
        try:
            assert open_rerank_model(jina.url + "/rerank").score_counted("q", PASSAGES[:1]) == ([0.5], tokens)
        finally:
            jina.close()

    from tests.conftest import free_port

    with pytest.raises(RerankerUnavailable, match="did not answer") as e:
        open_rerank_model(f"http://user:hunter22@127.0.0.1:{free_port()}/rerank").score("q", PASSAGES[:2])
    assert "hunter22" not in str(e.value)
