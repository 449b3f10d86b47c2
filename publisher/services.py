"""Everything one app (or one worker) holds: built once, inside the factory, never at import."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
from huey import Huey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from publisher import db
from publisher.config import Settings
from publisher.dispatch import Dispatcher, OutputSpec
from publisher.errors import ConfigError
from publisher.outputs import Output
from publisher.plugins import Broadcast, collect_outputs, make_plugin_manager
from publisher.routing import compile_rule
from publisher.secured import Keyring, LiveKeyring, ensure_dev_key
from publisher.subscribers import LiveSubscribers, builds_subscribers, output_of
from publisher.taskqueue import make_huey
from publisher.tokens import TokenCache

log = logging.getLogger("publisher")
OPENED = frozenset({"decrypted", "decrypted-unauthenticated"})


@dataclass
class Services:
    """The core's parts, each built once and complete before this holds them."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    huey: Huey
    pm: pluggy.PluginManager
    outputs: dict[str, tuple[str, Output]]
    dispatcher: Dispatcher
    keyring: Keyring
    #: the connection the group committers' leaders write on, kept between their batches
    kept: db.KeptConnection
    token_cache: TokenCache = field(default_factory=lambda: TokenCache(0))

    def open_protected(self, fields: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Decrypted protected fields of a record, for outputs and readers cleared for them."""
        return open_protected(self.keyring, fields)

    def close(self) -> None:
        """Stop this app's threads (the dispatcher's lanes), then its connections."""
        self.dispatcher.close()
        self.kept.close()
        self.engine.dispose()


def open_protected(keyring: Keyring, fields: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A record's protected fields opened with ``keyring``, or None if they cannot be."""
    from publisher.secured import open_secured

    result = open_secured(fields.get("secured"), fields, keyring)
    return result.protected if result.status in OPENED else None


def build_services(settings: Settings, plugins: pluggy.PluginManager | None = None) -> Services:
    """Connect the store and queue, load keys and plugins, and wire the dispatcher.

    ``plugins`` is a plugin manager the process already built from these settings (the
    command line builds one to add plugins' commands): plugin modules run once per process.
    """
    if settings.get("auto_migrate", True):
        db.upgrade(settings["database_url"])
    engine = db.make_engine(settings["database_url"], synchronous=settings["sqlite_synchronous"])
    sessions = db.make_sessionmaker(engine)
    huey = make_huey(settings["queue_url"])
    keyring = _load_keyring(settings)
    pm = plugins or make_plugin_manager(settings)
    outputs = collect_outputs(pm, settings)
    dispatcher = _dispatcher(settings, sessions, huey, pm, outputs, keyring)
    token_cache = TokenCache(settings["token_cache_seconds"])
    kept = db.KeptConnection(engine)
    return Services(
        settings, engine, sessions, huey, pm, outputs, dispatcher, keyring, kept, token_cache
    )


def _dispatcher(
    settings: Settings,
    sessions: sessionmaker[Session],
    huey: Huey,
    pm: pluggy.PluginManager,
    outputs: Mapping[str, tuple[str, Output]],
    keyring: Keyring,
) -> Dispatcher:
    delivery = settings["delivery"]
    return Dispatcher(
        sessions=sessions,
        huey=huey,
        outputs=output_specs(outputs, settings),
        hooks=Broadcast(pm, settings),
        opener=functools.partial(open_protected, keyring),
        jitter=delivery["jitter"],
        lease_seconds=delivery["lease_seconds"],
        max_receives=delivery["max_receives"],
        batch_size=delivery["batch_size"],
        parallel_calls=delivery["parallel_calls"],
        lane_threads=delivery["lane_threads"],
        lane_backlog=delivery["lane_backlog"],
        drift_check_interval=delivery["drift_check_interval"],
        background_enqueue=settings["enqueue"] == "background",
        pause_after_seconds=delivery["pause_after_seconds"],
        live=_live_subscribers(pm, sessions, settings),
        live_spec=lambda output: OutputSpec(
            output=output,
            retry_schedule=tuple(delivery["retry_schedule"]),
            timeout=float(delivery["timeout"]),
        ),
    )


def _live_subscribers(
    pm: pluggy.PluginManager, sessions: sessionmaker[Session], settings: Settings
) -> LiveSubscribers | None:
    """Subscribers from the table, when a plugin builds their outputs (the webhook plugin)."""
    if not builds_subscribers(pm):
        return None
    every = settings["subscribers"]["refresh_seconds"]
    return LiveSubscribers(sessions, output_of(pm, settings), every)


def _load_keyring(settings: Settings) -> Keyring:
    if settings.get("dev_key"):
        kid = ensure_dev_key(settings["keys_dir"])
        if kid:
            log.warning(
                "made a development key %s in %s: replace it before production",
                kid,
                settings["keys_dir"],
            )
    return LiveKeyring(settings["keys_dir"])


def output_specs(
    outputs: Mapping[str, tuple[str, Output]], settings: Settings
) -> dict[str, OutputSpec]:
    """Apply ``outputs: {name: {enabled, when, retry_schedule, timeout}}`` to each output."""
    options = settings.get("outputs") or {}
    unknown = sorted(set(options) - set(outputs))
    if unknown:
        raise ConfigError(f"configuration names outputs that no plugin provides: {unknown}")
    specs = {}
    for name, (_plugin, output) in outputs.items():
        own = options.get(name) or {}
        if own.get("enabled", True) is False:
            continue
        rule = compile_rule(own["when"]) if own.get("when") else None
        specs[name] = OutputSpec(
            output=output,
            wants=rule.matches if rule else (lambda fields: True),
            retry_schedule=tuple(
                own.get("retry_schedule") or settings["delivery"]["retry_schedule"]
            ),
            timeout=float(own.get("timeout") or settings["delivery"]["timeout"]),
            rule=rule.text if rule else None,
        )
    return specs
