"""Training's declaration in the app registry (cluster/registry.py): commands and a tab, no Serve app (runs are
Ray jobs)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("training", commands={"train": "training.cli:train", "sample": "training.cli:sample",
                                                "export": "training.cli:export"},
                          tab=("Training", "training.ui:build_tab"))]
