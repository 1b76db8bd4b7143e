"""Any local Hugging Face causal-LM directory (or hub id, for users with a network), on CPU or CUDA.

This is how Conductor serves models it trains itself (`conductor export` writes a Llama-format dir). Generation
runs in a worker thread with a TextIteratorStreamer; one generation at a time per replica (scale with replicas).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from deployments.engines.base import Engine, EngineError, chat_chunk, chat_response, new_id
from deployments.packaged import resolve_model_spec


class TransformersEngine(Engine):
    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = resolve_model_spec(self.config.model or "")
        if not spec:
            raise ValueError(f"backend {self.config.name!r}: the transformers engine needs `model` (a dir or hub id)")
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.config.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        self.device, self.dtype = device, getattr(torch, dtype_name)
        torch.set_num_threads(self.config.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(spec)
        self.model = AutoModelForCausalLM.from_pretrained(spec, dtype=self.dtype).to(device).eval()
        self._lock = threading.Lock()

    # --- prompt building ------------------------------------------------------------------------------------
    def _chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        msgs = [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        # A model with no template (e.g. a base model): a plain transcript is the honest fallback.
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, prompt: str, max_new: int) -> Any:
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        if ids.shape[1] + max_new > self.config.context_length:
            raise EngineError(400, f"prompt ({ids.shape[1]} tokens) + max_tokens ({max_new}) exceeds the context "
                                   f"length of {self.config.context_length}", "invalid_request_error")
        return ids.to(self.device)

    def _gen_kwargs(self, request: dict[str, Any], ids: Any, max_new: int) -> dict[str, Any]:
        import torch

        temp = float(request.get("temperature") if request.get("temperature") is not None else 1.0)
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_new,
                              "do_sample": temp > 0, "pad_token_id": self.tokenizer.pad_token_id
                              if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id}
        if temp > 0:
            kw.update(temperature=temp, top_p=float(request.get("top_p") or 1.0))
        if request.get("ignore_eos"):  # same knob as llama.cpp / vLLM: generate exactly max_tokens (benchmarks)
            kw["min_new_tokens"] = max_new
        if request.get("seed") is not None:
            torch.manual_seed(int(request["seed"]))
        constraint = self._format_constraint(request.get("response_format"), int(ids.shape[1]))
        if constraint is not None:
            kw["prefix_allowed_tokens_fn"] = constraint
        return kw

    def _format_constraint(self, fmt: dict[str, Any] | None, prompt_len: int) -> Any:
        """`response_format` as constrained decoding (deployments/engines/constrained.py): only tokens that keep
        the output valid JSON for the schema are allowed, as llama.cpp's grammars do. Tool calls ride on this."""
        kind = (fmt or {}).get("type")
        if kind not in ("json_schema", "json_object"):
            return None
        from deployments.engines.constrained import allowed_tokens_fn, tokenizer_data

        schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if getattr(self, "_vocab", None) is None:  # the vocabulary's table, built once per replica
            self._vocab = tokenizer_data(self.tokenizer)
        try:
            return allowed_tokens_fn(self._vocab, schema, prompt_len)
        except Exception as e:  # noqa: BLE001 - a schema the enforcer cannot follow is the caller's to change
            raise EngineError(400, f"the model cannot follow this response_format: {str(e)[:200]}",
                              "invalid_request_error") from None

    # --- generation -----------------------------------------------------------------------------------------
    def _generate_stream(self, prompt: str, request: dict[str, Any]):  # -> (iterator of text, stats dict)
        from transformers import TextIteratorStreamer

        max_new = int(request.get("max_tokens") or 256)
        ids = self._encode(prompt, max_new)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stats = {"prompt_tokens": int(ids.shape[1]), "completion_tokens": 0, "finish": "stop"}

        def run() -> None:
            import torch

            with self._lock, torch.inference_mode():
                out = self.model.generate(**self._gen_kwargs(request, ids, max_new), streamer=streamer)
            n = int(out.shape[1] - ids.shape[1])
            stats["completion_tokens"] = n
            stats["finish"] = "length" if n >= max_new else "stop"

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return streamer, stats, thread

    async def _stream_text(self, prompt: str, request: dict[str, Any], stats: dict[str, Any]) -> AsyncIterator[str]:
        streamer, run_stats, thread = self._generate_stream(prompt, request)
        it = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, it, None)
            if piece is None:
                break
            if piece:
                yield piece
        await asyncio.to_thread(thread.join)
        stats.update(run_stats)  # per request: concurrent requests each get their own numbers

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        prompt = self._chat_prompt(request.get("messages") or [])
        s: dict[str, Any] = {}
        text = "".join([p async for p in self._stream_text(prompt, request, s)])
        return chat_response(self.config.name, text, s["finish"], s["prompt_tokens"], s["completion_tokens"])

    async def chat_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        prompt = self._chat_prompt(request.get("messages") or [])
        cid = new_id()
        yield chat_chunk(cid, self.config.name, {"role": "assistant", "content": ""})
        s: dict[str, Any] = {}
        async for piece in self._stream_text(prompt, request, s):
            yield chat_chunk(cid, self.config.name, {"content": piece})
        yield chat_chunk(cid, self.config.name, {}, s["finish"],
                         {"prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
                          "total_tokens": s["prompt_tokens"] + s["completion_tokens"]})

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        prompt = request.get("prompt") or ""
        if isinstance(prompt, list):
            prompt = "".join(map(str, prompt))
        s: dict[str, Any] = {}
        text = "".join([p async for p in self._stream_text(prompt, request, s)])
        return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": self.config.name,
                "choices": [{"index": 0, "text": text, "finish_reason": s["finish"], "logprobs": None}],
                "usage": {"prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
                          "total_tokens": s["prompt_tokens"] + s["completion_tokens"]}}

    async def check_health(self) -> None:
        if getattr(self, "model", None) is None:
            raise EngineError(503, "transformers engine not loaded")


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
