"""A minimal OpenAI-compatible chat endpoint over an in-process llama.cpp (xllamacpp) model.

For running the agent (tests, the benchmark, `conductor agent --local`) without the served stack: it answers
POST /v1/chat/completions (non-streaming) on a loopback port, passing `response_format` json_schema through to
llama.cpp's constrained decoding, and serving `tools` as the gateway does (deployments/engines/tool_calls.py). The production path is Conductor's gateway; this is deliberately tiny.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


def load_llama(gguf: str | Path | None = None, n_ctx: int = 4096, threads: int = 2):
    import xllamacpp

    if gguf is None:
        from deployments.packaged import smollm2_gguf

        gguf = smollm2_gguf()
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = n_ctx
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    return xllamacpp.Server(p)


def json_http_server(answer: Callable[[dict[str, Any], str, str | None], tuple[int, dict[str, Any]]]
                     ) -> ThreadingHTTPServer:
    """A loopback HTTP server on a free port: each POST's JSON body goes to `answer(body, path, authorization)`,
    whose (status, payload) is sent back as JSON. Start it with `serve_forever` in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            except ValueError as e:
                status, payload = 400, {"error": {"message": f"request body is not JSON: {e}"}}
            else:
                status, payload = answer(body, self.path, self.headers.get("authorization"))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


class LocalChatServer:
    """`with LocalChatServer() as s: ChatModel(s.base_url, None, "smollm2")`."""

    def __init__(self, gguf: str | Path | None = None, model_id: str = "smollm2", n_ctx: int = 4096):
        self.llama = load_llama(gguf, n_ctx)
        self.model_id = model_id
        self._lock = threading.Lock()  # one generation at a time: llama.cpp slots are not the point here
        def answer(body: dict[str, Any], _path: str, _auth: str | None) -> tuple[int, dict[str, Any]]:
            try:
                return 200, self.chat(body)
            except (ValueError, RuntimeError, KeyError, TypeError) as e:
                return 400, {"error": {"message": f"{type(e).__name__}: {e}"}}

        self.httpd = json_http_server(answer)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.httpd or "messages" not in body:
            raise ValueError("messages is required")
        from deployments.engines.tool_calls import plan_for

        req = {k: v for k, v in body.items() if k not in ("model", "stream")}
        plan = plan_for(req)  # `tools` become OpenAI tool_calls, as the gateway serves them
        with self._lock:
            out = self.llama.handle_chat_completions(req if plan is None else plan.engine_request)
        if isinstance(out, str):
            out = json.loads(out)
        if "error" in out:
            raise RuntimeError(str(out["error"]))
        out["model"] = self.model_id
        return out if plan is None else plan.finish(out)

    def __enter__(self) -> "LocalChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
