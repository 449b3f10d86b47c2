"""Configuration, loaded in one place: defaults, then a YAML file, then ``PUBLISHER_*``.

The result is a plain nested dict (``Settings``) kept on the app. Names that deployments rely
on (``PUBLISHER_CONFIG``, ``PUBLISHER_DATA_DIR``, ``PUBLISHER_DATABASE_URL``,
``PUBLISHER_QUEUE_URL``, ``PUBLISHER_KEYS_DIR``, ``PUBLISHER_PLUGINS_DIR``) are stable.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from publisher.errors import ConfigError

Settings = dict[str, Any]

#: Every setting with its default. ``None`` paths are derived from ``data_dir``.
DEFAULTS: Settings = {
    "data_dir": "data",
    "database_url": None,  # default: sqlite:///<data_dir>/publisher.db
    "queue_url": None,  # default: <data_dir>/queue.db (huey on SQLite); redis://... to scale out
    "keys_dir": "keys",
    "plugins_dir": None,
    "site_url": "http://localhost:8000",
    "site_title": "publisher",
    "strict": False,  # reject unknown record fields instead of warning
    "volatile_fields": ["heat"],  # a change only here makes a revision, not an event
    "sqlite_synchronous": "FULL",  # an acknowledged record survives a power loss
    "limits": {
        "max_body_bytes": 5 * 1024 * 1024,
        "max_batch": 1000,
        "max_depth": 32,
        "max_string": 1_000_000,
        "max_yaml_aliases": 100,
    },
    # the default policy per source (docs/secured.md); a source's own `secured:` overrides it
    "secured": {"required": False, "on_failure": "sealed", "on_sealed": "accept"},
    "sources": {},  # name -> {secrets: [whsec_...], secured: {...}}
    "plugins": {"disabled": []},  # per-plugin sections by plugin name
    "outputs": {},  # per-output options: when, retry_schedule, timeout, enabled
    "delivery": {
        "retry_schedule": [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        "jitter": 0.1,
        "timeout": 30.0,
        "lease_seconds": 120.0,
        "max_receives": 5,
        "sweep_interval": 5.0,
        "batch_size": 100,  # most deliveries in one queue message / one deliver_many call
        "parallel_calls": 4,  # one-by-one output calls of one message running at once
        "lane_threads": 2,  # messages of one output running at once in a process (0: no lanes)
        "lane_backlog": 1000,  # messages one output's lane holds before they wait in the queue
        "drift_check_interval": 3600.0,  # seconds between inventory checks (0: never)
    },
    "worker": {"threads": 4},
    "embedded_worker": True,  # ``publisher serve`` runs a worker in the same process
    "webhooks": {
        "tolerance_seconds": 300,
        "remember_ids_days": 7,
        "secrets_cache_seconds": 5.0,  # a new or revoked secret takes effect within this
        "group_commit_max": 64,  # inbox rows of concurrent requests per commit (1 = off)
    },
    "rate_limits": {"per_token_per_minute": 0, "per_source_per_minute": 0},  # 0 = off
    # a live API token is remembered this long per process: a revocation made elsewhere
    # takes effect within it (0 = look every token up on every request)
    "token_cache_seconds": 1.0,
    "logging": {"level": "INFO", "format": "auto"},  # auto: text on a terminal, else JSON
    "dev_key": True,  # make a development key on first run when the keyring is empty
}

#: Environment variables with a stable name, and the setting each sets.
ENV_NAMES = {
    "PUBLISHER_DATA_DIR": "data_dir",
    "PUBLISHER_DATABASE_URL": "database_url",
    "PUBLISHER_QUEUE_URL": "queue_url",
    "PUBLISHER_KEYS_DIR": "keys_dir",
    "PUBLISHER_PLUGINS_DIR": "plugins_dir",
    "PUBLISHER_SITE_URL": "site_url",
    "PUBLISHER_STRICT": "strict",
}


#: Environment variables read elsewhere, not settings.
OTHER_ENV_NAMES = {"PUBLISHER_CONFIG", "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD"}


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings: defaults, then the YAML file, then environment, then overrides."""
    environ = os.environ if environ is None else environ
    settings = copy.deepcopy(DEFAULTS)
    config_path = environ.get("PUBLISHER_CONFIG")
    if config_path:
        _merge(settings, _read_file(Path(config_path)))
        settings["config_path"] = str(Path(config_path).resolve())
    for env_name, key in ENV_NAMES.items():
        if environ.get(env_name):
            settings[key] = _scalar(environ[env_name]) if key == "strict" else environ[env_name]
    _apply_prefixed_env(settings, environ)
    if overrides:
        _merge(settings, overrides)
    return _resolve(settings)


def _apply_prefixed_env(settings: Settings, environ: Mapping[str, str]) -> None:
    """Any other known setting as ``PUBLISHER_<KEY>``, nested with ``__``, as Flask does.

    ``PUBLISHER_DELIVERY__TIMEOUT=10`` sets ``delivery.timeout``; values are read as JSON
    when they parse (numbers, booleans, lists), else kept as text. Unknown names are
    ignored, so unrelated ``PUBLISHER_...`` variables cannot break the start.
    """
    for name, raw in environ.items():
        if not name.startswith("PUBLISHER_") or name in ENV_NAMES or name in OTHER_ENV_NAMES:
            continue
        path = name.removeprefix("PUBLISHER_").lower().split("__")
        parent = settings
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent.get(part), dict) else None  # type: ignore[assignment]
            if parent is None:
                break
        if parent is not None and path[-1] in parent:
            parent[path[-1]] = _json_or_text(raw)


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _read_file(path: Path) -> dict[str, Any]:
    from publisher.safeyaml import load_yaml

    try:
        data = load_yaml(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except Exception as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping")
    return data


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``base`` recursively (mappings merge, anything else replaces)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _scalar(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    return text


def _resolve(settings: Settings) -> Settings:
    """Make paths absolute and fill the defaults derived from ``data_dir``."""
    data_dir = Path(settings["data_dir"]).expanduser().resolve()
    settings["data_dir"] = str(data_dir)
    settings["keys_dir"] = str(Path(settings["keys_dir"]).expanduser().resolve())
    if settings.get("plugins_dir"):
        settings["plugins_dir"] = str(Path(settings["plugins_dir"]).expanduser().resolve())
    if not settings.get("database_url"):
        settings["database_url"] = f"sqlite:///{data_dir / 'publisher.db'}"
    if not settings.get("queue_url"):
        settings["queue_url"] = str(data_dir / "queue.db")
    return settings


def source_policy(settings: Settings, source: str) -> dict[str, Any]:
    """The ``secured`` policy of a source: its own section over the default one."""
    policy = dict(settings["secured"])
    policy.update((settings["sources"].get(source) or {}).get("secured") or {})
    return policy
