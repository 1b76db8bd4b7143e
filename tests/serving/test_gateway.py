"""The OpenAI-compatible API on the real stack: real Ray Serve, the packaged SmolLM2 (llama.cpp) and MiniLM."""

from __future__ import annotations

import concurrent.futures as cf
import math

import httpx
import numpy as np
import openai
import pytest

pytestmark = pytest.mark.serve


def test_models_list(serve_stack):
    ids = [m.id for m in serve_stack.client().models.list().data]
    assert "smollm2" in ids and "all-minilm-l6-v2" in ids and "hosted" in ids


def test_chat_non_streaming(serve_stack):
    resp = serve_stack.client().chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0)
    assert resp.headers["x-conductor-backend"] == "smollm2-llamacpp"
    out = resp.parse()
    assert out.choices[0].message.content.strip()
    assert out.usage.completion_tokens > 0 and out.usage.prompt_tokens > 0
    assert out.model == "smollm2"


def test_chat_streaming_sends_only_new_tokens(serve_stack):
    stream = serve_stack.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=40, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    whole = serve_stack.client().chat.completions.create(  # generated again, not the stream's cached answer
        model="smollm2", messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=40, temperature=0, extra_headers={"cache-control": "no-cache"})
    # Deltas are increments, not the cumulative text: joined they equal the greedy non-streamed answer.
    assert "".join(pieces) == whole.choices[0].message.content


def test_completions(serve_stack):
    out = serve_stack.client().completions.create(model="smollm2", prompt="The capital of France is",
                                                  max_tokens=8, temperature=0)
    assert out.choices[0].text.strip()


def test_embeddings_shape_norm_and_order_under_concurrency(serve_stack, minilm):
    client = serve_stack.client()
    texts = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "rockets", "tea", "rivers"] * 6)]

    def one(i: int) -> tuple[int, list[list[float]]]:
        batch = texts[i:i + 3]
        return i, [d.embedding for d in client.embeddings.create(model="all-minilm-l6-v2", input=batch).data]

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(0, len(texts), 3)))
    expected = minilm.embed(texts)
    for i, vecs in results:
        assert len(vecs[0]) == 384
        for j, v in enumerate(vecs):
            assert math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4)
            # Batching across concurrent callers must hand each caller its own rows, in its order.
            assert float(np.dot(v, expected[i + j])) > 0.999


def test_embeddings_request_larger_than_a_batch_is_split_and_counted(serve_stack, minilm):
    """150 texts (over the 64-text batch): every row in order, and usage counts the tokens the model read."""
    texts = [f"item {i}: " + "word " * (i % 13) for i in range(150)]
    out = serve_stack.client().embeddings.create(model="all-minilm-l6-v2", input=texts)
    expected, tokens = minilm.embed_counted(texts)
    assert [d.index for d in out.data] == list(range(150))
    assert min(float(np.dot(d.embedding, expected[d.index])) for d in out.data) > 0.999
    tok = minilm.model.tokenizer
    assert out.usage.prompt_tokens == tokens == sum(len(tok(t)["input_ids"]) for t in texts)


def test_fallback_to_hosted_when_primary_port_is_dead(serve_stack, hosted_apis):
    resp = serve_stack.client().chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": "ping"}], max_tokens=16)
    assert resp.headers["x-conductor-backend"] == "flaky-b"
    assert resp.parse().choices[0].message.content == "hosted b: ping"
    metrics = serve_stack.http().get("/metrics").text
    assert 'conductor_fallbacks_total{from_backend="dead-port",model="flaky",to_backend="flaky-b"}' in metrics


def test_breaker_opens_then_closes_after_cooldown(serve_stack, hosted_apis):
    import time

    a = hosted_apis["a"]
    client = serve_stack.client()
    ask = lambda: client.chat.completions.with_raw_response.create(  # noqa: E731
        model="hosted", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert ask().headers["x-conductor-backend"] == "hosted-a"
    a.fail = True
    hits = a.hits
    assert ask().headers["x-conductor-backend"] == "hosted-b"   # a failed -> breaker opens (threshold 1)
    assert a.hits == hits + 1
    assert ask().headers["x-conductor-backend"] == "hosted-b"   # open: a is not even tried
    assert a.hits == hits + 1
    assert 'conductor_breaker_open{backend="hosted-a",model="hosted"} 1.0' in serve_stack.http().get(
        "/metrics").text
    a.fail = False
    time.sleep(3.5)                                              # cooldown_s = 3 in the test config
    assert ask().headers["x-conductor-backend"] == "hosted-a"   # half-open trial succeeds -> closed
    assert 'conductor_breaker_open{backend="hosted-a",model="hosted"} 0.0' in serve_stack.http().get(
        "/metrics").text


def test_streaming_fallback_and_cost(serve_stack):
    stream = serve_stack.client().chat.completions.create(
        model="flaky", messages=[{"role": "user", "content": "stream me"}], max_tokens=16, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "hosted b: stream me"
    metrics = serve_stack.http().get("/metrics").text
    cost = [l for l in metrics.splitlines() if l.startswith('conductor_cost_usd_total{backend="flaky-b"')]
    assert cost and float(cost[0].rsplit(" ", 1)[1]) > 0


def test_metrics_count_what_was_sent(serve_stack):
    def count() -> float:
        for line in serve_stack.http().get("/metrics").text.splitlines():
            if line.startswith('conductor_requests_total{backend="echo-local",endpoint="chat",model="echo",status="ok",variant=""}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    client = serve_stack.client()
    for i in range(3):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": f"n{i}"}])
    assert count() == before + 3
    text = serve_stack.http().get("/metrics").text
    assert "conductor_request_latency_seconds_bucket" in text
    assert 'conductor_tokens_output_total{backend="echo-local",model="echo"}' in text


def test_cache_hit_for_greedy_repeat(serve_stack):
    h = serve_stack.http()
    body = {"model": "echo", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}
    first, second = h.post("/v1/chat/completions", json=body), h.post("/v1/chat/completions", json=body)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-conductor-cache"] == "miss" and second.headers["x-conductor-cache"] == "hit"
    assert first.json()["choices"] == second.json()["choices"]


def test_api_key_required(serve_stack):
    r = httpx.post(serve_stack.base_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=serve_stack.base_url + "/v1", api_key="wrong").models.list()
    assert httpx.get(serve_stack.base_url + "/healthz").status_code == 200
