"""Everything one app (or one worker) holds: built once, inside the factory, never at import."""

from __future__ import annotations

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
from publisher.subscribers import LiveSubscribers, output_of
from publisher.taskqueue import make_huey
from publisher.tokens import TokenCache

log = logging.getLogger("publisher")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    huey: Huey
    pm: pluggy.PluginManager
    outputs: dict[str, tuple[str, Output]]
    dispatcher: Dispatcher
    keyring: Keyring
    token_cache: TokenCache = field(default_factory=lambda: TokenCache(0))

    def open_protected(self, fields: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Decrypted protected fields of a record, for outputs and readers cleared for them."""
        from publisher.secured import open_secured

        result = open_secured(fields.get("secured"), fields, self.keyring)
        return (
            result.protected
            if result.status in {"decrypted", "decrypted-unauthenticated"}
            else None
        )

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    """Connect the store and queue, load keys and plugins, and wire the dispatcher."""
    if settings.get("auto_migrate", True):
        db.upgrade(settings["database_url"])
    engine = db.make_engine(settings["database_url"], synchronous=settings["sqlite_synchronous"])
    sessions = db.make_sessionmaker(engine)
    huey = make_huey(settings["queue_url"])
    keyring = _load_keyring(settings)
    pm = make_plugin_manager(settings)
    outputs = collect_outputs(pm, settings)
    services = Services(
        settings,
        engine,
        sessions,
        huey,
        pm,
        outputs,
        None,
        keyring,  # type: ignore[arg-type]
        TokenCache(settings["token_cache_seconds"]),
    )
    delivery = settings["delivery"]
    services.dispatcher = Dispatcher(
        sessions=sessions,
        huey=huey,
        outputs=output_specs(outputs, settings),
        hooks=Broadcast(pm, settings),
        opener=services.open_protected,
        jitter=delivery["jitter"],
        lease_seconds=delivery["lease_seconds"],
        max_receives=delivery["max_receives"],
        batch_size=delivery["batch_size"],
        parallel_calls=delivery["parallel_calls"],
        lane_threads=delivery["lane_threads"],
        lane_backlog=delivery["lane_backlog"],
        drift_check_interval=delivery["drift_check_interval"],
        pause_after_seconds=delivery["pause_after_seconds"],
        live=_live_subscribers(pm, sessions, settings),
        live_spec=lambda output: OutputSpec(
            output=output,
            retry_schedule=tuple(delivery["retry_schedule"]),
            timeout=float(delivery["timeout"]),
        ),
    )
    return services


def _live_subscribers(
    pm: pluggy.PluginManager, sessions: sessionmaker[Session], settings: Settings
) -> LiveSubscribers | None:
    """Subscribers from the table, when the webhook plugin is loaded (it builds them)."""
    if pm.get_plugin("webhook") is None:
        return None
    every = settings["subscribers"]["refresh_seconds"]
    return LiveSubscribers(sessions, output_of(settings), every)


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
