"""The app registry: one declaration (tests/plugins/toy_app.py) and the CLI, Serve and the UI pick the app up."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from cluster.config import ConductorConfig
from cluster.registry import AppDecl, app_registry

PLUGIN = "tests.plugins.toy_app"


def test_builtins_are_declared_through_the_registry():
    names = [d.name for d in app_registry()]
    assert names == ["gateway", "rag", "agent", "mcp", "video", "detective", "training"]
    commands = {c for d in app_registry() for c in d.commands}
    assert {"rag", "agent", "mcp", "video", "detect", "train", "sample", "export"} <= commands


def test_a_plugin_app_is_added_after_the_builtins_and_clashes_are_refused(monkeypatch):
    decls = app_registry(ConductorConfig(plugins=[PLUGIN]))
    assert decls[-1].name == "toy" and decls[-1].route_prefix == "/v1/toy"
    import tests.plugins.toy_app as toy

    monkeypatch.setattr(toy, "CONDUCTOR_APPS", [*toy.CONDUCTOR_APPS, AppDecl("rag2", commands={"rag": "x:y"})])
    with pytest.raises(ValueError, match="same CLI command: rag"):
        app_registry(ConductorConfig(plugins=[PLUGIN]))
    monkeypatch.setattr(toy, "CONDUCTOR_APPS", "not a list")
    with pytest.raises(ValueError, match="CONDUCTOR_APPS"):
        app_registry(ConductorConfig(plugins=[PLUGIN]))


def test_the_cli_lists_and_runs_a_plugin_command(tmp_path):
    from cluster.cli import cli

    cfg = tmp_path / "conductor.yaml"
    cfg.write_text(f"plugins: [{PLUGIN}]\n")
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"], env={"CONDUCTOR_CONFIG": str(cfg)})
    assert listed.exit_code == 0 and "toy" in listed.output and "rag" in listed.output
    ran = runner.invoke(cli, ["toy", "--name", "ada"], env={"CONDUCTOR_CONFIG": str(cfg)})
    assert ran.exit_code == 0, ran.output
    assert ran.output.strip() == "toy says hello, ada"
    # Without the plugin in the config the command does not exist.
    plain = tmp_path / "plain.yaml"
    plain.write_text("{}\n")
    assert runner.invoke(cli, ["toy"], env={"CONDUCTOR_CONFIG": str(plain)}).exit_code == 2


def test_the_ui_builds_a_plugin_tab():
    from apps.client import ConductorClient
    from apps.gateway.ui import app_tabs, build_ui

    config = ConductorConfig(plugins=[PLUGIN])
    assert [label for label, _ in app_tabs(config)] == ["Keys & spend", "Documents", "Agent", "Video", "Detective",
                                                         "Training", "Toy"]
    demo = build_ui(config, client=ConductorClient("http://127.0.0.1:9"))
    labels = {getattr(b, "label", None) for b in demo.blocks.values()}
    assert "Toy" in labels
    toy_md = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "toy-tab"]
    assert toy_md and toy_md[0].value == f"toy tab for {config.server.port}"


def test_serve_assembles_and_guards_a_plugin_app(serve_stack):
    import time

    from ray import serve

    from apps.common import with_deploy_secrets
    from cluster.serve_app import build_applications, enabled_apps

    # As `conductor up` deploys it: the users' key hashes from the environment (tests/stack.py sets them).
    config = with_deploy_secrets(serve_stack.config.model_copy(update={"plugins": [PLUGIN]}))
    assert "toy" in [d.name for d in enabled_apps(config)]
    [(decl, app)] = build_applications(config, only=["toy"])
    serve.run(app, name=decl.name, route_prefix=decl.route_prefix, blocking=False)
    try:
        with serve_stack.http() as c:
            for _ in range(120):
                r = c.get("/v1/toy/hello")
                if r.status_code not in (404, 503):  # not routed yet
                    break
                time.sleep(0.5)
            assert r.status_code == 200, r.text
            assert r.json() == {"toy": "hello", "port": config.server.port}
        # The guard every ingress installs applies to a plugin's routes too.
        assert httpx.get(serve_stack.base_url + "/v1/toy/hello", timeout=30).status_code == 401
    finally:
        serve.delete("toy")
