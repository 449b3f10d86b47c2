"""The ``files`` output: one Markdown file with YAML front matter per published record.

Files are laid out for a static site generator (Hugo's ``content/`` or Jekyll collections):
``<folder>/<section>/<slug>-<hash>.md`` where the section is the record's category (or type,
or nothing). The name is derived from the title but made safe whatever the title holds, and
ends with a short hash of the record id, so two records with one title get two files.

A small per-record index (``<folder>/.publisher/index/``) remembers where each record's file
is, so an update that changes the title or category removes the old file without scanning
the folder, and so a late retry of an old revision cannot resurrect a retracted record. All
changes happen under one exclusive file lock (threads and processes), with atomic writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, fields, validate

from publisher.errors import ConfigError
from publisher.fileio import atomic_write_many, locked
from publisher.hookspecs import hookimpl
from publisher.outputs import BatchOutput, Event, OutputRecord, each_outcome

LAYOUTS = ("category", "type", "flat")
MAX_SLUG = 60
STATE_DIR = ".publisher"
#: libyaml's safe dumper when PyYAML was built with it (same output, a fraction of the time)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@hookimpl
def register_outputs(config: Mapping[str, Any]) -> list[FilesOutput]:
    options = dict((config.get("plugins") or {}).get("files") or {})
    folder = Path(options.get("folder") or Path(config["data_dir"]) / "site")
    layout = options.get("layout", "category")
    if layout not in LAYOUTS:
        raise ConfigError(f"plugins.files.layout must be one of {', '.join(LAYOUTS)}")
    prefix = str(options.get("section_prefix", ""))
    if prefix not in ("", "_"):
        raise ConfigError("plugins.files.section_prefix must be '' or '_'")
    return [FilesOutput(folder=folder, layout=layout, section_prefix=prefix)]


def slugify(text: str, fallback: str = "record") -> str:
    """ASCII, lower-case, dash-separated and bounded: safe as a file or folder name."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-") or fallback


def record_hash(record_id: str, length: int = 10) -> str:
    return hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:length]


@dataclass
class FilesOutput(BatchOutput):
    """Writes, moves and removes the Markdown file of each record."""

    folder: Path
    layout: str = "category"
    section_prefix: str = ""
    name: str = "files"
    accepts_protected: bool = False

    def deliver_many(
        self, items: Sequence[tuple[OutputRecord, Event]]
    ) -> list[BaseException | None]:
        """A batch under one lock, its files flushed to disk together (``atomic_write_many``)."""
        with self._locked():
            plan = _Plan(self)
            outcomes = each_outcome(items, plan.publish, plan.retract)
            plan.carry_out()
        return outcomes

    def path_for(self, record: OutputRecord) -> Path:
        """The file of ``record``, verified to lie inside the folder."""
        name = f"{slugify(record.title)}-{record_hash(record.id)}.md"
        section = self._section(record.fields)
        root = self.folder.resolve()
        path = (root / section / name).resolve() if section else (root / name).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"refusing to write outside {root}: {path}")
        return path

    def _section(self, fields: Mapping[str, Any]) -> str:
        if self.layout == "flat":
            return ""
        value = fields.get(self.layout)
        fallback = "uncategorized" if self.layout == "category" else "untyped"
        return self.section_prefix + slugify(str(value) if value else "", fallback)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.folder.resolve()))

    def entry_path(self, record_id: str) -> Path:
        """Where the index keeps what was written for ``record_id``."""
        return self.folder / STATE_DIR / "index" / f"{record_hash(record_id, 32)}.json"

    def _locked(self) -> AbstractContextManager[None]:
        """One writer at a time, across threads and processes."""
        return locked(self.folder / STATE_DIR / "lock")


