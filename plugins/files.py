"""The ``files`` output: one Markdown file with YAML front matter per published record.

Files are laid out for a static site generator (Hugo's ``content/`` or Jekyll collections):
``<folder>/<section>/<slug>-<hash>.md`` where the section is the record's category (or type,
or nothing). The name is derived from the title but made safe whatever the title holds, and
ends with a short hash of the record id, so two records with one title get two files.

The front matter is written from an explicit mapping of record fields to the generator's
keys (:data:`GENERATORS`, documented in ``docs/outputs.md``); every other field, unknown
ones included, goes under one namespaced key no generator gives a meaning to. So nothing a
sender writes can set a page's URL, layout, draft state or type: every path is chosen here.

A small per-record index (``<folder>/.publisher/index/``) remembers where each record's file
is and which URLs it had, so an update that moves the file removes the old one without
scanning the folder and leaves an alias at the old URL, and so a late retry of an old
revision cannot resurrect a retracted record (a tombstone). :meth:`FilesOutput.inventory`
reads the same index. All changes happen under one exclusive file lock (threads and
processes), with atomic writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, fields, validate
from slugify import slugify as _slugify

from publisher.errors import ConfigError
from publisher.fileio import atomic_write_stages, locked
from publisher.hookspecs import hookimpl
from publisher.outputs import BatchOutput, Event, OutputRecord, each_outcome
from publisher_plugins import front_matter as yaml_text

LAYOUTS = ("category", "type", "flat")
GENERATORS = ("hugo", "jekyll")
SLUGS = ("unicode", "ascii")
MAX_SLUG = 60  # characters
MAX_SLUG_BYTES = 180  # a file name is at most 255 bytes; the hash and ``.md`` follow
MAX_ALIASES = 20
STATE_DIR = ".publisher"
#: Hugo's default taxonomies own these top-level URLs: a section of that name would share them
RESERVED_SECTIONS = frozenset({"tags", "categories"})
#: record fields with a key of their own in the front matter; the rest go under the namespace
MAPPED = frozenset({"title", "publishedDateTime", "topics", "category", "excerpt"})


@hookimpl
def register_outputs(config: Mapping[str, Any]) -> list[FilesOutput]:
    options = dict((config.get("plugins") or {}).get("files") or {})
    folder = Path(options.get("folder") or Path(config["data_dir"]) / "site")
    layout = _choice(options, "layout", LAYOUTS)
    generator = _choice(options, "generator", GENERATORS)
    slugs = _choice(options, "slugs", SLUGS)
    prefix = str(options.get("section_prefix", ""))
    if prefix not in ("", "_"):
        raise ConfigError("plugins.files.section_prefix must be '' or '_'")
    base_url = str(options.get("base_path", "/"))
    if not base_url.startswith("/") or not base_url.endswith("/"):
        raise ConfigError("plugins.files.base_path must start and end with '/' (e.g. /news/)")
    return [
        FilesOutput(
            folder=folder,
            layout=layout,
            section_prefix=prefix,
            generator=generator,
            slugs=slugs,
            base_path=base_url,
        )
    ]


def _choice(options: Mapping[str, Any], key: str, allowed: Sequence[str]) -> str:
    value = options.get(key, allowed[0])
    if value not in allowed:
        raise ConfigError(f"plugins.files.{key} must be one of {', '.join(allowed)}")
    return str(value)


def slugify(text: str, fallback: str = "record", *, ascii_only: bool = False) -> str:
    """Lower-case, dash-separated and bounded: safe as a file, folder and URL segment.

    Unicode letters and digits are kept as Hugo keeps them (``東京``, ``привет-мир``), or
    transliterated to ASCII with ``ascii_only`` (python-slugify, with text-unidecode).
    Punctuation, underscores, dots, slashes and control characters never survive.
    """
    slug = _slugify(
        text,
        allow_unicode=not ascii_only,
        max_length=MAX_SLUG,
        word_boundary=True,
        regex_pattern=r"[^\w-]+|_" if not ascii_only else None,
    ).strip("-")
    while len(slug.encode("utf-8")) > MAX_SLUG_BYTES:
        slug = slug[:-1].rstrip("-")
    return slug or fallback


def record_hash(record_id: str, length: int = 10) -> str:
    return hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:length]


@dataclass
class FilesOutput(BatchOutput):
    """Writes, moves and removes the Markdown file of each record."""

    folder: Path
    layout: str = "category"
    section_prefix: str = ""
    generator: str = "hugo"
    slugs: str = "unicode"
    base_path: str = "/"
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

    def inventory(self) -> dict[str, int]:
        """``{record id: revision}`` of the files on disk: the per-record index, for each
        record whose file is still there (a file deleted by hand is missing, so reconcile
        writes it again)."""
        held: dict[str, int] = {}
        with self._locked():
            for path in sorted((self.folder / STATE_DIR / "index").glob("*.json")):
                entry = _read_entry(path)
                if not entry or entry.get("retracted") or not entry.get("path"):
                    continue
                if (self.folder / entry["path"]).is_file():
                    record_id = entry.get("id") or self._id_on_disk(entry["path"])
                    if record_id:
                        held[str(record_id)] = int(entry.get("revision", 0))
        return held

    def path_for(self, record: OutputRecord, folders: dict[str, Path] | None = None) -> Path:
        """The file of ``record``, in its section's folder, verified to lie inside the folder.

        The file's name is a slug (one path segment, no dots or separators), so checking the
        section's folder (resolved, symlinks followed) suffices; a batch passes ``folders``
        to resolve each section once.
        """
        section = self._section(record.fields)
        folder = folders.get(section) if folders is not None else None
        if folder is None:
            root = self.folder.resolve()
            folder = (root / section).resolve() if section else root
            if not folder.is_relative_to(root):
                raise ValueError(f"refusing to write outside {root}: {folder}")
            if folders is not None:
                folders[section] = folder
        return folder / f"{self.slug_for(record)}.md"

    def slug_for(self, record: OutputRecord) -> str:
        """The last segment of the page's URL and its file name: title, then id hash."""
        return f"{self._slug(record.title)}-{record_hash(record.id)}"

    def url_for(self, path: Path, root: Path | None = None) -> str:
        """The page's URL path, as the generator derives it from the file's place."""
        relative = path.relative_to(root or self.folder.resolve()).with_suffix("")
        parts = [p.removeprefix("_") if self.section_prefix else p for p in relative.parts]
        return self.base_path + "/".join(parts) + "/"

    def _slug(self, text: str, fallback: str = "record") -> str:
        return slugify(text, fallback, ascii_only=self.slugs == "ascii")

    def _section(self, fields: Mapping[str, Any]) -> str:
        if self.layout == "flat":
            return ""
        value = fields.get(self.layout)
        fallback = "uncategorized" if self.layout == "category" else "untyped"
        section = self._slug(str(value) if value else "", fallback)
        if self.generator == "hugo" and section in RESERVED_SECTIONS:
            section += "-section"
        return self.section_prefix + section

    def entry_path(self, record_id: str) -> Path:
        """Where the index keeps what was written for ``record_id``."""
        return self.folder / STATE_DIR / "index" / f"{record_hash(record_id, 32)}.json"

    def _id_on_disk(self, relative: str) -> str | None:
        """An index entry written before entries held the id: the file's front matter says."""
        try:
            text = (self.folder / relative).read_text("utf-8")
            meta = yaml.safe_load(text[4:].partition("\n---\n")[0]) or {}
        except (OSError, ValueError, yaml.YAMLError):
            return None
        found = meta.get("id") or _namespace(meta, self.generator).get("id")
        return str(found) if found else None

    def _locked(self) -> AbstractContextManager[None]:
        """One writer at a time, across threads and processes."""
        return locked(self.folder / STATE_DIR / "lock")


