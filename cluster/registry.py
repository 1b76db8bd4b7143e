"""The app registry: every app declares itself once, and the CLI, the Serve assembly and the UI read it.

An app is a plugin module with `CONDUCTOR_APPS = [AppDecl(...)]`. The built-ins are plugins too (the modules in
`BUILTIN_PLUGINS`, in the order their tabs appear), then come installed packages' `conductor.apps` entry points,
then the modules a config lists under `plugins:` (in the style of simonw/llm's hook registry). Everything in a
declaration is a name or an import path ("module:attribute", Serve's `import_path` convention), so reading the
registry imports nothing heavy and nothing above this layer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

BUILTIN_PLUGINS = ("apps.gateway.plugin", "apps.rag.plugin", "apps.agent.plugin", "apps.video.plugin",
                   "apps.detective.plugin", "training.plugin")
ENTRY_POINT_GROUP = "conductor.apps"


@dataclass(frozen=True)
class AppDecl:
    """One app. `serve` builds its Serve application from {"config": dict} (mounted at `route_prefix`);
    `commands` are CLI subcommands ("name" -> "module:click_command"); `tab` is (label, "module:build_tab(ctx)")
    for the UI; `section` names the config section whose `enabled` switches the app (None: always on)."""

    name: str
    serve: str | None = None
    route_prefix: str | None = None
    section: str | None = None
    commands: dict[str, str] = field(default_factory=dict)
    tab: tuple[str, str] | None = None

    def enabled(self, config: Any) -> bool:
        return self.section is None or bool(getattr(getattr(config, self.section, None), "enabled", False))


def load_attr(target: str) -> Any:
    """"module:attribute" -> the attribute (imports the module)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry_point_plugins() -> list[str]:
    from importlib.metadata import entry_points

    return [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]


def app_registry(config: Any = None) -> list[AppDecl]:
    """Every declared app: built-ins, installed plugins, then `config.plugins`. Two apps may not share a name, a
    route prefix or a CLI command (a clear ValueError says which)."""
    plugins = [*BUILTIN_PLUGINS, *_entry_point_plugins(), *(getattr(config, "plugins", None) or [])]
    decls: list[AppDecl] = []
    for plugin in dict.fromkeys(plugins):
        module = importlib.import_module(plugin.partition(":")[0])
        declared = getattr(module, "CONDUCTOR_APPS", None)
        if not isinstance(declared, (list, tuple)) or not all(isinstance(d, AppDecl) for d in declared):
            raise ValueError(f"plugin {plugin!r} must define CONDUCTOR_APPS = [AppDecl(...), ...]")
        decls.extend(declared)
    _check_unique(decls)
    return decls


def _check_unique(decls: list[AppDecl]) -> None:
    for what, values in (("name", [d.name for d in decls]),
                         ("route prefix", [d.route_prefix for d in decls if d.route_prefix]),
                         ("CLI command", [c for d in decls for c in d.commands])):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"two apps declare the same {what}: {', '.join(dupes)}")
