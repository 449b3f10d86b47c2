"""The plugin manager, built once per app: built-ins, entry points, then a local folder.

Built-in outputs are ordinary plugin modules registered exactly like third-party ones; the
core never imports a module of ``plugins/`` by name anywhere else.
"""

from __future__ import annotations

import functools
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
    """Register built-ins, named modules, entry points and the plugins folder.

    ``plugins.disabled`` skips names; ``plugins.load`` (``{name: module}``) registers
    importable modules under a name, as an entry point would; ``plugins.autoload: false``
    (or ``PUBLISHER_DISABLE_PLUGIN_AUTOLOAD=1``) skips installed packages.
    """
    options = settings.get("plugins") or {}
    disabled = set(options.get("disabled") or [])
    plugins: dict[str, object] = {}
    for module_name in BUILTIN_PLUGINS:
        plugins[module_name.rsplit(".", 1)[-1]] = importlib.import_module(module_name)
    for name, module_name in (options.get("load") or {}).items():
        plugins[str(name)] = _import_named(str(name), str(module_name))
    pm = isolated_plugin_manager(
        {name: plugin for name, plugin in plugins.items() if name not in disabled}, check=False
    )
    if options.get("autoload", True) is not False and not os.environ.get(DISABLE_AUTOLOAD):
        _load_entry_points(pm, disabled)
    if settings.get("plugins_dir"):
        _load_folder(pm, Path(settings["plugins_dir"]), disabled)
    _check(pm)
    return pm


def isolated_plugin_manager(
    plugins: Mapping[str, object], *, check: bool = True
) -> pluggy.PluginManager:
    """A plugin manager holding exactly ``plugins`` (name -> module or object), nothing else.

    No built-in, no entry point, no folder: what tests of one plugin want.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugins.items():
        if not pm.is_registered(plugin):
            _register(pm, plugin, name)
    if check:
        _check(pm)
    return pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register, turning pluggy's refusal (an argument no hook offers) into one line."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # e.g. a misspelt hook argument
        raise _plugin_error(exc) from None


def _check(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _plugin_error(exc, "implements an unknown hook: ") from None


def _import_named(name: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"plugins.load.{name}: cannot import {module_name}: {exc}") from None


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
    """Installed packages; one already registered (by ``plugins.load``) is not loaded twice."""
    blocked = set(disabled)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in blocked or pm.has_plugin(entry.name):
            continue
        if pm.is_registered(entry.load()):
            blocked.add(entry.name)  # the same module, registered under another name
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {exc.plugin!r}: {exc}") from None
    for name in blocked:
        pm.unblock(name)


def _load_folder(pm: pluggy.PluginManager, folder: Path, disabled: set[str]) -> None:
    if not folder.is_dir():
        raise ConfigError(f"PUBLISHER_PLUGINS_DIR {folder} is not a folder")
    for path in sorted(folder.glob("*.py")):
        if path.stem in disabled or path.stem.startswith("_"):
            continue
        _register(pm, _import_path(path), path.stem)


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


#: The settings every hook may read as ``settings``: nothing secret (no sources, no database
#: or queue URL that may hold a password, no other plugin's section).
SHARED_SETTINGS = (
    "data_dir",
    "site_url",
    "site_title",
    "strict",
    "volatile_fields",
    "limits",
    "delivery",
)


def frozen(value: Any) -> Any:
    """A read-only deep copy: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(item) for item in value)
    return value


def shared_settings(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """The app's settings that are safe to hand to any plugin (``SHARED_SETTINGS``)."""
    return frozen({key: settings[key] for key in SHARED_SETTINGS if key in settings})


def plugin_config(settings: Mapping[str, Any], plugin_name: str) -> Mapping[str, Any]:
    """A plugin's own section, ``plugins.<its registered name>``, read-only (``{}`` if none)."""
    section = (settings.get("plugins") or {}).get(plugin_name)
    return frozen(section if isinstance(section, Mapping) else {})


def _call_impl(impl: pluggy.HookImpl, arguments: Mapping[str, Any]) -> Any:
    """Call one implementation with the arguments it names (it may take fewer than given)."""
    return impl.function(**{name: arguments[name] for name in impl.argnames})


def collect_outputs(
    pm: pluggy.PluginManager, settings: Mapping[str, Any]
) -> dict[str, tuple[str, Output]]:
    """Call ``register_outputs`` plugin by plugin: output name -> (plugin name, output)."""
    from publisher.settings_schema import check_plugin_settings

    check_plugin_settings(pm, settings)  # type: ignore[arg-type]  # each plugin's own schema
    config = MappingProxyType(dict(settings))
    found: dict[str, tuple[str, Output]] = {}
    for impl in pm.hook.register_outputs.get_hookimpls():
        own = plugin_config(settings, impl.plugin_name)
        result = _call_impl(impl, {"config": config, "plugin_config": own})
        for output in result or ():
            if not isinstance(output, Output):
                raise ConfigError(f"plugin {impl.plugin_name} returned a non-output: {output!r}")
            if output.name in found:
                raise ConfigError(f"two outputs are named {output.name!r}")
            found[output.name] = (impl.plugin_name, output)
    return found


class Broadcast:
    """Calls the broadcast hooks (``record_*``, ``delivery_*``) the way pluggy would, in the
    same order, and also hands each implementation its own context: ``plugin_config`` (its
    plugin's section) and ``settings`` (:data:`SHARED_SETTINGS`). pluggy alone can only pass
    every implementation the same arguments.

    ``broadcast.record_stored(record=..., event=...)``; an exception propagates to the caller,
    which decides (the core logs it; see each hook's docstring).
    """

    def __init__(self, pm: pluggy.PluginManager, settings: Mapping[str, Any]) -> None:
        self._pm = pm
        self._settings = settings
        self._shared = shared_settings(settings)
        self._sections: dict[str, Mapping[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not hasattr(self._pm.hook, name):
            raise AttributeError(name)
        return functools.partial(self.call, name)

    def call(self, name: str, **arguments: Any) -> None:
        caller = getattr(self._pm.hook, name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy's order: last registered first
            if impl.plugin_name not in self._sections:
                self._sections[impl.plugin_name] = plugin_config(self._settings, impl.plugin_name)
            context = {"plugin_config": self._sections[impl.plugin_name], "settings": self._shared}
            _call_impl(impl, {**context, **arguments})


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
