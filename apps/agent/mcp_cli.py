"""`conductor mcp serve`: Conductor's MCP tools over stdio, for desktop clients (Claude Desktop, IDEs).

The tools call the running Conductor server (`--url`, $CONDUCTOR_BASE_URL or the configured one) with the key in
$CONDUCTOR_API_KEY, so they act as that key's user. Nothing but the protocol is written to stdout.
"""

from __future__ import annotations

import click


@click.group("mcp")
def mcp() -> None:
    """Conductor as an MCP server."""


@mcp.command("serve")
@click.option("--url", default=None, help="The Conductor server the tools call (default: found as the CLI does).")
def serve(url: str | None) -> None:
    """Serve Conductor's tools over stdio (MCP)."""
    import logging
    import sys

    import anyio

    from apps.agent.mcp_server import build_mcp
    from apps.client import ConductorClient, cli_api_key, cli_base_url

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout is the protocol's
    base, key = cli_base_url(url), cli_api_key()
    server = build_mcp(lambda: ConductorClient(base, key, timeout=600))
    anyio.run(server.run_stdio_async)
