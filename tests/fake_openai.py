"""A real HTTP server speaking the OpenAI chat protocol: the stand-in for a hosted API we cannot reach.

It answers deterministically ("hosted <name>: <last user message>"), can be told to fail or to be slow
(`POST /control`),
and counts the requests it received, so tests can see failover and breakers from the outside.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.conftest import free_port


class FakeOpenAI:
    def __init__(self, name: str):
        self.name = name
        self.fail = False
        self.leak = False
        self.delay_s = 0.0
        self.word_delay_s = 0.0  # between a stream's words, so a client can leave in the middle of one
        self.words_streamed = 0
        self.hits = 0
        self.reply: str | None = None  # a fixed answer (a model that says something specific), else the echo
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.app = self._build()
        self._server: uvicorn.Server | None = None

    def _reply(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        return f"hosted {self.name}: {last.get('content', body.get('prompt', ''))}"

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/control")
        async def control(req: Request) -> dict[str, Any]:
            body = await req.json()
            self.fail = bool(body.get("fail"))
            self.leak = bool(body.get("leak"))
            self.delay_s = float(body.get("delay_s", 0.0))
            return {"fail": self.fail, "leak": self.leak, "hits": self.hits}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": f"fake-{self.name}", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(req: Request):  # type: ignore[no-untyped-def]
            self.hits += 1
            body = await req.json()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail:
                return JSONResponse({"error": {"message": "upstream overloaded", "type": "server_error"}}, 503)
            if self.leak:  # as real APIs do: the key (and other credentials) echoed in the error text
                echoed = req.headers.get("authorization", "")[7:]
                leak = f"Incorrect API key provided: {echoed}. Session tok_live_0123456789abcdef."
                if body.get("stream"):
                    return StreamingResponse(iter([f"data: {json.dumps({'error': {'message': leak}})}\n\n"]),
                                             media_type="text/event-stream")
                return JSONResponse({"error": {"message": leak, "type": "invalid_request_error"}}, 401)
            text = self._reply(body)
            usage = {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5 + len(text.split())}
            if body.get("stream"):
                async def events():
                    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": body.get("model")}
                    for i, w in enumerate(text.split()):
                        if self.word_delay_s:
                            await asyncio.sleep(self.word_delay_s)
                            if await req.is_disconnected():  # as a real API does: a client that left stops it
                                return
                        self.words_streamed += 1
                        delta = {"content": w if i == 0 else " " + w}
                        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                                          "finish_reason": None}]}) + "\n\n"
                    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                                 "usage": usage}) + "\n\n"
                    yield "data: [DONE]\n\n"
                return StreamingResponse(events(), media_type="text/event-stream")
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model"), "usage": usage,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}

        return app

    def start(self) -> "FakeOpenAI":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        threading.Thread(target=self._server.run, daemon=True).start()
        deadline = time.time() + 20
        while not self._server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
