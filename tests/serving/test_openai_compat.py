"""OpenAI compatibility as real clients use it, through the served stack with the packaged model (SmolLM2 on
llama.cpp): tool calls (whole, streamed, round trip) from the official `openai` SDK, LangChain's ChatOpenAI and
LlamaIndex's OpenAILike, and every response checked against the fields OpenAI's reference marks required."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from tests.serving import openai_schema as S

pytestmark = pytest.mark.serve

MULTIPLY = {"type": "function", "function": {
    "name": "multiply", "description": "Multiply two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"], "additionalProperties": False}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is 17 times 23? Use the multiply tool."}]


def _valid_call(call, tool=MULTIPLY) -> dict:
    assert call.type == "function" and call.id and call.function.name == tool["function"]["name"]
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "multiply"}}])
def test_tool_calls_from_the_packaged_model(serve_stack, choice):
    resp = serve_stack.client().chat.completions.create(model="smollm2", messages=ASK, tools=[MULTIPLY, WEATHER],
                                                        tool_choice=choice, max_tokens=96, temperature=0)
    S.ChatCompletion.model_validate(resp.model_dump())
    choice0 = resp.choices[0]
    assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
    assert _valid_call(choice0.message.tool_calls[0]) == {"a": 17, "b": 23}


def test_a_named_choice_calls_that_tool_only(serve_stack):
    resp = serve_stack.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Is it raining in Paris?"}], tools=[MULTIPLY, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64, temperature=0)
    calls = resp.choices[0].message.tool_calls
    assert calls and all(c.function.name == "get_weather" for c in calls)
    _valid_call(calls[0], WEATHER)


def test_no_parallel_calls_when_asked_for_one(serve_stack):
    resp = serve_stack.client().chat.completions.create(model="smollm2", messages=ASK, tools=[MULTIPLY, WEATHER],
                                                        tool_choice="required", parallel_tool_calls=False,
                                                        max_tokens=96, temperature=0)
    assert len(resp.choices[0].message.tool_calls) == 1


def test_tool_calls_stream_as_deltas(serve_stack):
    stream = serve_stack.client().chat.completions.create(
        model="smollm2", messages=ASK, tools=[MULTIPLY], tool_choice="required", max_tokens=96, temperature=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    for c in chunks:
        S.ChatCompletionChunk.model_validate(c.model_dump())
    deltas = [d for c in chunks for ch in c.choices for d in ch.delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "multiply" and deltas[0].type == "function"
    args = "".join(d.function.arguments or "" for d in deltas if d.index == 0)
    assert json.loads(args) == {"a": 17, "b": 23}
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["tool_calls"]
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []


def test_a_tool_round_trip_continues_the_conversation(serve_stack):
    client = serve_stack.client()
    first = client.chat.completions.create(model="smollm2", messages=ASK, tools=[MULTIPLY], tool_choice="required",
                                           max_tokens=96, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    args = _valid_call(call)
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": str(args["a"] * args["b"])}]
    second = client.chat.completions.create(model="smollm2", messages=messages, tools=[MULTIPLY], max_tokens=96,
                                            temperature=0)
    S.ChatCompletion.model_validate(second.model_dump())
    message = second.choices[0].message
    assert message.content or message.tool_calls  # an answer, or another call: both are the conversation going on


@pytest.mark.parametrize("body, where", [
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "391"}]}, "tool_call_id"),
    ({"messages": ASK, "tools": [MULTIPLY], "tool_choice": {"type": "function", "function": {"name": "divide"}}},
     "divide"),
    ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
     "JSON Schema"),
    ({"messages": ASK, "n": 2, "stream": True}, "stream"),
    ({"messages": ASK, "tool_choice": "required", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}}}]},
     "cannot run this request"),  # valid JSON Schema that llama.cpp cannot make a grammar of: still the caller's
])
def test_tool_mistakes_are_4xx_and_no_strike(serve_stack, body, where):
    with serve_stack.http() as c:
        for _ in range(3):  # the test stack's breaker opens on one strike
            r = c.post("/v1/chat/completions", json={"model": "smollm2", "max_tokens": 8, **body})
            assert r.status_code == 400 and where in r.json()["error"]["message"], r.text
            S.Error.model_validate(r.json())
        assert c.get("/v1/status").json()["router"]["smollm2"]["smollm2-llamacpp"]["breaker"] == "closed"


def test_n_choices(serve_stack):
    resp = serve_stack.client().chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                                                        n=2, max_tokens=8, temperature=0.8, seed=1)
    S.ChatCompletion.model_validate(resp.model_dump())
    assert [c.index for c in resp.choices] == [0, 1] and resp.usage.completion_tokens >= 2


def test_every_route_matches_openais_required_fields(serve_stack):
    """Raw JSON (not an SDK's lenient parse) of each route, whole and streamed, 404s included."""
    with serve_stack.http(timeout=300) as c:
        S.ModelList.model_validate(c.get("/v1/models").json())
        S.Model.model_validate(c.get("/v1/models/smollm2").json())
        for path in ("/v1/models/nope", "/v1/nope"):
            r = c.get(path)
            assert r.status_code == 404
            S.Error.model_validate(r.json())
        chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        S.ChatCompletion.model_validate(c.post("/v1/chat/completions", json=chat).json())
        S.Completion.model_validate(c.post("/v1/completions", json={"model": "smollm2", "prompt": "Hi",
                                                                   "max_tokens": 8}).json())
        S.EmbeddingList.model_validate(c.post("/v1/embeddings", json={"input": ["a", "b"]}).json())
        for route, body, model in [("/v1/chat/completions", chat, S.ChatCompletionChunk),
                                   ("/v1/completions", {"model": "smollm2", "prompt": "Hi", "max_tokens": 8},
                                    S.Completion)]:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            events = _sse(c, route, body)
            for ev in events:
                model.model_validate(ev)
            assert events[-1]["usage"]["total_tokens"] > 0
            plain = _sse(c, route, {k: v for k, v in body.items() if k != "stream_options"})
            assert plain and not any("usage" in ev for ev in plain)  # the usage chunk only when asked for


def _sse(c: httpx.Client, path: str, body: dict) -> list[dict]:
    out = []
    with c.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and line.strip() != "data: [DONE]":
                out.append(json.loads(line[5:]))
    return out


# --- the frameworks, unchanged ----------------------------------------------------------------------------------
def _chat_openai(serve_stack, **kw):
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=serve_stack.base_url + "/v1", api_key=serve_stack.api_key, model="smollm2",
                      temperature=0, max_tokens=96, **kw)


