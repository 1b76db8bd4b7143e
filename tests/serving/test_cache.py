"""The caches: the exact-match cache shared by gateway replicas through a real Redis, expiring after its TTL, and
answering from the replica's own LRU while Redis is away; the semantic cache; and streams, which are kept whole and
replayed from a whole answer."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from apps.gateway.cache import ResponseCache, cache_key

REQ = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}


def test_replicas_share_answers_through_redis_until_they_expire(redis_server):
    one, two = (ResponseCache(8, ttl_s=0.5, redis_url=redis_server, prefix=f"t{time.time()}") for _ in range(2))
    two.prefix = one.prefix
    key = cache_key("chat", "m", REQ, "alice")

    async def run() -> tuple:
        await one.put(key, "b1", {"id": "x"})
        shared = await two.get(key)
        await asyncio.sleep(0.7)
        return shared, await two.get(key)

    shared, expired = asyncio.run(run())
    assert shared == ("b1", {"id": "x"}) and expired is None
    assert cache_key("chat", "m", REQ, "bob") != key  # another user never gets alice's answer
    assert cache_key("chat", "m", {**REQ, "temperature": 0.7}, "alice") is None  # sampling is not cached


def test_the_replicas_lru_answers_while_redis_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    cache = ResponseCache(2, ttl_s=60, redis_url=f"redis://127.0.0.1:{port}/0")

    async def run() -> tuple:
        for i in range(3):
            await cache.put(f"k{i}", "b", {"n": i})
        return await cache.get("k0"), await cache.get("k2")

    oldest, newest = asyncio.run(run())
    assert oldest is None and newest == ("b", {"n": 2})  # bounded: the oldest went


def test_the_semantic_cache_keeps_to_greedy_single_answers_unless_told():
    from apps.gateway.semantic_cache import SemanticCache, params_key
    from cluster.gateway_config import SemanticCacheConfig

    cache = SemanticCache(SemanticCacheConfig(enabled=True, models=["m"]), embedder=None)
    assert cache.eligible("m", REQ) and not cache.eligible("other", REQ)
    assert cache.eligible("m", {**REQ, "stream": True}) and not cache.eligible("m", {**REQ, "n": 2})
    assert not cache.eligible("m", {**REQ, "temperature": 0.7})
    assert not cache.eligible("m", {**REQ, "tools": [{"type": "function"}]})
    sampling = SemanticCache(SemanticCacheConfig(enabled=True, allow_sampling=True, allow_tools=True), None)
    assert sampling.eligible("any", {**REQ, "temperature": 0.7, "tools": [{"type": "function"}]})
    assert not SemanticCache(SemanticCacheConfig(), None).eligible("m", REQ)  # off by default
    # Only the prompt may differ between a question and its cached neighbour.
    assert params_key("chat", "m", REQ) == params_key("chat", "m", {**REQ, "messages": [], "user": "x"})
    assert params_key("chat", "m", REQ) != params_key("chat", "m", {**REQ, "max_tokens": 5})


def _ask(stack, text: str, key: str | None = "", temperature: float = 0.0):
    with stack.http(key) as h:
        return h.post("/v1/chat/completions", json={"model": "semantic-group", "temperature": temperature,
                                                     "max_tokens": 16, "messages": [{"role": "user", "content": text}]})


def test_a_prompt_that_means_the_same_gets_the_cached_answer_and_says_so(serve_stack):
    from tests.stack import OTHER_KEY

    first = _ask(serve_stack, "What is the capital city of France?")
    assert first.status_code == 200 and first.headers["x-conductor-cache"] == "miss"
    again = _ask(serve_stack, "what is the capital city of France")
    assert again.headers["x-conductor-cache"] == "semantic", again.headers
    assert 0.9 <= float(again.headers["x-conductor-cache-similarity"]) < 1.0
    # The echo engine repeats its prompt: the answer is the first prompt's, so it came from the cache.
    assert again.json()["choices"][0]["message"]["content"] == "echo: What is the capital city of France?"
    other = _ask(serve_stack, "How tall is Mount Everest?")
    assert other.headers["x-conductor-cache"] == "miss"
    someone_else = _ask(serve_stack, "what is the capital city of France", key=OTHER_KEY)
    assert someone_else.headers["x-conductor-cache"] == "miss"  # one user's answers are never another's
    sampled = _ask(serve_stack, "what is the capital city of France", temperature=0.8)
    assert "x-conductor-cache" not in sampled.headers  # temperature > 0 is meant to vary: not cached
    with serve_stack.http() as h:
        metrics = h.get("/metrics").text
    assert 'conductor_cache_requests_total{model="semantic-group",outcome="semantic"}' in metrics


# --- streams and the caches -------------------------------------------------------------------------------------
def _pieces(whole: dict) -> list[dict]:
    """`whole` as an engine streams it: text and a tool call's arguments in pieces, logprobs a token a chunk, the
    finish in its own chunk and the usage in a last chunk without choices."""
    head = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": "m"}
    msg, lps = whole["choices"][0]["message"], whole["choices"][0]["logprobs"]["content"]
    call = msg["tool_calls"][0]
    deltas = [{"role": "assistant", "content": ""}, {"content": "Let me "}, {"content": "look."},
              {"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}]
    chunks = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None,
                                    "logprobs": {"content": [lps[i]]} if i < len(lps) else None}]}
              for i, d in enumerate(deltas)]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls", "logprobs": None}]})
    return chunks + [{**head, "choices": [], "usage": whole["usage"]}]


WHOLE = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
         "choices": [{"index": 0, "finish_reason": "tool_calls",
                      "logprobs": {"content": [{"token": "Let", "logprob": -0.1, "bytes": None, "top_logprobs": []},
                                               {"token": " me", "logprob": -0.2, "bytes": None, "top_logprobs": []}]},
                      "message": {"role": "assistant", "content": "Let me look.", "refusal": None,
                                  "tool_calls": [{"id": "call_1", "type": "function", "function": {
                                      "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 11, "total_tokens": 20}}


def test_a_stream_put_together_is_its_whole_answer_and_a_whole_answer_streams_back():
    from apps.gateway.openai_routes import conform
    from apps.gateway.stream_cache import StreamAssembler, as_chunks

    def assembled(chunks: list[dict], endpoint: str = "chat") -> dict | None:
        asm = StreamAssembler(endpoint)
        for c in chunks:
            asm.add(c)
        found = asm.whole()
        return found if found is None else conform(found, endpoint)

    assert assembled(_pieces(WHOLE)) == WHOLE
    assert assembled(as_chunks(WHOLE, "chat", with_usage=True)) == WHOLE  # the replay is the same answer again
    replay = as_chunks(WHOLE, "chat", with_usage=False)
    assert [c["choices"][0]["finish_reason"] for c in replay] == [None, "tool_calls"] and "usage" not in replay[-1]
    assert replay[0]["object"] == "chat.completion.chunk" and replay[0]["choices"][0]["delta"]["tool_calls"][0][
        "index"] == 0
    assert assembled(_pieces(WHOLE)[:-2] + _pieces(WHOLE)[-1:]) is None  # never finished: cut short
    assert assembled(_pieces(WHOLE)[:-1]) is None  # no usage: a cached answer could not be charged
    text = {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m", "usage": WHOLE["usage"],
            "choices": [{"index": 0, "text": "Paris.", "finish_reason": "stop",
                         "logprobs": {"tokens": ["Paris", "."], "token_logprobs": [-0.1, -0.3],
                                      "top_logprobs": [None, None], "text_offset": [0, 5]}}]}
    head = {k: text[k] for k in ("id", "object", "created", "model")}
    pieces = [{**head, "choices": [{"index": 0, "text": t, "finish_reason": f, "logprobs": {
        "tokens": [t], "token_logprobs": [lp], "top_logprobs": [None], "text_offset": [o]}}]}
              for t, lp, o, f in (("Paris", -0.1, 0, None), (".", -0.3, 5, "stop"))]
    assert assembled(pieces + [{**head, "choices": [], "usage": text["usage"]}], "completions") == text
    assert assembled(as_chunks(text, "completions", True), "completions") == text


def _streamed_text(response) -> str:
    return "".join(c.choices[0].delta.content or "" for c in response if c.choices)


def test_a_greedy_stream_is_cached_and_a_cached_answer_is_streamed(serve_stack):
    client = serve_stack.client()
    ask = {"model": "echo", "temperature": 0, "max_tokens": 16,
           "messages": [{"role": "user", "content": "stream me once please"}]}
    first = client.chat.completions.with_raw_response.create(**ask, stream=True)
    assert first.headers["x-conductor-cache"] == "miss" and _streamed_text(first.parse()) == \
        "echo: stream me once please"
    again = client.chat.completions.with_raw_response.create(**ask, stream=True,
                                                             stream_options={"include_usage": True})
    assert again.headers["x-conductor-cache"] == "hit"
    chunks = list(again.parse())
    assert _streamed_text(chunks) == "echo: stream me once please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 5 and not chunks[-1].choices  # asked for, as OpenAI sends it
    whole = client.chat.completions.with_raw_response.create(**ask)
    assert whole.headers["x-conductor-cache"] == "hit"
    assert whole.parse().choices[0].message.content == "echo: stream me once please"
    assert whole.parse().usage.completion_tokens == 5
    # The other way round: asked whole, then streamed.
    other = {**ask, "messages": [{"role": "user", "content": "whole first then streamed"}]}
    assert client.chat.completions.with_raw_response.create(**other).headers["x-conductor-cache"] == "miss"
    streamed = client.chat.completions.with_raw_response.create(**other, stream=True)
    assert streamed.headers["x-conductor-cache"] == "hit"
    assert _streamed_text(streamed.parse()) == "echo: whole first then streamed"
    # `Cache-Control: no-cache` asks for a fresh answer; another user never gets this one's.
    fresh = client.chat.completions.with_raw_response.create(**ask, stream=True,
                                                             extra_headers={"cache-control": "no-cache"})
    assert fresh.headers["x-conductor-cache"] == "miss" and _streamed_text(fresh.parse())
    from tests.stack import OTHER_KEY

    with serve_stack.http(OTHER_KEY) as h:
        assert h.post("/v1/chat/completions", json={**ask, "stream": True}).headers["x-conductor-cache"] == "miss"


def test_a_stream_cut_short_is_not_cached(serve_stack):
    words = " ".join(f"w{i}" for i in range(16))
    body = {"model": "echo-drip", "temperature": 0, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": words}]}  # 17 words dripped over 4 s
    received = 0
    with serve_stack.http() as h, h.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["x-conductor-cache"] == "miss"
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                received += 1
                if received == 3:
                    break  # the client leaves with the stream half sent
    with serve_stack.http() as h:
        whole = h.post("/v1/chat/completions", json={**body, "stream": False})
    assert whole.headers["x-conductor-cache"] == "miss"  # not the three words the first client saw
    assert whole.json()["choices"][0]["message"]["content"] == "echo: " + words


def test_no_store_keeps_an_answer_out_of_the_cache(serve_stack):
    with serve_stack.http() as h:
        body = {"model": "echo", "temperature": 0, "messages": [{"role": "user", "content": "do not keep this"}]}
        first = h.post("/v1/chat/completions", json=body, headers={"cache-control": "no-store"})
        again = h.post("/v1/chat/completions", json=body)
    assert first.status_code == again.status_code == 200
    assert again.headers["x-conductor-cache"] == "miss"
