"""A plugin as a third party would write it: outputs that record what they receive.

``recorder`` appends every call to a JSON-lines file; ``flaky`` fails while a flag file
exists; ``protected-sink`` accepts protected data; ``slow`` (when ``slow_seconds`` is set)
notes that it started, then takes its time; ``batcher`` (when ``batching`` is set) takes
batches through ``deliver_many`` and refuses records titled "refuse" (or answers with no
outcome at all for a batch holding one titled "miscount"). Loaded from
PUBLISHER_PLUGINS_DIR.
"""

import json
import time
from pathlib import Path

from publisher.hookspecs import hookimpl
from publisher.outputs import DeliveryError


class Recorder:
    def __init__(self, name, log, accepts_protected=False, fail_flag=None, delay=0.0, gone=False):
        self.name = name
        self.gone = gone
        self.delay = delay
        self.accepts_protected = accepts_protected
        self.log = Path(log)
        self.fail_flag = Path(fail_flag) if fail_flag else None

    def _write(self, action, record, event):
        if self.fail_flag and self.fail_flag.exists():
            if self.gone:
                raise DeliveryError("subscriber answered 410 Gone", disable_output=True)
            raise DeliveryError(f"{self.name} is failing on purpose")
        if self.delay:
            self._append({"output": self.name, "action": "start", "delivery_id": event.delivery_id})
            time.sleep(self.delay)
        entry = {
            "output": self.name,
            "action": action,
            "event": event.kind,
            "delivery_id": event.delivery_id,
            "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "id": record.id,
            "revision": record.revision,
            "title": record.title,
            "fields": dict(record.fields),
            "protected": dict(record.protected) if record.protected else None,
        }
        self._append(entry)

    def _append(self, entry):
        with self.log.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def publish(self, record, event):
        self._write("publish", record, event)

    def retract(self, record, event):
        self._write("retract", record, event)


class Ledgered(Recorder):
    """A recorder that can say what it holds (``inventory``), read back from its own log."""

    def inventory(self):
        held = {}
        if not self.log.exists():
            return held
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("output") != self.name or entry["action"] not in ("publish", "retract"):
                continue
            if entry["action"] == "publish":
                held[entry["id"]] = entry["revision"]
            else:
                held.pop(entry["id"], None)
        return held


class Batcher(Recorder):
    def deliver_many(self, items):
        self._append({"output": self.name, "action": "batch", "size": len(items)})
        if any(record.title == "miscount" for record, _ in items):
            return []
        outcomes = []
        for record, event in items:
            if record.title == "refuse":
                outcomes.append(DeliveryError("refused on purpose"))
            else:
                self._write("retract" if event.kind == "retracted" else "publish", record, event)
                outcomes.append(None)
        return outcomes


@hookimpl
def register_outputs(config):
    own = config["plugins"].get("recording", {})
    log = own.get("log")
    if not log:
        return []
    outputs = [
        Ledgered("recorder", log),
        Recorder("flaky", log, fail_flag=own.get("fail_flag")),
        Recorder("protected-sink", log, accepts_protected=True),
    ]
    if own.get("gone_flag"):
        outputs.append(Recorder("gone", log, fail_flag=own["gone_flag"], gone=True))
    if own.get("batching"):
        outputs.append(Batcher("batcher", log))
    if own.get("slow_seconds"):
        outputs.append(Recorder("slow", log, delay=float(own["slow_seconds"])))
    return outputs
