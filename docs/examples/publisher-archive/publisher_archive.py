"""publisher-archive: a JSON Lines archive of every record as it was published.

``archive.jsonl`` gets one line per change the output applied (published, updated, retracted),
oldest first: a history a reader can replay. ``state.json`` is what the archive holds now,
``{record id: {"revision": N, "retracted": bool}}``: it makes every delivery idempotent, keeps
a late retry of an older revision from rewriting history, remembers retractions (tombstones),
and is what ``inventory()`` reads. Both change under one lock, so threads and processes may
deliver at once.
"""

import json
from pathlib import Path

from publisher.errors import ConfigError
from publisher.fileio import atomic_write, locked
from publisher.hookspecs import hookimpl
from publisher.outputs import BaseOutput

__version__ = "1.0.0"


class ArchiveOutput(BaseOutput):
    name = "archive"

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def publish(self, record, event):
        with locked(self.folder / ".lock"):
            state = self._state()
            held = state.get(record.id)
            if held and held["revision"] >= event.revision:
                return  # a redelivery, a late retry, or a revision already retracted
            line = {"event": event.kind, "id": record.id, "revision": event.revision}
            self._append(line | {"fields": dict(record.fields), "body": record.body})
            state[record.id] = {"revision": event.revision, "retracted": False}
            self._save(state)

    def retract(self, record, event):
        with locked(self.folder / ".lock"):
            state = self._state()
            held = state.get(record.id)
            if held and (held["revision"] > event.revision or held["retracted"]):
                return  # an older retraction, or retracted already
            if held:
                self._append({"event": event.kind, "id": record.id, "revision": event.revision})
            state[record.id] = {"revision": event.revision, "retracted": True}
            self._save(state)

    def inventory(self):
        """What the archive holds now: ``{record id: revision}``, read from disk."""
        return {rid: s["revision"] for rid, s in self._state().items() if not s["retracted"]}

    def _state(self):
        try:
            return json.loads((self.folder / "state.json").read_text("utf-8"))
        except FileNotFoundError:
            return {}

    def _save(self, state):
        atomic_write(self.folder / "state.json", json.dumps(state).encode("utf-8"))

    def _append(self, line):
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "archive.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


@hookimpl
def register_outputs(config, plugin_config):
    folder = plugin_config.get("folder") or Path(config["data_dir"]) / "archive"
    if not isinstance(folder, str | Path):
        raise ConfigError("plugins.archive.folder must be a path")
    return [ArchiveOutput(folder)]
