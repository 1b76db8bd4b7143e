"""`conductor` — the command line. Tested through click's CliRunner.

Subcommands live next to the code they drive and are imported lazily, so `conductor status` never pays for
torch or gradio. Each entry below is "module:attribute" of a click command or group.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

# The platform's own commands; each app's come from its declaration in the app registry (cluster/registry.py).
CORE_COMMANDS: dict[str, str] = {
    "up": "cluster.commands:up",
    "down": "cluster.commands:down",
    "status": "cluster.commands:status",
    "serve-config": "cluster.commands:serve_config",
    "deploy-config": "cluster.deploy_config:deploy_config",
    "job": "cluster.commands:job",
}


def subcommands() -> dict[str, str]:
    """Core commands plus every registered app's (the config's `plugins` included, when the config loads)."""
    from cluster.config import load_config
    from cluster.registry import app_registry

    try:
        config = load_config()
    except ValueError:  # a broken config: the built-ins still answer, and `up` says what is wrong
        config = None
    try:
        decls = app_registry(config)
    except (ImportError, ValueError) as e:
        # A broken plugin must not take the CLI down: the built-ins answer; the plugin's error is shown once.
        click.echo(f"warning: app plugins not loaded: {e}", err=True)
        decls = app_registry(None)
    return {**CORE_COMMANDS, **{name: target for d in decls for name, target in d.commands.items()}}


class LazyGroup(click.Group):
    """A click group that imports a subcommand only when it is invoked (or listed in --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(subcommands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        commands = subcommands()
        if name in commands:
            module_name, attr = commands[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                # A missing optional dependency or a feature not built yet: say which, don't traceback.
                return _unavailable(name, str(e))
            return getattr(module, attr)
        return super().get_command(ctx, name)


def _unavailable(name: str, reason: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise click.ClickException(f"`conductor {name}` is unavailable: {reason}")

    return cmd


@click.group(cls=LazyGroup)
@click.version_option(package_name="conductor")
def cli() -> None:
    """Conductor: serve local and hosted models, RAG, agents, video analysis, training and model forensics."""


def _ray_client_env() -> None:
    """Ray reads these when it is first imported, and any subcommand may import it: send the token, and for the
    local head (no `ray.address` configured) stay on loopback as the head does (cluster/runtime.py), or Ray would
    look for the cluster on the machine's routable IP, where nothing listens."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        from cluster.config import load_config

        local = load_config().ray.address is None
    except ValueError:  # a broken config: the command itself says what is wrong
        return
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main() -> None:
    _ray_client_env()
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