class _Plan:
    """What a batch changes on disk, worked out first and carried out at once.

    The record files are written, then old files removed (and section folders left empty),
    then the index entries written: an interrupted batch leaves at worst a file the index
    does not know yet, which the retried delivery (idempotent) overwrites.
    """

    def __init__(self, output: FilesOutput) -> None:
        self.output = output
        self.root = output.folder.resolve()
        self.writes: dict[Path, bytes] = {}
        self.removals: set[Path] = set()
        self.entries: dict[str, dict[str, Any] | None] = {}
        self.touched: set[str] = set()
        self.folders: dict[str, Path] = {}  # each section's folder, resolved once a batch

    def publish(self, record: OutputRecord, event: Event) -> None:
        target = self.output.path_for(record, self.folders)
        entry = self._entry(record.id)
        if _is_stale(entry, event.revision):
            return
        url = self.output.url_for(target, self.root)
        page = Page(
            slug=target.stem,
            url=url,
            aliases=_aliases(entry, url),
            first_seen=(entry or {}).get("date") or _iso(event.occurred_at),
            modified=_iso(event.occurred_at),
        )
        self.writes[target] = render(record, page, self.output.generator).encode("utf-8")
        self.removals.discard(target)
        self._remove_previous(entry, target)
        self._set_entry(
            record.id,
            {
                "id": record.id,
                "path": self._relative(target),
                "revision": event.revision,
                "url": url,
                "aliases": page.aliases,
                "date": page.first_seen,
            },
        )

    def retract(self, record: OutputRecord, event: Event) -> None:
        entry = self._entry(record.id)
        if entry and int(entry.get("revision", 0)) > event.revision:
            return  # a late retry: a newer revision already decided
        self._remove_previous(entry, None)
        # Where the record would be now, in case the index was lost or never written.
        self._remove(self.output.path_for(record, self.folders))
        tombstone = {"id": record.id, "retracted": True, "revision": event.revision}
        if entry:  # a re-publish keeps the record's first date and its old URLs as aliases
            old_url = [entry["url"]] if entry.get("url") else []
            tombstone["aliases"] = (list(entry.get("aliases") or []) + old_url)[-MAX_ALIASES:]
            tombstone["date"] = entry.get("date")
        self._set_entry(record.id, tombstone)

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
            self.entries[record_id] = _read_entry(self.output.entry_path(record_id))
        return self.entries[record_id]

    def _set_entry(self, record_id: str, entry: dict[str, Any]) -> None:
        self.entries[record_id] = entry
        self.touched.add(record_id)

    def carry_out(self) -> None:
        """Pages, then removals, then the index, with one flush to disk for the batch."""
        entries = [
            (self.output.entry_path(rid), json.dumps(self.entries[rid]).encode("utf-8"))
            for rid in self.touched
        ]
        atomic_write_stages(list(self.writes.items()), self._remove_old, entries)

    def _remove_old(self) -> None:
        for path in self.removals:
            _unlink(path)
        for folder in {path.parent for path in self.removals}:
            _remove_if_empty(folder, self.root)


