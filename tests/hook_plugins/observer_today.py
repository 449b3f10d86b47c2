"""A plugin written against today's hooks, frozen here: each implementation takes the
arguments it uses (some take fewer than the hook offers). tests/test_hook_versions.py checks
it keeps working when hooks grow. Do not update it when a hook gains an argument: that is
the point."""

import json
from pathlib import Path

from publisher.hookspecs import hookimpl
from publisher.outputs import BaseOutput

CALLS = []


def _note(name, **values):
    CALLS.append((name, values))


class Shelf(BaseOutput):
    name = "shelf"

    def publish(self, record, event):
        _note("publish", id=record.id, revision=event.revision)


@hookimpl
def register_outputs(config):
    return [Shelf()]


@hookimpl
def record_received(source, raw):
    _note("record_received", source=source)


@hookimpl
def record_validated(record):
    _note("record_validated", id=record["id"])


@hookimpl
def record_rejected(reason):
    _note("record_rejected", reason=reason)


@hookimpl
def record_stored(record, event, plugin_config):
    _note("record_stored", id=record.id, event=event, tag=plugin_config.get("tag"))
    log = plugin_config.get("log")
    if log:
        with Path(log).open("a") as handle:
            handle.write(json.dumps({"id": record.id, "event": event}) + "\n")


@hookimpl
def delivery_succeeded(output, event):
    _note("delivery_succeeded", output=output, kind=event.kind)


@hookimpl
def delivery_failed(output, dead):
    _note("delivery_failed", output=output, dead=dead)
