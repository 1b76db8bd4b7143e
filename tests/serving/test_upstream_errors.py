"""An upstream's error text can carry our key back (hosted APIs echo it: "Incorrect API key provided: ...") or
other credentials: the error Conductor raises, and so what callers and logs see, never repeats them. Against a
real HTTP server speaking the OpenAI protocol (the hosted-API edge we cannot reach)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cluster.config import EngineConfig
from deployments.engines.base import EngineError
from deployments.engines.openai_engine import OpenAIEngine
from tests.fake_openai import FakeOpenAI

KEY = "sk-test-0123456789abcdefXYZ"


@pytest.fixture()
def leaky(monkeypatch):
    monkeypatch.setenv("LEAKY_API_KEY", KEY)
    api = FakeOpenAI("leaky").start()
    httpx.post(api.base_url.removesuffix("/v1") + "/control", json={"leak": True}, timeout=10)
    yield api
    api.stop()


def _engine(api: FakeOpenAI) -> OpenAIEngine:
    return OpenAIEngine(EngineConfig(name="leaky", engine="openai", base_url=api.base_url, model="fake",
                                     api_key_env="LEAKY_API_KEY"))


def test_upstream_errors_do_not_repeat_credentials(leaky):
    async def go() -> tuple[EngineError, EngineError]:
        engine = _engine(leaky)
        await engine.start()
        body = {"messages": [{"role": "user", "content": "hi"}]}
        try:
            with pytest.raises(EngineError) as whole:
                await engine.chat(body)
            with pytest.raises(EngineError) as streamed:
                async for _ in engine.chat_stream(body):
                    pass
            return whole.value, streamed.value
        finally:
            await engine.stop()

    whole, streamed = asyncio.run(go())
    assert leaky.hits == 2  # the key did reach the upstream, which echoed it
    for err in (whole, streamed):
        assert KEY not in err.message and "tok_live_0123456789abcdef" not in err.message, err.message
        assert "Incorrect API key provided: [redacted]" in err.message  # the reason itself survives
    assert whole.status == 502 and streamed.status == 502  # the backend's failure, not the caller's
