"""Webhook subscribers managed live (API and CLI), beside the read-only YAML ones.

The table is the truth for every process: each dispatcher looks at it at most every
``subscribers.refresh_seconds`` (:class:`LiveSubscribers`, the way ``LiveKeyring`` looks at
the key folder) and rebuilds its ``webhook:NAME`` outputs when a row changed, so an add, a
removal or a rotation takes effect in every server and worker without a restart.
"""

from __future__ import annotations

import logging
import secrets as random
import time
from base64 import b64encode
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import pluggy
from marshmallow import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from publisher.db import transaction
from publisher.errors import ConfigError, Conflict, InvalidRecord, NotFound
from publisher.models import Delivery, Placement, Subscriber, utcnow
from publisher.subscription import SubscriberSchema

log = logging.getLogger("publisher.subscribers")

PREFIX = "webhook:"
#: the longest grace a rotation may give the old secret (a year)
MAX_GRACE = 366 * 86400.0


def new_secret() -> str:
    return "whsec_" + b64encode(random.token_bytes(32)).decode()


class StoredSubscriber(SubscriberSchema):
    """A subscriber of the table: the keys and checks of a YAML one (the same schema).

    The core keeps the table, so the core checks what goes in it; the plugin that delivers
    (``subscriber_output``) builds the output from a row this schema let in.
    """


def check(sub: Mapping[str, Any]) -> dict[str, Any]:
    """``sub`` loaded by :class:`StoredSubscriber`, or field errors (``InvalidRecord``)."""
    try:
        return StoredSubscriber().load(dict(sub))
    except ValidationError as exc:
        errors = {k: v if isinstance(v, list) else [str(v)] for k, v in exc.messages.items()}
        raise InvalidRecord("invalid subscriber", errors=errors) from None


def configured_names(settings: Mapping[str, Any]) -> set[str]:
    """Names of the YAML subscribers (read-only through the API)."""
    options = (settings.get("plugins") or {}).get("webhook") or {}
    return {str(sub.get("name")) for sub in options.get("subscribers") or []}


