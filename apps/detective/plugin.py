"""The model detective's declaration in the app registry (cluster/registry.py)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("detective", serve="apps.detective.serve:build_app", route_prefix="/v1/detect",
                          section="detective", commands={"detect": "apps.detective.cli:detect"},
                          tab=("Detective", "apps.detective.ui:build_tab"))]
