"""`conductor` — the command line. Tested through click's CliRunner.

Subcommands live next to the code they drive and are imported lazily, so `conductor status` never pays for
torch or gradio. Each entry below is "module:attribute" of a click command or group.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

SUBCOMMANDS: dict[str, str] = {
    "up": "cluster.commands:up",
    "down": "cluster.commands:down",
    "status": "cluster.commands:status",
    "serve-config": "cluster.commands:serve_config",
    "job": "cluster.commands:job",
    "train": "training.cli:train",
    "sample": "training.cli:sample",
    "export": "training.cli:export",
    "detect": "apps.detective.cli:detect",
    "rag": "apps.rag.cli:rag",
    "video": "apps.video.cli:video",
    "agent": "apps.agent.cli:agent",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand only when it is invoked (or listed in --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module_name, attr = SUBCOMMANDS[name].split(":")
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