def test_langchain_bind_tools_round_trip(serve_stack):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    llm = _chat_openai(serve_stack).bind_tools([multiply], tool_choice="required")
    question = HumanMessage("What is 17 times 23? Use the multiply tool.")
    ai = llm.invoke([question])
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "multiply"
    result = multiply.invoke(ai.tool_calls[0])  # LangChain runs the tool from the call, as an agent would
    assert isinstance(result, ToolMessage) and result.tool_call_id == ai.tool_calls[0]["id"]
    assert ai.tool_calls[0]["args"] == {"a": 17, "b": 23} and result.content == "391"
    final = _chat_openai(serve_stack).bind_tools([multiply]).invoke([question, ai, result])
    assert final.content or final.tool_calls
    streamed = list(_chat_openai(serve_stack).bind_tools([multiply], tool_choice="required").stream([question]))
    merged = streamed[0]
    for piece in streamed[1:]:
        merged = merged + piece
    assert merged.tool_calls and merged.tool_calls[0]["args"] == {"a": 17, "b": 23}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(serve_stack, method):
    from pydantic import BaseModel

    class Country(BaseModel):
        name: str

    class City(BaseModel):  # nested: its schema has $defs and $ref, as pydantic writes them
        name: str
        country: Country

    out = _chat_openai(serve_stack).with_structured_output(City, method=method).invoke(
        "Name the capital city of France and its country.")
    assert isinstance(out, City) and out.name and out.country.name


def test_llamaindex_openai_like(serve_stack):
    pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="smollm2", api_base=serve_stack.base_url + "/v1", api_key=serve_stack.api_key,
                     is_chat_model=True, is_function_calling_model=True, max_tokens=24, temperature=0,
                     context_window=2048)
    assert llm.complete("The capital of France is").text.strip()
    assert llm.chat([ChatMessage(role="user", content="Say hi.")]).message.content.strip()
    assert "".join(r.delta or "" for r in llm.stream_complete("Count: one, two,")).strip()


def test_the_readmes_tool_call_examples_run_as_written(serve_stack):
    """The README's Python snippets for the API, run as written against the test stack (its address and key)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "127.0.0.1:8000/v1" in b]
    assert len(blocks) == 3, "the quickstart's client, and the Serving API's openai and LangChain tool calls"
    for block in blocks:
        code = block.replace("http://127.0.0.1:8000", serve_stack.base_url).replace(
            '"unused-on-loopback"', repr(serve_stack.api_key))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "print(" not in block or r.stdout.strip(), block
    assert "391" in r.stdout and "multiply" in r.stdout  # the LangChain one ran the tool from the model's call


def test_a_call_cut_off_by_max_tokens_is_length_not_an_error(serve_stack):
    resp = serve_stack.client().chat.completions.create(model="smollm2", messages=ASK, tools=[MULTIPLY],
                                                        tool_choice="required", max_tokens=12, temperature=0)
    S.ChatCompletion.model_validate(resp.model_dump())
    message = resp.choices[0]
    assert message.finish_reason == "length" and (message.message.tool_calls or message.message.content)


def test_sdk_models_retrieve_and_not_found(serve_stack):
    import openai

    client = serve_stack.client()
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"  # the SDK reads OpenAI's error shape
