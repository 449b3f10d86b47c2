"""Configuration, loaded in one place: defaults, then a YAML file, then ``PUBLISHER_*``.

The result is a nested dict (``Settings``) kept on the app, checked and typed by the
schema in :mod:`publisher.settings_schema`. Names that deployments rely
on (``PUBLISHER_CONFIG``, ``PUBLISHER_DATA_DIR``, ``PUBLISHER_DATABASE_URL``,
``PUBLISHER_QUEUE_URL``, ``PUBLISHER_KEYS_DIR``, ``PUBLISHER_PLUGINS_DIR``) are stable.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from publisher.errors import ConfigError
from publisher.settings_schema import (
    Origins,
    check_settings,
    field_at,
    known_top_level,
    problems,
    takes_text,
)

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
    # legacy: accept opens legacy AES-CBC envelopes, and then on_failure must stay sealed
    "secured": {
        "required": False,
        "on_failure": "sealed",
        "on_sealed": "accept",
        "legacy": "accept",
    },
    # a burst of invalid envelopes from one source: a warning and a metric (docs/secured.md)
    "secured_alarm": {"invalid": 20, "seconds": 60.0},
    # /readyz fails when a file system intake writes to has less free (docs/operations.md)
    "readiness": {"min_free_bytes": 64 * 1024 * 1024},
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
        "lane_backlog": 1000,  # deliveries one output's lane holds in a process; the rest queue
        "drift_check_interval": 3600.0,  # seconds between inventory checks (0: never)
        # a subscriber failing with no success this long is paused (0: never)
        "pause_after_seconds": 86400.0,
    },
    "worker": {"threads": 4},
    "embedded_worker": True,  # ``publisher serve`` runs a worker in the same process
    # who writes the queue after a commit: the committing thread (inline), or a feeder thread
    # of the process (background: a request answers without a queue round trip). ``serve``
    # and ``wsgi:app`` default to background (PROCESS_DEFAULTS); a file or env var still wins
    "enqueue": "inline",
    "webhooks": {
        "tolerance_seconds": 300,
        "remember_ids_days": 7,
        "secrets_cache_seconds": 5.0,  # a new or revoked secret takes effect within this
        "group_commit_max": 64,  # inbox rows of concurrent requests per commit (1 = off)
    },
    # subscribers added through the API/CLI: how often each process looks for changes, and
    # how long a rotated-out signing secret keeps signing beside the new one
    "subscribers": {"refresh_seconds": 2.0, "rotation_grace_seconds": 86400.0},
    "rate_limits": {"per_token_per_minute": 0, "per_source_per_minute": 0},  # 0 = off
    # a live API token is remembered this long per process: a revocation made elsewhere
    # takes effect within it (0 = look every token up on every request)
    "token_cache_seconds": 1.0,
    # quarantined payloads not replayed are forgotten after this many days
    "quarantine_days": 30,
    # revisions (never a record's current one) and raw inbox payloads older than this many
    # days are pruned by the sweeper (0 = keep for ever); purges are docs/operations.md's
    "retention": {"revisions_days": 0, "payloads_days": 0},
    # auto: text on a terminal, else JSON; access_level: werkzeug's access lines;
    # task_level: huey's two lines per queue message (the deliveries record each attempt)
    "logging": {
        "level": "INFO",
        "format": "auto",
        "access_level": "WARNING",
        "task_level": "WARNING",
    },
    # the store and queue gauges of /metrics are counted in the background at most this often
    "metrics": {"state_refresh_seconds": 15.0},
    "dev_key": True,  # make a development key on first run when the keyring is empty
    "auto_migrate": True,  # apply schema migrations at start
}

#: Environment variables with a stable name, and the setting each sets (as any other
#: ``PUBLISHER_<KEY>``; listed because deployments rely on these names).
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
OVERRIDES = "overrides"  # the origin of values given to ``create_app(overrides=...)``
PROCESS = "process default"  # the origin of values given to ``create_app(defaults=...)``
#: what the serving processes (``publisher serve``, ``wsgi:app``) default to, under the file
SERVING_DEFAULTS: Settings = {"enqueue": "background"}
DEFAULT = "default"


class LoadedSettings(dict):  # type: ignore[type-arg]
    """The checked settings, plus where each value came from (``publisher config``).

    ``origins`` maps key paths to ``default``, the file's path, an env var's name or
    ``overrides``; ``raw_env`` keeps environment values as written, for plugin schemas.
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        origins: Origins | None = None,
        raw_env: Mapping[tuple[str, ...], str] | None = None,
    ) -> None:
        super().__init__(values)
        self.origins: Origins = dict(origins or {})
        self.raw_env: dict[tuple[str, ...], str] = dict(raw_env or {})


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and check the settings: defaults, the YAML file, environment, then overrides.

    ``defaults`` are a process's own defaults (``SERVING_DEFAULTS``), over :data:`DEFAULTS`
    and under everything the operator writes. Raises :class:`ConfigError` whose ``errors``
    name every bad key path (and where its value came from), so that ``serve``, ``worker``
    and ``wsgi:app`` stop at start.
    """
    environ = os.environ if environ is None else environ
    settings = copy.deepcopy(DEFAULTS)
    origins: Origins = {}
    if defaults:
        merge_into(settings, defaults)
        _mark(origins, defaults, (), PROCESS)
    config_path = environ.get("PUBLISHER_CONFIG")
    if config_path:
        data = _read_file(Path(config_path))
        merge_into(settings, data)
        _mark(origins, data, (), str(Path(config_path)))
    raw_env = _apply_prefixed_env(settings, environ, origins)
    if overrides:
        merge_into(settings, overrides)
        _mark(origins, overrides, (), OVERRIDES)
    checked = check_settings(settings, origins)
    if config_path:
        checked["config_path"] = str(Path(config_path).resolve())
        origins[("config_path",)] = "PUBLISHER_CONFIG"
    return LoadedSettings(_resolve(checked), origins, raw_env)


def _mark(origins: Origins, data: Mapping[str, Any], prefix: tuple[str, ...], origin: str) -> None:
    """Record ``origin`` for every leaf of ``data`` (a list is one leaf)."""
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            _mark(origins, value, path, origin)
        else:
            origins[path] = origin


def _apply_prefixed_env(
    settings: Settings, environ: Mapping[str, str], origins: Origins
) -> dict[tuple[str, ...], str]:
    """Every setting as ``PUBLISHER_<KEY>``, nested with ``__``, as Flask does.

    ``PUBLISHER_DELIVERY__TIMEOUT=10`` sets ``delivery.timeout``, and
    ``PUBLISHER_PLUGINS__SITEMAP__MAX_URLS=0`` a plugin's key that no default names.
    Values are read as JSON when they parse (numbers, booleans, lists), except for text
    settings, which keep what was written. A name whose first part is no setting
    (``PUBLISHER_BIND``, read by gunicorn.conf.py) is not ours and is left alone; a
    misspelt key inside a known section is reported by the schema. Empty values are unset.
    Returns the raw text by key path.
    """
    raw_env: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        raw = environ[name]
        if not name.startswith("PUBLISHER_") or name in OTHER_ENV_NAMES or raw == "":
            continue
        path = tuple(name.removeprefix("PUBLISHER_").lower().split("__"))
        if not known_top_level(path[0]) or not all(path):
            continue
        value = raw if takes_text(field_at(path)) else _json_or_text(raw)
        _set(settings, path, value, name)
        origins[path] = name
        raw_env[path] = raw
    return raw_env


def _set(settings: Settings, path: tuple[str, ...], value: Any, name: str) -> None:
    parent = settings
    for depth, part in enumerate(path[:-1]):
        child = parent.get(part)
        if child is None:
            child = parent[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise problems({f"{where} (from {name})": ["not a section"]})
        parent = child
    parent[path[-1]] = value


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


def merge_into(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``base`` recursively (mappings merge, anything else replaces)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


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


def problem_lines(exc: ConfigError) -> list[str]:
    """One line per problem, each naming its key path: what ``serve`` and wsgi print."""
    if not exc.errors:
        return [f"publisher: configuration: {exc.message}"]
    return [
        f"publisher: configuration: {path}: {message}"
        for path, messages in exc.errors.items()
        for message in messages
    ]


#: Words that make a setting secret wherever they appear in its name (``secret``,
#: ``secrets``, ``db_password``, ``api_token``...): its text is never printed.
SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "passwd", "token", "tokens", "key", "apikey", "credentials"}
)
MASK = "********"


def effective(settings: Settings) -> list[tuple[str, Any, str]]:
    """Every setting as (key path, value with secrets masked, where it came from)."""
    from publisher.settings_schema import format_path, origin_of

    origins: Origins = getattr(settings, "origins", {})
    return [
        (format_path(path), masked(path, value), origin_of(path, origins) or DEFAULT)
        for path, value in _leaves(settings, ())
    ]


def _leaves(value: Any, path: tuple) -> Any:
    if isinstance(value, Mapping) and (value or not path):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def masked(path: tuple, value: Any) -> Any:
    """``value`` safe to print: secret-named text masked, passwords cut out of URLs."""
    words = {w for part in path if isinstance(part, str) for w in re.split(r"[_\-.]", part)}
    if words & SECRET_WORDS:
        if isinstance(value, str) and value:
            return MASK
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [MASK for _ in value]
    if isinstance(value, str) and "://" in value:
        return _url_without_password(value)
    return value


def _url_without_password(url: str) -> str:
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
