"""The agent's declarations in the app registry (cluster/registry.py): its runs API and tab, and Conductor's MCP
server (its tools for MCP clients, at /mcp and `conductor mcp serve`)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [
    AppDecl("agent", serve="apps.agent.serve:build_app", route_prefix="/v1/agent", section="agent",
            commands={"agent": "apps.agent.cli:agent"}, tab=("Agent", "apps.agent.ui:build_tab")),
    AppDecl("mcp", serve="apps.agent.mcp_server:build_app", route_prefix="/mcp", section="agent",
            commands={"mcp": "apps.agent.mcp_cli:mcp"}),
]
