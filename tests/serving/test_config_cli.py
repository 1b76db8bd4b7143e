"""Config validation and the cluster CLI through click's runner (no cluster needed)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from cluster.cli import cli
from cluster.config import load_config


def test_default_config_loads():
    cfg = load_config(environ={})
    assert cfg.server.host == "127.0.0.1" and cfg.default_model == "smollm2"
    assert cfg.models[0].backends[0].engine == "llamacpp"


def test_env_overrides_reach_nested_fields():
    cfg = load_config(environ={"CONDUCTOR__SERVER__PORT": "8123", "CONDUCTOR__RAY__TOKEN_AUTH": "true",
                               "CONDUCTOR__BREAKER__COOLDOWN_S": "7.5"})
    assert cfg.server.port == 8123 and cfg.breaker.cooldown_s == 7.5


@pytest.mark.parametrize("doc, needle", [
    ({"server": {"port": "eighty"}}, "port"),
    ({"server": {"prot": 1}}, "prot"),
    ({"models": [{"id": "a", "backends": [{"name": "x", "engine": "warp"}]}]}, "engine"),
    ({"models": [{"id": "a", "backends": [{"name": "x", "engine": "openai"}]}]}, "base_url"),
    ({"models": [{"id": "a", "backends": []}]}, "backends"),
    ({"models": [{"id": "a", "backends": [{"name": "x", "engine": "echo"}]}], "default_model": "b"}, "default_model"),
])
def test_bad_config_is_rejected_with_reason(tmp_path, doc, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception) as e:
        load_config(p, environ={})
    assert needle in str(e.value)
    r = CliRunner().invoke(cli, ["serve-config", "--config", str(p)])
    assert r.exit_code == 1 and "invalid config" in r.output and "Traceback" not in r.output


def test_serve_config_points_every_app_at_the_same_file(tmp_path):
    out = tmp_path / "serve.yaml"
    r = CliRunner().invoke(cli, ["serve-config", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(out.read_text())
    assert doc["http_options"]["host"] == "127.0.0.1"
    names = [a["name"] for a in doc["applications"]]
    assert names[0] == "gateway" and "rag" in names
    assert all(a["import_path"] == "cluster.serve_app:build_named_app" for a in doc["applications"])


def test_missing_config_file_is_a_cli_error():
    r = CliRunner().invoke(cli, ["serve-config", "--config", "/nonexistent/c.yaml"])
    assert r.exit_code == 1 and "not found" in r.output


def test_help_lists_every_subcommand():
    r = CliRunner().invoke(cli, ["--help"])
    for name in ("up", "down", "status", "train", "detect", "rag", "video", "agent"):
        assert name in r.output
