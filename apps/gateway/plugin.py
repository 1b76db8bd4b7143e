"""The gateway's declaration in the app registry (cluster/registry.py): the OpenAI API and the UI at "/", the
key, rollout and spend commands, and the Keys & spend tab."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("gateway", serve="apps.gateway.app:build_app", route_prefix="/",
                          commands={"keys": "apps.gateway.keys_cli:keys", "spend": "apps.gateway.keys_cli:spend",
                                    "rollout": "apps.gateway.keys_cli:rollout"},
                          tab=("Keys & spend", "apps.gateway.keys_ui:build_tab"))]
