"""The Responses API through the real Serve stack, with the official openai SDK's `client.responses` unchanged."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = [pytest.mark.serve]

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_create_whole_and_streamed(serve_stack):
    client = serve_stack.client()
    resp = client.responses.create(model="smollm2", input="Say hello.", instructions="Be brief.",
                                   max_output_tokens=16, temperature=0)
    assert resp.object == "response" and resp.status in ("completed", "incomplete")
    assert resp.output_text and resp.output[0].type == "message"
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0

    events = list(client.responses.create(model="smollm2", input="Count to three.", max_output_tokens=16,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_tools_and_previous_response_id(serve_stack, scripted_chat):
    scripted_chat.turns = [{"tool_calls": [("get_weather", {"city": "Oslo"})]}, {"content": "Sunny in Oslo."}]
    client = serve_stack.client()
    first = client.responses.create(model="scripted", input="Weather in Oslo?", tools=[WEATHER])
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    second = client.responses.create(model="scripted", previous_response_id=first.id, tools=[WEATHER],
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny, 21 C"}])
    assert second.output_text == "Sunny in Oslo." and second.previous_response_id == first.id
    sent = scripted_chat.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]  # the earlier turn came back from the store
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["content"] == "sunny, 21 C"


def test_other_users_responses_and_bad_requests_are_refused(serve_stack, scripted_chat):
    from tests.stack import OTHER_KEY

    scripted_chat.turns = [{"content": "noted"}]
    mine = serve_stack.client().responses.create(model="scripted", input="remember 42")
    other = openai.OpenAI(base_url=serve_stack.base_url + "/v1", api_key=OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="scripted", input="what did I say?", previous_response_id=mine.id)
    client = serve_stack.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="smollm2", input="x", extra_body={"bogus": 1})
    assert "bogus" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="smollm2", input=[{"type": "function_call_output", "output": "x"}])
