"""A toy app: its one declaration (CONDUCTOR_APPS) is all the CLI, the Serve assembly and the UI need."""

from __future__ import annotations

from typing import Any

import click

from cluster.registry import AppDecl

CONDUCTOR_APPS = [AppDecl("toy", serve="tests.plugins.toy_app:build_app", route_prefix="/v1/toy",
                          commands={"toy": "tests.plugins.toy_app:toy"}, tab=("Toy", "tests.plugins.toy_app:build_tab"))]


def create_app(config: Any) -> Any:
    from fastapi import FastAPI

    from apps.common import install_common

    app = FastAPI()
    install_common(app, config)

    @app.get("/hello")
    def hello() -> dict[str, Any]:
        return {"toy": "hello", "port": config.server.port}

    return app


def build_app(args: dict[str, Any]) -> Any:
    from apps.common import config_ingress_app
    from cluster.config import config_from_dict

    config = config_from_dict(args["config"])
    return config_ingress_app(create_app, {"name": "ToyIngress", "num_replicas": 1,
                                           "ray_actor_options": {"num_cpus": 0.01}}, config)


@click.command("toy")
@click.option("--name", default="world")
def toy(name: str) -> None:
    """Say hello (the toy app's command)."""
    click.echo(f"toy says hello, {name}")


def build_tab(ctx: Any) -> None:
    import gradio as gr

    gr.Markdown("toy tab for " + str(ctx.config.server.port), elem_id="toy-tab")
