"""The agent's declaration in the app registry (cluster/registry.py)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("agent", serve="apps.agent.serve:build_app", route_prefix="/v1/agent", section="agent",
                          commands={"agent": "apps.agent.cli:agent"}, tab=("Agent", "apps.agent.ui:build_tab"))]
