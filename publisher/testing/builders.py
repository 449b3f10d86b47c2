"""Records, events and outputs as the core would hand them over, under a test's control."""

from __future__ import annotations

import importlib.metadata
import itertools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from publisher.config import load_settings
from publisher.outputs import Event, EventKind, Output, OutputRecord
from publisher.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, collect_outputs
from publisher.plugins import isolated_plugin_manager as _isolated
from publisher.records import public_fields
from publisher.records import record_id as _derive_id
from publisher.schemas import validate_record

Item = tuple[OutputRecord, Event]
#: the first event time a :class:`Lifecycle` hands out (each later event is a second later)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def plugin_name(plugin: ModuleType | object) -> str:
    """The name a plugin is registered under, so also its configuration section's name.

    An installed plugin's entry-point name (``jsonl = "publisher_jsonl"`` -> ``jsonl``), else
    its module's last dotted part.
    """
    module = getattr(plugin, "__name__", None) or type(plugin).__module__
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.value.split(":", 1)[0] == module:
            return entry.name
    return module.rsplit(".", 1)[-1]


def load_outputs(
    plugin: ModuleType | object,
    *also: ModuleType | object,
    name: str | None = None,
    builtins: bool = False,
    **settings: Any,
) -> list[Output]:
    """The outputs ``plugin`` registers under ``settings``, as the service would build them.

    Only ``plugin`` (and ``also``, and the built-ins if ``builtins``) is loaded: no installed
    package, no plugins folder, so what is installed beside it cannot leak in, and a plugin
    that is also installed is not registered twice. ``name`` overrides :func:`plugin_name`.
    """
    import importlib

    config = load_settings(environ={}, overrides=settings)
    plugins: dict[str, object] = {name or plugin_name(plugin): plugin}
    plugins.update({plugin_name(other): other for other in also})
    if builtins:
        for module in BUILTIN_PLUGINS:
            plugins.setdefault(module.rsplit(".", 1)[-1], importlib.import_module(module))
    pm = _isolated(plugins)
    return [output for owner, output in collect_outputs(pm, config).values() if owner in plugins]


def make_record(
    fields: Mapping[str, Any] | None = None,
    *,
    revision: int = 1,
    record_id: str | None = None,
    body: str | None = None,
    protected: Mapping[str, Any] | None = None,
    secured_status: str | None = None,
) -> OutputRecord:
    """Validate ``fields`` like the service does and wrap them as an output sees them."""
    fields = {"title": "A record", "webUrl": "https://example.com/a"} if fields is None else fields
    data = validate_record(dict(fields)).data
    data["id"] = record_id or _derive_id(data)
    text = str(data.pop("body", "") or "")
    return OutputRecord(
        id=data["id"],
        revision=revision,
        fields=public_fields(data),
        body=text if body is None else body,
        secured_status=secured_status or ("decrypted" if protected else "absent"),
        protected=protected,
    )


def make_event(
    record: OutputRecord,
    kind: str = "published",
    *,
    revision: int | None = None,
    delivery_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Event:
    """An event about ``record``: its revision unless given, a new delivery id, now."""
    if kind not in ("published", "updated", "retracted"):
        raise ValueError(f"an event is published, updated or retracted, not {kind!r}")
    kind_: EventKind = kind  # type: ignore[assignment]
    return Event(
        kind=kind_,
        delivery_id=delivery_id or f"dlv_{uuid.uuid4().hex}",
        record_id=record.id,
        revision=record.revision if revision is None else revision,
        occurred_at=occurred_at or datetime.now(UTC),
    )


class Lifecycle:
    """One record's life as ``(record, event)`` pairs, as the core would deliver them.

    Revisions are the test's to choose, each event is a second after the previous one, and
    each pair has its own delivery id; hand the same pair again to play a redelivery::

        life = Lifecycle("a", title="First")
        first = life.published(1)
        output.publish(*first)
        output.publish(*life.updated(2, title="Second"))
        output.publish(*first)                      # a late retry: changes nothing
        output.retract(*life.retracted())           # a DELETE keeps revision 2
    """

    _counter = itertools.count(1)

    def __init__(self, key: str = "a", *, start: datetime = EPOCH, **fields: Any) -> None:
        self.fields: dict[str, Any] = {
            "title": f"Record {key}",
            "webUrl": f"https://example.com/contract/{key}",
            "published": True,
            **fields,
        }
        self.clock = start
        self.revision = 0
        self.protected: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.record(1).id

    def record(self, revision: int, **changes: Any) -> OutputRecord:
        """The record at ``revision`` with ``changes`` to its fields (kept for later ones)."""
        self.fields.update(changes)
        return make_record(self.fields, revision=revision, protected=self.protected)

    def published(self, revision: int = 1, **changes: Any) -> Item:
        return self._item("published", revision, changes)

    def updated(self, revision: int, **changes: Any) -> Item:
        return self._item("updated", revision, changes)

    def retracted(self, revision: int | None = None) -> Item:
        """A retraction; by default at the latest revision, as a DELETE keeps it."""
        return self._item("retracted", self.revision if revision is None else revision, {})

    def _item(self, kind: str, revision: int, changes: Mapping[str, Any]) -> Item:
        self.revision = max(self.revision, revision)
        self.clock += timedelta(seconds=1)
        record = self.record(revision, **changes)
        delivery = f"dlv_contract_{next(self._counter)}"
        return record, make_event(record, kind, delivery_id=delivery, occurred_at=self.clock)


def deliver(output: Output, *items: Item) -> None:
    """Hand ``items`` to ``output`` one call each (``publish`` or ``retract``), in order."""
    for record, event in items:
        (output.retract if event.kind == "retracted" else output.publish)(record, event)


def deliver_many(output: Output, items: Sequence[Item]) -> list[BaseException | None]:
    """Hand ``items`` to ``output.deliver_many`` in one call; its outcomes, checked in shape."""
    outcomes = list(output.deliver_many(list(items)))  # type: ignore[attr-defined]
    if len(outcomes) != len(items):
        raise AssertionError(f"deliver_many gave {len(outcomes)} outcomes for {len(items)} items")
    return outcomes


def publish(output: Output, fields: Mapping[str, Any], kind: str = "published") -> OutputRecord:
    """Run one record through ``output.publish``; returns the record it was given."""
    record = make_record(fields)
    output.publish(record, make_event(record, kind))
    return record


def retract(output: Output, fields: Mapping[str, Any]) -> OutputRecord:
    """Run one record through ``output.retract``."""
    record = make_record(fields)
    output.retract(record, make_event(record, "retracted"))
    return record
