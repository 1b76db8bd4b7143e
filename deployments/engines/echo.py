"""A deterministic engine with no model: repeats the last user message word by word.

It is a registered engine like the others, so tests can run the real Serve/gateway stack around it and make it
slow (`options.delay_s`) or fail (`options.fail: true`) on purpose. Not for production use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from deployments.engines.base import Engine, EngineError, chat_chunk, chat_response, new_id


class EchoEngine(Engine):
    async def start(self) -> None:
        self.fail = bool(self.config.options.get("fail", False))
        self.delay_s = float(self.config.options.get("delay_s", 0.0))

    def _reply(self, request: dict[str, Any]) -> tuple[list[str], int]:
        if self.fail:
            raise EngineError(503, "echo engine configured to fail")
        msgs = request.get("messages") or [{"role": "user", "content": request.get("prompt", "")}]
        last = next((m for m in reversed(msgs) if m.get("role") == "user"), msgs[-1])
        content = last.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        words = ("echo: " + str(content)).split()
        limit = int(request.get("max_tokens") or 256)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in msgs)
        return words[:limit], prompt_tokens

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        words, n_in = self._reply(request)
        await asyncio.sleep(self.delay_s)
        return chat_response(self.config.name, " ".join(words), "stop", n_in, len(words))

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        resp = await self.chat(request)
        choice = resp["choices"][0]
        resp.update(object="text_completion",
                    choices=[{"index": 0, "text": choice["message"]["content"], "finish_reason": "stop"}])
        return resp

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        words, n_in = self._reply(request)
        cid = new_id()
        yield chat_chunk(cid, self.config.name, {"role": "assistant", "content": ""})
        for i, w in enumerate(words):
            await asyncio.sleep(self.delay_s / max(1, len(words)))
            yield chat_chunk(cid, self.config.name, {"content": w if i == 0 else " " + w})
        yield chat_chunk(cid, self.config.name, {}, "stop",
                         {"prompt_tokens": n_in, "completion_tokens": len(words), "total_tokens": n_in + len(words)})

    async def check_health(self) -> None:
        if self.fail:
            raise EngineError(503, "echo engine configured to fail")
