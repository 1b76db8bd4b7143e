"""Every malformed request gets a 4xx with an OpenAI-style reason, and the replica keeps serving."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.serve

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("body, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"model": "smollm2"}', 400, "messages"),
    (b'{"model": "smollm2", "messages": []}', 400, "messages"),
    (b'{"model": "smollm2", "messages": "hi"}', 400, "messages"),
    (b'{"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}', 400, "role"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}', 400, "max_tokens"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', 400, "max_tokens"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "temperature": 9}', 400, "temperature"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 999999}', 400, "context"),
    (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', 404, "does not exist"),
])
def test_chat_bad_inputs(serve_stack, body, status, needle):
    r = serve_stack.http().post(CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle.lower() in err["message"].lower()
    assert err["type"]


def test_prompt_longer_than_context_is_a_400(serve_stack):
    long = "word " * 5000  # ~5k tokens against a 2048-token window; still under the body limit
    r = serve_stack.http().post(CHAT, json={"model": "smollm2", "max_tokens": 8,
                                            "messages": [{"role": "user", "content": long}]})
    assert r.status_code == 400, r.text
    assert "context" in r.json()["error"]["message"]


def test_oversized_body_is_refused_before_parsing(serve_stack):
    limit = serve_stack.config.server.max_body_bytes
    junk = b'{"messages": [' + b" " * (limit + 10) + b"]}"
    r = serve_stack.http().post(CHAT, content=junk, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]["message"]


def test_chunked_oversized_body_is_refused(serve_stack):
    limit = serve_stack.config.server.max_body_bytes

    def gen():
        yield b'{"messages": ['
        for _ in range(limit // 1000 + 5):
            yield b" " * 1000
        yield b"]}"

    r = serve_stack.http().post(CHAT, content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("body, status", [
    ({"input": []}, 400),
    ({"input": [1, 2]}, 400),
    ({"input": "x", "model": "nope"}, 404),
    ({}, 400),
])
def test_embedding_bad_inputs(serve_stack, body, status):
    r = serve_stack.http().post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_still_serving_after_bad_inputs(serve_stack):
    r = serve_stack.http().post(CHAT, json={"model": "echo", "messages": [{"role": "user", "content": "alive"}]})
    assert r.status_code == 200 and "alive" in r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("path, body", [
    (CHAT, b'{"model": "smollm2", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 4}'),
    (CHAT, b'{"model": "smollm2", "messages": [{"role": "user", "content": "ok \\udc00 then"}], "max_tokens": 4}'),
    ("/v1/embeddings", b'{"input": ["fine", "\\ud83d"]}'),
    ("/v1/rerank", b'{"query": "\\udfff", "documents": ["a"]}'),
    ("/v1/rag/kb/search", b'{"question": "reset \\ud800"}'),
])
def test_half_a_surrogate_pair_is_a_400_not_a_strike_against_the_engine(serve_stack, path, body):
    """`"\\ud800"` alone is valid JSON but not text: the engine's UTF-8 encoder failed on it, which answered 503 and
    counted against the backend (found by the `hardening` bench's 10,000-request fuzz)."""
    with serve_stack.http() as c:
        failures = c.get("/v1/status").json()["router"]["smollm2"]["smollm2-llamacpp"]["failures"]
        r = c.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert "surrogate" in r.json()["error"]["message"]
        after = c.get("/v1/status").json()["router"]["smollm2"]["smollm2-llamacpp"]
        assert after["breaker"] == "closed" and after["failures"] == failures
        # an emoji sent as an escaped pair (what Python's json.dumps writes) is text, and is served
        ok = c.post(CHAT, json={"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "hi 😀"}]})
        assert ok.status_code == 200, ok.text