class _Plan:
    """What a batch changes on disk, worked out first and carried out at once.

    The record files are written, then old files removed, then the index entries written:
    an interrupted batch leaves at worst a file the index does not know yet, which the
    retried delivery (idempotent) overwrites.
    """

    def __init__(self, output: FilesOutput) -> None:
        self.output = output
        self.root = output.folder.resolve()
        self.writes: dict[Path, bytes] = {}
        self.removals: set[Path] = set()
        self.entries: dict[str, dict[str, Any] | None] = {}
        self.touched: set[str] = set()

    def publish(self, record: OutputRecord, event: Event) -> None:
        target = self.output.path_for(record)
        entry = self._entry(record.id)
        if _is_stale(entry, event.revision):
            return
        self.writes[target] = render(record).encode("utf-8")
        self.removals.discard(target)
        self._remove_previous(entry, target)
        self._set_entry(record.id, {"path": self._relative(target), "revision": event.revision})

    def retract(self, record: OutputRecord, event: Event) -> None:
        entry = self._entry(record.id)
        if entry and int(entry.get("revision", 0)) > event.revision:
            return  # a late retry: a newer revision already decided
        self._remove_previous(entry, None)
        # Where the record would be now, in case the index was lost or never written.
        self._remove(self.output.path_for(record))
        self._set_entry(record.id, {"retracted": True, "revision": event.revision})

    def _remove_previous(self, entry: dict[str, Any] | None, keep: Path | None) -> None:
        """Remove the file an earlier revision wrote, if it now lives elsewhere."""
        if not entry or not entry.get("path"):
            return
        old = (self.root / entry["path"]).resolve()
        if old != keep and old.is_relative_to(self.root):
            self._remove(old)

    def _remove(self, path: Path) -> None:
        self.removals.add(path)
        self.writes.pop(path, None)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def _entry(self, record_id: str) -> dict[str, Any] | None:
        if record_id not in self.entries:
            try:
                data = json.loads(self.output.entry_path(record_id).read_text("utf-8"))
            except (FileNotFoundError, ValueError):
                data = None
            self.entries[record_id] = data if isinstance(data, dict) else None
        return self.entries[record_id]

    def _set_entry(self, record_id: str, entry: dict[str, Any]) -> None:
        self.entries[record_id] = entry
        self.touched.add(record_id)

    def carry_out(self) -> None:
        atomic_write_many(list(self.writes.items()))
        for path in self.removals:
            _unlink(path)
        atomic_write_many(
            [
                (self.output.entry_path(rid), json.dumps(self.entries[rid]).encode("utf-8"))
                for rid in self.touched
            ]
        )


def render(record: OutputRecord) -> str:
    """YAML front matter (the record's public fields) and the Markdown body."""
    fields = _plain(record.fields)
    fields.setdefault("id", record.id)
    if "date" not in fields and fields.get("publishedDateTime"):
        fields["date"] = fields["publishedDateTime"]  # what Hugo and Jekyll sort by
    front = yaml.dump(fields, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=1000)
    body = record.body if record.body.endswith("\n") or not record.body else record.body + "\n"
    return f"---\n{front}---\n\n{body}"


def _plain(value: Any) -> Any:
    """Plain dicts and lists, so ``safe_dump`` accepts any Mapping or Sequence handed over."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _is_stale(entry: dict[str, Any] | None, revision: int) -> bool:
    """A late retry of an older revision must not overwrite a newer state."""
    if not entry:
        return False
    stored = int(entry.get("revision", 0))
    return stored > revision or (bool(entry.get("retracted")) and stored >= revision)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class FilesSettings(Schema):
    """``plugins.files``: checked at start (``register_config_schema``); add new keys here."""

    folder = fields.String(load_default=None, allow_none=True)
    layout = fields.String(
        load_default="category",
        validate=validate.OneOf(LAYOUTS, error="must be one of " + ", ".join(LAYOUTS)),
    )
    section_prefix = fields.String(
        load_default="", validate=validate.OneOf(("", "_"), error="must be '' or '_'")
    )


@hookimpl
def register_config_schema() -> type[Schema]:
    return FilesSettings
