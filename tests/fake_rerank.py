"""A hosted rerank API stand-in (Cohere/Jina protocol) for the edge a test cannot reach: a real HTTP server."""

from __future__ import annotations


class FakeRerankAPI:
    """A real HTTP server standing in for a hosted rerank API (the edge a test cannot reach): it answers each POST
    with `reply(body)` and records what it was sent."""

    def __init__(self, reply):
        import threading

        from apps.agent.local_chat_server import json_http_server

        self.sent: list[tuple[str, dict, str]] = []

        def answer(body, path, auth):
            self.sent.append((path, body, auth or ""))
            return reply(body)

        self.server = json_http_server(answer)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
