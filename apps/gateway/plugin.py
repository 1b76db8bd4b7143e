"""The gateway's declaration in the app registry (cluster/registry.py): the OpenAI API and the UI at "/"."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("gateway", serve="apps.gateway.app:build_app", route_prefix="/")]
