"""Helpers for plugin authors' tests: run records through an output without a server.

from publisher.testing import load_outputs, publish, retract

def test_my_output(tmp_path):
    (output,) = load_outputs(my_plugin, plugins={"my_plugin": {"folder": str(tmp_path)}})
    publish(output, {"title": "Hello", "webUrl": "https://example.com/a"})
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from publisher.config import load_settings
from publisher.outputs import Event, Output, OutputRecord
from publisher.plugins import collect_outputs, make_plugin_manager
from publisher.records import public_fields, record_id
from publisher.schemas import validate_record


def load_outputs(plugin: ModuleType | object, **settings: Any) -> list[Output]:
    """The outputs ``plugin`` registers under ``settings`` (as the service would call it)."""
    config = load_settings(environ={}, overrides={"plugins": {"disabled": []}, **settings})
    config["plugins"]["disabled"] = ["files", "feeds", "webhook"]
    pm = make_plugin_manager({**config, "plugins_dir": None})
    pm.register(plugin, name=getattr(plugin, "__name__", "plugin-under-test"))
    return [output for _, output in collect_outputs(pm, config).values()]


def make_record(fields: Mapping[str, Any], revision: int = 1) -> OutputRecord:
    """Validate ``fields`` like the service does and wrap them as an output sees them."""
    data = validate_record(dict(fields)).data
    data["id"] = record_id(data)
    body = str(data.pop("body", "") or "")
    return OutputRecord(id=data["id"], revision=revision, fields=public_fields(data), body=body)


def make_event(record: OutputRecord, kind: str = "published") -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        delivery_id=f"dlv_{uuid.uuid4().hex}",
        record_id=record.id,
        revision=record.revision,
        occurred_at=datetime.now(UTC),
    )


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