def add(
    sessions: sessionmaker[Session], settings: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Store a subscriber; returns it with its secret (the only time it is shown)."""
    if "webhook" in ((settings.get("plugins") or {}).get("disabled") or []):
        raise Conflict("the webhook plugin is disabled: no subscriber can be added")
    sub = check({**given, "secret": given.get("secret") or new_secret()})
    if sub["name"] in configured_names(settings):
        raise Conflict(f"subscriber {sub['name']!r} is configured in YAML; change it there")
    now = utcnow()
    with transaction(sessions) as session:
        if session.get(Subscriber, sub["name"]) is not None:
            raise Conflict(f"subscriber {sub['name']!r} exists; remove it first")
        row = Subscriber(
            name=sub["name"],
            url=sub["url"],
            secrets=[{"secret": sub["secret"], "until": None}],
            events=list(sub.get("events") or ()),
            protected=bool(sub.get("protected")),
            allow_private=sub.get("allow_private"),
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        answer = describe(row)
    return {**answer, "secret": sub["secret"]}


def remove(sessions: sessionmaker[Session], settings: Mapping[str, Any], name: str) -> None:
    """Forget a subscriber: its open deliveries end, its ledger rows go."""
    _not_configured(settings, name)
    output = PREFIX + name
    with transaction(sessions) as session:
        if session.get(Subscriber, name) is None:
            raise NotFound(f"no subscriber named {name!r}")
        session.execute(delete(Subscriber).where(Subscriber.name == name))
        session.execute(
            update(Delivery)
            .where(Delivery.output == output, Delivery.status == "pending")
            .values(status="superseded", lease_until=None, updated_at=utcnow())
        )
        session.execute(delete(Placement).where(Placement.output == output))


def rotate(
    sessions: sessionmaker[Session],
    settings: Mapping[str, Any],
    name: str,
    grace_seconds: float | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """Sign with a new secret; the old one keeps signing too until the grace ends."""
    _not_configured(settings, name)
    grace = (
        settings["subscribers"]["rotation_grace_seconds"]
        if grace_seconds is None
        else grace_seconds
    )
    fresh = secret or new_secret()
    now = utcnow()
    until = (now + timedelta(seconds=float(grace))).isoformat()
    with transaction(sessions) as session:
        row = session.get(Subscriber, name, with_for_update=True)
        if row is None:
            raise NotFound(f"no subscriber named {name!r}")
        check({"name": name, "url": row.url, "secret": fresh})
        live = _live_secrets(row.secrets, now)
        kept = [{"secret": s["secret"], "until": s["until"] or until} for s in live]
        row.secrets = [{"secret": fresh, "until": None}, *kept]
        row.updated_at = now
        answer = describe(row)
    return {**answer, "secret": fresh, "previous_valid_until": until}


def listing(sessions: sessionmaker[Session], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """YAML subscribers (``source: config``) then stored ones (``source: api``); no secrets."""
    options = (settings.get("plugins") or {}).get("webhook") or {}
    items = [
        {
            "name": sub["name"],
            "output": PREFIX + sub["name"],
            "url": sub["url"],
            "events": list(sub.get("events") or ()),
            "protected": bool(sub.get("protected")),
            "allow_private": sub.get("allow_private"),
            "source": "config",
            "signing_secrets": 1,
        }
        for sub in options.get("subscribers") or []
    ]
    with sessions() as session:
        items += [
            describe(row) for row in session.scalars(select(Subscriber).order_by(Subscriber.name))
        ]
    return items


def describe(row: Subscriber) -> dict[str, Any]:
    signing = _live_secrets(row.secrets, utcnow())
    return {
        "name": row.name,
        "output": PREFIX + row.name,
        "url": row.url,
        "events": list(row.events or ()),
        "protected": bool(row.protected),
        "allow_private": row.allow_private,
        "source": "api",
        "signing_secrets": len(signing),
    }


class LiveSubscribers:
    """The stored subscribers' outputs, rebuilt only when a row changed.

    ``build(row)`` makes one output (the webhook plugin's). Reading the table's names and
    update times is cheap; the dispatcher asks at most every ``every`` seconds.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        build: Callable[[Subscriber], Any],
        every: float,
    ) -> None:
        self.sessions = sessions
        self.build = build
        self.every = every
        self._seen: tuple[tuple[str, datetime], ...] | None = None
        self._checked = 0.0

    def changed(self, force: bool = False) -> dict[str, Any] | None:
        """``{output name: output}`` if the table changed since the last look, else None."""
        recent = time.monotonic() - self._checked < self.every
        if self._seen is not None and recent and not force:
            return None
        self._checked = time.monotonic()
        with self.sessions() as session:
            rows = session.scalars(select(Subscriber).order_by(Subscriber.name)).all()
            seen = tuple((row.name, row.updated_at) for row in rows)
            if seen == self._seen:
                return None
            outputs = {PREFIX + row.name: output for row in rows if (output := self._built(row))}
        self._seen = seen
        return outputs

    def _built(self, row: Subscriber) -> Any:
        """One row's output, or None (logged): a bad row must not stop intake or delivery."""
        try:
            return self.build(row)
        except Exception as exc:  # noqa: BLE001 - e.g. a setting changed under a stored row
            log.error("subscriber %s cannot be used: %s", row.name, exc)
            return None


def builds_subscribers(pm: pluggy.PluginManager) -> bool:
    """True when a plugin turns stored subscribers into outputs (``subscriber_output``)."""
    return bool(pm.hook.subscriber_output.get_hookimpls())


def output_of(pm: pluggy.PluginManager, settings: Mapping[str, Any]) -> Callable[[Subscriber], Any]:
    """How a stored row becomes an output: the ``subscriber_output`` hook (the webhook
    plugin's builder), given the row's current secret and those still in their grace."""
    config = MappingProxyType(dict(settings))

    def build(row: Subscriber) -> Any:
        now = utcnow()
        live = _live_secrets(row.secrets, now)
        sub = {
            "name": row.name,
            "url": row.url,
            "secret": live[0]["secret"],
            "events": row.events or None,
            "protected": row.protected,
        }
        if row.allow_private is not None:
            sub["allow_private"] = row.allow_private
        previous = tuple(
            (s["secret"], datetime.fromisoformat(s["until"]).timestamp()) for s in live[1:]
        )
        output = pm.hook.subscriber_output(subscriber=sub, previous=previous, config=config)
        if output is None:
            raise ConfigError("no plugin builds an output for it (subscriber_output)")
        return output

    return build


def _live_secrets(stored: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The current secret and the rotated-out ones whose grace has not ended."""
    return [s for s in stored if s["until"] is None or datetime.fromisoformat(s["until"]) > now]


def _not_configured(settings: Mapping[str, Any], name: str) -> None:
    if name in configured_names(settings):
        raise Conflict(f"subscriber {name!r} is configured in YAML; change it there")
