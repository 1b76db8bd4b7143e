"""Engines called directly (no Serve): the same objects the LLM deployment hosts."""

from __future__ import annotations

import asyncio
import json

import pytest

from cluster.config import EngineConfig
from deployments.engines.base import EngineError, engine_class, register_engine


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def llamacpp():
    eng = engine_class("llamacpp")(EngineConfig(name="t", engine="llamacpp", model="packaged:smollm2"))
    run(eng.start())
    return eng


def test_llamacpp_chat_stream_and_usage(llamacpp):
    async def go():
        chunks = [c async for c in llamacpp.chat_stream({"messages": [{"role": "user", "content": "Hi"}],
                                                         "max_tokens": 12, "temperature": 0})]
        whole = await llamacpp.chat({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12,
                                     "temperature": 0})
        return chunks, whole

    chunks, whole = run(go())
    text = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices"))
    assert text == whole["choices"][0]["message"]["content"]
    assert any(c.get("usage") for c in chunks)  # the final chunk carries usage for metrics
    assert whole["usage"]["completion_tokens"] <= 12
    assert not any("timings" in c for c in [*chunks, whole])  # OpenAI's objects only: llama.cpp's extras stay in


def test_llamacpp_json_schema_constrains_output(llamacpp):
    schema = {"type": "object", "properties": {"tool": {"type": "string", "enum": ["calculator"]},
                                               "input": {"type": "string"}}, "required": ["tool", "input"]}
    out = run(llamacpp.chat({"messages": [{"role": "user", "content": "What is 17 times 23? Use the calculator."}],
                             "max_tokens": 64, "temperature": 0,
                             "response_format": {"type": "json_schema", "json_schema": {"name": "step", "schema": schema}}}))
    step = json.loads(out["choices"][0]["message"]["content"])
    assert step["tool"] == "calculator" and step["input"]


def test_llamacpp_prompt_over_context_is_client_error(llamacpp):
    with pytest.raises(EngineError) as e:
        run(llamacpp.chat({"messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 4}))
    assert e.value.is_client_error


def test_transformers_engine_serves_an_hf_directory(tmp_path):
    from tests.serving.tiny_hf import make_tiny_llama

    d = make_tiny_llama(tmp_path / "tiny")
    eng = engine_class("transformers")(EngineConfig(name="tf", engine="transformers", model=str(d),
                                                    context_length=128, device="cpu"))
    run(eng.start())

    async def go():
        whole = await eng.chat({"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 8,
                                "temperature": 0})
        chunks = [c async for c in eng.chat_stream({"messages": [{"role": "user", "content": "hello world"}],
                                                    "max_tokens": 8, "temperature": 0})]
        return whole, chunks

    whole, chunks = run(go())
    streamed = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks)
    assert streamed == whole["choices"][0]["message"]["content"]  # greedy: stream and whole agree
    assert 0 < whole["usage"]["completion_tokens"] <= 8
    with pytest.raises(EngineError) as e:
        run(eng.chat({"messages": [{"role": "user", "content": "hello " * 200}], "max_tokens": 8}))
    assert e.value.status == 400 and "context" in e.value.message


def test_transformers_engine_constrains_json_and_tool_calls(tmp_path):
    """Even a random-weight model returns schema-valid JSON and well-formed tool calls: the transformers engine
    decodes under the schema (deployments/engines/constrained.py), and LLMServer turns the reply into tool_calls."""
    import json

    import jsonschema

    from deployments.llm_server import LLMServer
    from tests.serving.tiny_hf import make_tiny_llama

    d = make_tiny_llama(tmp_path / "tiny", context=2048)
    server = LLMServer(EngineConfig(name="tf", engine="transformers", model=str(d), context_length=2048,
                                    device="cpu").model_dump())
    unit = {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["unit"],
            "additionalProperties": False}
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": unit}}
    ask = [{"role": "user", "content": "weather?"}]

    async def go():
        fmt = await server.chat({"messages": ask, "max_tokens": 40, "temperature": 0, "response_format": {
            "type": "json_schema", "json_schema": {"name": "u", "schema": unit}}})
        call = await server.chat({"messages": ask, "max_tokens": 120, "temperature": 0, "tools": [weather],
                                  "tool_choice": "required", "parallel_tool_calls": False})
        return fmt, call

    fmt, call = run(go())
    jsonschema.validate(json.loads(fmt["choices"][0]["message"]["content"]), unit)
    choice = call["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(tool_call["function"]["arguments"]), unit)


def test_registry_accepts_third_party_engines():
    from deployments.engines.echo import EchoEngine

    class Shouty(EchoEngine):
        async def chat(self, request):
            out = await super().chat(request)
            out["choices"][0]["message"]["content"] = out["choices"][0]["message"]["content"].upper()
            return out

    register_engine("shouty", lambda: Shouty)
    eng = engine_class("shouty")(EngineConfig(name="s", engine="echo"))
    run(eng.start())
    assert run(eng.chat({"messages": [{"role": "user", "content": "hi"}]}))["choices"][0]["message"]["content"] == "ECHO: HI"
    with pytest.raises(KeyError):
        engine_class("nope")