@dataclass(frozen=True)
class Page:
    """What publisher decided about a record's page: never taken from the record."""

    slug: str
    url: str
    aliases: list[str]
    first_seen: str
    modified: str


def render(record: OutputRecord, page: Page, generator: str = "hugo") -> str:
    """YAML front matter from the mapping for ``generator``, then the Markdown body."""
    front = yaml_text.dump(front_matter(record, page, generator))
    body = record.body if record.body.endswith("\n") or not record.body else record.body + "\n"
    return f"---\n{front}---\n\n{body}"


def front_matter(record: OutputRecord, page: Page, generator: str = "hugo") -> dict[str, Any]:
    """The mapping of ``docs/outputs.md``: known fields to generator keys, the rest namespaced.

    Hugo: ``title, date, lastmod, draft, slug, tags, categories, description, aliases`` and
    ``params.publisher``. Jekyll: ``title, date, last_modified_at, published, slug,
    permalink, tags, categories, description, redirect_from`` and ``publisher``.
    """
    fields = _plain(record.fields)
    meta: dict[str, Any] = {"title": record.title}
    meta["date"] = fields.get("publishedDateTime") or page.first_seen
    meta["lastmod" if generator == "hugo" else "last_modified_at"] = page.modified
    if generator == "hugo":
        meta["draft"] = False
    else:
        meta["published"] = True
        meta["permalink"] = page.url
    meta["slug"] = page.slug
    topics = [str(t) for t in fields.get("topics") or [] if str(t).strip()]
    if topics:
        meta["tags"] = topics
    if fields.get("category"):
        meta["categories"] = [str(fields["category"])]
    if fields.get("excerpt"):
        meta["description"] = str(fields["excerpt"])
    if page.aliases:
        meta["aliases" if generator == "hugo" else "redirect_from"] = list(page.aliases)
    own = {
        "id": record.id,
        "revision": record.revision,
        "fields": {k: v for k, v in fields.items() if k not in MAPPED},
    }
    if generator == "hugo":
        meta["params"] = {"publisher": own}
    else:
        meta["publisher"] = own
    return meta


def _namespace(meta: Mapping[str, Any], generator: str) -> Mapping[str, Any]:
    if generator == "hugo":
        return (meta.get("params") or {}).get("publisher") or {}
    return meta.get("publisher") or {}


def _aliases(entry: dict[str, Any] | None, url: str) -> list[str]:
    """The record's earlier URLs (oldest first, bounded), never the one it has now."""
    if not entry:
        return []
    earlier = list(entry.get("aliases") or [])
    if entry.get("url") and not entry.get("retracted"):
        earlier.append(entry["url"])
    kept: list[str] = []
    for alias in earlier:
        if alias != url and alias not in kept:
            kept.append(alias)
    return kept[-MAX_ALIASES:]


def _iso(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z"


def _plain(value: Any) -> Any:
    """Plain dicts and lists, so ``safe_dump`` accepts any Mapping or Sequence handed over.

    Fields read from the store are plain already (JSON): then they are used as they are.
    """
    return value if _is_plain(value) else _copy_plain(value)


def _is_plain(value: Any) -> bool:
    """Only dicts with string keys, lists and scalars, all the way down (a loop: no frame
    per container)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind not in _SCALARS:
            return False
    return True


#: what JSON gives besides dicts and lists: written as it is
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copy_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _copy_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(item) for item in value]
    return value


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    generator = fields.String(
        load_default=GENERATORS[0],
        validate=validate.OneOf(GENERATORS, error="must be one of " + ", ".join(GENERATORS)),
    )
    slugs = fields.String(
        load_default=SLUGS[0],
        validate=validate.OneOf(SLUGS, error="must be one of " + ", ".join(SLUGS)),
    )
    base_path = fields.String(load_default="/")


@hookimpl
def register_config_schema() -> type[Schema]:
    return FilesSettings


def _remove_if_empty(folder: Path, root: Path) -> None:
    """A section folder its last record left: a site would still list an empty section."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()  # only ever succeeds on an empty folder
        except OSError:
            return
        folder = folder.parent
