"""Real MCP servers for the tests, made with the SDK's MCPServer.

`python -m tests.agent.mcp_servers` serves the weather tools over stdio (a command an agent starts);
`HTTPServer(token)` serves them over streamable HTTP on a loopback port, behind a bearer token, with one tool whose
answer is garbled on the wire (a malformed result). Every call is appended to $MCP_CALL_LOG when it is set, so a
test can tell whether a call reached the server at all.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from tests.conftest import free_port


def _log(tool: str, args: dict[str, Any]) -> None:
    path = os.environ.get("MCP_CALL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")


def weather_server() -> Any:
    from mcp.server import MCPServer

    server = MCPServer("weather")

    @server.tool()
    def forecast(city: str, days: int = 1) -> str:
        """The weather forecast for a city."""
        _log("forecast", {"city": city, "days": days})
        return f"sunny in {city} for {days} day(s)"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        _log("add", {"a": a, "b": b})
        return a + b

    @server.tool()
    async def hang(seconds: float = 120.0) -> str:
        """Answers far too late."""
        import anyio

        _log("hang", {"seconds": seconds})
        await anyio.sleep(seconds)
        return "late"

    @server.tool()
    def explode() -> str:
        """Always fails."""
        from mcp.server.mcpserver.exceptions import ToolError

        _log("explode", {})
        raise ToolError("the barometer broke")

    @server.tool()
    def garbled() -> str:
        """Its answer is mangled on the wire by HTTPServer."""
        _log("garbled", {})
        return "fine"

    @server.tool()
    def evacuate(city: str) -> str:
        """Order an evacuation (dangerous)."""
        _log("evacuate", {"city": city})
        return f"evacuating {city}"

    return server


class HTTPServer:
    """The weather tools over streamable HTTP on loopback, requiring `Authorization: Bearer <token>`."""

    def __init__(self, token: str = "mcp-secret"):
        import uvicorn

        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        app = weather_server().streamable_http_app(stateless_http=True, json_response=True)
        self._server = uvicorn.Server(uvicorn.Config(self._guard(app), host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _guard(self, app: Any) -> Any:
        async def asgi(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                auth = dict(scope["headers"]).get(b"authorization", b"").decode()
                if auth != f"Bearer {self.token}":
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"missing or wrong token"})
                    return
                body = b""
                more = True
                chunks = []
                while more:
                    msg = await receive()
                    chunks.append(msg.get("body", b""))
                    more = msg.get("more_body", False)
                body = b"".join(chunks)
                garble = b'"garbled"' in body and b"tools/call" in body

                async def replay() -> dict:
                    return {"type": "http.request", "body": body, "more_body": False}

                async def mangle(message: dict) -> None:
                    if garble and message["type"] == "http.response.body" and message.get("body"):
                        doc = json.loads(message["body"])
                        doc["result"] = {"content": "this is not a list of content blocks", "isError": "maybe"}
                        message = {**message, "body": json.dumps(doc).encode()}
                    if garble and message["type"] == "http.response.start":
                        message = {**message, "headers": [h for h in message["headers"]
                                                          if h[0].lower() != b"content-length"]}
                    await send(message)

                return await app(scope, replay, mangle)
            return await app(scope, receive, send)

        return asgi

    def __enter__(self) -> "HTTPServer":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


if __name__ == "__main__":
    import anyio

    anyio.run(weather_server().run_stdio_async)
