"""The plugin manager, built once per app: built-ins, entry points, then a local folder.

Built-in outputs are ordinary plugin modules registered exactly like third-party ones; the
core never imports a module of ``plugins/`` by name anywhere else.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pluggy

from publisher import __version__, hookspecs
from publisher.errors import ConfigError
from publisher.outputs import Output

#: The built-in plugins, registered through the same hooks as any other.
BUILTIN_PLUGINS = (
    "publisher_plugins.files",
    "publisher_plugins.feeds",
    "publisher_plugins.webhook",
)
ENTRY_POINT_GROUP = "publisher.plugins"
#: Set to 1 to skip plugins installed as packages (as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD).
DISABLE_AUTOLOAD = "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    origin: str  # builtin, entry-point, folder
    hooks: tuple[str, ...]
    outputs: tuple[str, ...] = ()


def make_plugin_manager(settings: Mapping[str, Any]) -> pluggy.PluginManager:
    """Register built-ins, entry points and the plugins folder, skipping disabled names."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = set((settings.get("plugins") or {}).get("disabled") or [])
    try:
        for module_name in BUILTIN_PLUGINS:
            name = module_name.rsplit(".", 1)[-1]
            if name not in disabled:
                pm.register(importlib.import_module(module_name), name=name)
        if not os.environ.get(DISABLE_AUTOLOAD):
            _load_entry_points(pm, disabled)
        if settings.get("plugins_dir"):
            _load_folder(pm, Path(settings["plugins_dir"]), disabled)
    except pluggy.PluginValidationError as exc:  # e.g. a misspelt hook argument
        raise _plugin_error(exc) from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _plugin_error(exc, "implements an unknown hook: ") from None
    return pm


def _plugin_error(exc: pluggy.PluginValidationError, what: str = "") -> ConfigError:
    """pluggy's several-line message as one line that starts with the plugin's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    head = re.match(r"Plugin '([^']+)'(?: for hook '([^']+)')?", lines[0]) if lines else None
    if head:
        name, hook = head.group(1), head.group(2)
        lines = ([f"hook {hook}:"] if hook else []) + lines[1:]
    else:
        name = getattr(exc.plugin, "__name__", None) or repr(exc.plugin)
    return ConfigError(f"plugin {name}: {what}{' '.join(lines)}")


def _load_entry_points(pm: pluggy.PluginManager, disabled: set[str]) -> None:
    for name in disabled:
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name in disabled:
        pm.unblock(name)


def _load_folder(pm: pluggy.PluginManager, folder: Path, disabled: set[str]) -> None:
    if not folder.is_dir():
        raise ConfigError(f"PUBLISHER_PLUGINS_DIR {folder} is not a folder")
    for path in sorted(folder.glob("*.py")):
        if path.stem in disabled or path.stem.startswith("_"):
            continue
        pm.register(_import_path(path), name=path.stem)


def _import_path(path: Path) -> ModuleType:
    module_name = f"publisher_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"plugin file {path} failed to load: {exc}") from exc
    return module


def collect_outputs(
    pm: pluggy.PluginManager, settings: Mapping[str, Any]
) -> dict[str, tuple[str, Output]]:
    """Call ``register_outputs`` plugin by plugin: output name -> (plugin name, output)."""
    from publisher.settings_schema import check_plugin_settings

    check_plugin_settings(pm, settings)  # type: ignore[arg-type]  # each plugin's own schema
    config = MappingProxyType(dict(settings))
    found: dict[str, tuple[str, Output]] = {}
    for impl in pm.hook.register_outputs.get_hookimpls():
        arguments = {"config": config}
        result = impl.function(**{name: arguments[name] for name in impl.argnames})
        for output in result or ():
            if not isinstance(output, Output):
                raise ConfigError(f"plugin {impl.plugin_name} returned a non-output: {output!r}")
            if output.name in found:
                raise ConfigError(f"two outputs are named {output.name!r}")
            found[output.name] = (impl.plugin_name, output)
    return found


def _origin(plugin: object) -> str:
    """builtin (plugins/), core (an observer the core registers itself), folder, entry-point."""
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    if module in BUILTIN_PLUGINS:
        return "builtin"
    if module.startswith("publisher_local_plugins."):
        return "folder"
    if module == "publisher" or module.startswith("publisher."):
        return "core"
    return "entry-point"


def describe_plugins(
    pm: pluggy.PluginManager, outputs: Mapping[str, tuple[str, Output]]
) -> list[PluginInfo]:
    """What is loaded, for ``publisher plugins`` and ``GET /api/v1/plugins``."""
    versions = {id(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    infos = []
    for name, plugin in pm.list_name_plugin():
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        origin = _origin(plugin)
        default = __version__ if origin in {"builtin", "core"} else "unversioned"
        version = versions.get(id(plugin)) or getattr(plugin, "__version__", None) or default
        owned = tuple(sorted(o for o, (owner, _) in outputs.items() if owner == name))
        infos.append(PluginInfo(name, str(version), origin, hooks, owned))
    return sorted(infos, key=lambda info: (info.origin != "builtin", info.name))
