"""Train with Conductor, export, and chat with the result through the same OpenAI API (transformers engine)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.serve


def test_chat_with_a_model_conductor_trained(serve_stack, trained_export):
    assert (trained_export / "config.json").is_file()
    resp = serve_stack.client().chat.completions.with_raw_response.create(
        model="trained", messages=[{"role": "user", "content": "def main():"}], max_tokens=12, temperature=0)
    assert resp.headers["x-conductor-backend"] == "trained-hf"
    out = resp.parse()
    assert out.usage.completion_tokens > 0 and out.choices[0].message.content is not None
    stream = serve_stack.client().chat.completions.create(
        model="trained", messages=[{"role": "user", "content": "def main():"}], max_tokens=12, temperature=0,
        stream=True, extra_headers={"cache-control": "no-cache"})  # generated again, not the cached answer
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == out.choices[0].message.content  # greedy: the same text either way


def test_trained_model_context_limit_is_a_400(serve_stack):
    r = serve_stack.http().post("/v1/chat/completions", json={
        "model": "trained", "max_tokens": 300, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
