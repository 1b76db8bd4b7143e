"""Video search's declaration in the app registry (cluster/registry.py)."""

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("video", serve="apps.video.serve:build_app", route_prefix="/v1/video", section="video",
                          commands={"video": "apps.video.cli:video"}, tab=("Video", "apps.video.ui:build_tab"))]
