"""RAG's declaration in the app registry (cluster/registry.py)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("rag", serve="apps.rag.serve:build_app", route_prefix="/v1/rag", section="rag",
                          commands={"rag": "apps.rag.cli:rag"}, tab=("Documents", "apps.rag.ui:build_tab"))]
