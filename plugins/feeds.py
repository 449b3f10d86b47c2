"""The ``feeds`` output: Atom 1.0, RSS 2.0 and JSON Feed 1.1, site-wide and per topic.

Cost does not depend on how many records are stored: each feed keeps its own small state
(``state.json``: its latest entries, plus recent RFC 6721 tombstones) beside its files, and a
publish touches only the site feed and the feeds of the record's topics (and of topics it
left, known from a small per-record index). All changes happen under one exclusive
``flock`` so concurrent threads and processes never lose an update; files are replaced
atomically. The three formats are rendered by ``feed_formats`` (standard library only).

The app serves the files at ``/feeds/...`` through the ``register_routes`` hook.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from marshmallow import Schema, fields, validate

from publisher.errors import ConfigError, NotFound
from publisher.fileio import atomic_write_stages, locked
from publisher.hookspecs import hookimpl
from publisher.outputs import BatchOutput, Event, OutputRecord, each_outcome
from publisher_plugins.feed_formats import FORMATS, FeedView, clean, digest, entry_id

log = logging.getLogger(__name__)

MAX_CONTENT = 20_000
MAX_RELATED = 20


@dataclass(frozen=True)
class FeedSettings:
    folder: Path
    site_url: str
    site_title: str
    max_entries: int = 50
    max_tombstones: int = 50
    max_topics: int = 20
    websub_hub: str | None = None
    hub_timeout: float = 5.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeedSettings:
        options = dict((config.get("plugins") or {}).get("feeds") or {})
        try:
            settings = cls(
                folder=feeds_folder(config),
                site_url=str(config.get("site_url") or "http://localhost:8000").rstrip("/"),
                site_title=str(config.get("site_title") or "publisher"),
                max_entries=int(options.get("max_entries", 50)),
                max_tombstones=int(options.get("max_tombstones", 50)),
                max_topics=int(options.get("max_topics", 20)),
                websub_hub=options.get("websub_hub") or None,
                hub_timeout=float(options.get("hub_timeout", 5.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"plugins.feeds: {exc}") from None
        if not 1 <= settings.max_entries <= 1000 or not 0 <= settings.max_tombstones <= 1000:
            raise ConfigError("plugins.feeds: max_entries 1-1000, max_tombstones 0-1000")
        if settings.websub_hub and not str(settings.websub_hub).startswith(("http://", "https://")):
            raise ConfigError("plugins.feeds.websub_hub must be an http(s) URL")
        return settings

    def feed_url(self, key: str, fmt: str) -> str:
        return f"{self.site_url}/feeds/{key + '/' if key else ''}{fmt}"


def feeds_folder(config: Mapping[str, Any]) -> Path:
    """Where the feed files live: ``plugins.feeds.folder`` or ``<data_dir>/feeds``."""
    options = (config.get("plugins") or {}).get("feeds") or {}
    return Path(options.get("folder") or Path(config.get("data_dir", "data")) / "feeds")


def topic_slug(topic: str) -> str:
    """An ASCII path segment for a topic; names with no ASCII letters get a hash."""
    ascii_text = unicodedata.normalize("NFKD", topic).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:60].rstrip("-")
    return slug or "t-" + hashlib.sha256(topic.encode("utf-8", "replace")).hexdigest()[:10]


@hookimpl
def register_outputs(config: Mapping[str, Any]) -> list[FeedsOutput]:
    return [FeedsOutput(FeedSettings.from_config(config))]


class FeedsSettings(Schema):
    """``plugins.feeds``, checked at start through ``register_config_schema``."""

    folder = fields.String(load_default=None, allow_none=True)
    max_entries = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    max_tombstones = fields.Integer(load_default=50, validate=validate.Range(min=0, max=1000))
    max_topics = fields.Integer(load_default=20, validate=validate.Range(min=0))
    websub_hub = fields.Url(
        load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"}
    )
    hub_timeout = fields.Float(
        load_default=5.0, validate=validate.Range(min=0, min_inclusive=False)
    )


@hookimpl
def register_config_schema() -> type[Schema]:
    return FeedsSettings


@hookimpl
def register_routes(app: Any) -> None:
    app.register_blueprint(_blueprint())


class FeedsOutput(BatchOutput):
    """Keeps the feeds' state and files; one lock for every change."""

    name = "feeds"
    accepts_protected = False

    def __init__(self, settings: FeedSettings) -> None:
        self.settings = settings
        self.folder = settings.folder

    def deliver_many(
        self, items: Sequence[tuple[OutputRecord, Event]]
    ) -> list[BaseException | None]:
        """A batch at once: each feed's state is read once, and each feed the batch changed
        is rendered and written once (rendering dominates the cost of a publish)."""
        with self._locked():
            batch = _FeedBatch(self)
            outcomes = each_outcome(items, batch.publish, batch.retract)
            changed = batch.write()
        self._ping(changed)
        return outcomes

    def inventory(self) -> dict[str, int]:
        """What the feeds hold, ``{record id: revision}``, read from the per-record index on
        disk: every record delivered and not retracted, whether or not a feed still lists it
        among its latest entries. A retraction stays in the index as a tombstone (it keeps a
        late retry from bringing the record back) and is left out here."""
        held: dict[str, int] = {}
        unnamed: dict[str, int] = {}  # indexes written before they named their record
        for path in (self.folder / ".index").glob("*.json"):
            index = _read_json(path)
            if not index or index.get("retracted"):
                continue
            if "id" in index:
                held[str(index["id"])] = int(index.get("revision", 0))
            else:
                unnamed[path.stem] = int(index.get("revision", 0))
        if unnamed:
            site = _read_json(self.folder / "state.json") or {}
            for entry in site.get("entries", []):
                stem = _index_stem(entry["record_id"])
                if stem in unnamed:
                    held[entry["record_id"]] = unnamed[stem]
        return held

    def topics(self, record: OutputRecord) -> dict[str, str]:
        """The record's topic feeds (slug -> name), at most ``max_topics``."""
        topics = {topic_slug(name): name for name in _topic_names(record.fields.get("topics"))}
        return dict(list(topics.items())[: self.settings.max_topics])

    def _ping(self, keys: list[str]) -> None:
        """Tell the WebSub hub what changed; a failing hub never fails the delivery."""
        hub = self.settings.websub_hub
        if not hub:
            return
        for key in keys:
            for fmt in FORMATS:
                url = self.settings.feed_url(key, fmt)
                try:
                    data = {"hub.mode": "publish", "hub.url": url}
                    answer = requests.post(hub, data=data, timeout=self.settings.hub_timeout)
                    answer.raise_for_status()
                except requests.RequestException as exc:
                    log.warning("WebSub hub ping failed for %s: %s", url, type(exc).__name__)
                    return  # the hub is unwell: do not wait on it once per feed

    def _locked(self) -> AbstractContextManager[None]:
        """One writer at a time, across threads and processes."""
        return locked(self.folder / ".lock")


class _FeedBatch:
    """The changes of one batch of deliveries, applied to states read once, written once."""

    def __init__(self, output: FeedsOutput) -> None:
        self.output = output
        self.folder = output.folder
        self.states: dict[str, dict[str, Any]] = {}
        self.changed: set[str] = set()
        self.indexes: dict[str, dict[str, Any] | None] = {}
        self.touched: set[str] = set()

    def publish(self, record: OutputRecord, event: Event) -> None:
        index = self._index(record.id)
        if _is_stale(index, event.revision):
            return
        entry = make_entry(record, event, self.output.settings.site_url)
        topics = self.output.topics(record)
        keys = {"": ""} | {f"topics/{s}": n for s, n in topics.items()}
        left = {f"topics/{s}": n for s, n in (index or {}).get("topics", {}).items()}
        for key, topic in (left | keys).items():
            self._apply(key, topic, record, entry)
        self._set_index(record.id, {"id": record.id, "revision": event.revision, "topics": topics})

    def retract(self, record: OutputRecord, event: Event) -> None:
        index = self._index(record.id)
        if index and int(index.get("revision", 0)) > event.revision:
            return
        topics = (index or {}).get("topics", {}) | self.output.topics(record)
        keys = {"": ""} | {f"topics/{s}": n for s, n in topics.items()}
        stone = {"ref": entry_id(record.id), "when": _rfc3339(event.occurred_at)}
        for key, topic in keys.items():
            self._apply(key, topic, record, None, stone)
        tombstone = {"id": record.id, "revision": event.revision, "retracted": True, "topics": {}}
        self._set_index(record.id, tombstone)

    def _apply(
        self,
        key: str,
        topic: str,
        record: OutputRecord,
        entry: dict[str, Any] | None,
        stone: dict[str, str] | None = None,
    ) -> None:
        """Put ``entry`` in feed ``key`` (or take the record out, leaving ``stone``)."""
        state = self._state(key, topic)
        settings = self.output.settings
        ref = entry_id(record.id)
        entries = [e for e in state["entries"] if e["record_id"] != record.id]
        stones = [s for s in state["tombstones"] if s["ref"] != ref]
        in_feed = not key or key.removeprefix("topics/") in self.output.topics(record)
        if entry is not None and in_feed:
            _insert_newest_first(entries, entry, _entry_order)
        if stone is not None:
            _insert_newest_first(stones, stone, _stone_order)
        entries = entries[: 2 * settings.max_entries]  # a buffer for retractions
        stones = stones[: settings.max_tombstones]
        if entries != state["entries"] or stones != state["tombstones"]:
            state["entries"], state["tombstones"] = entries, stones
            self.changed.add(key)

    def _state(self, key: str, topic: str) -> dict[str, Any]:
        if key not in self.states:
            state = _read_json(self.folder / key / "state.json") or {"topic": topic}
            state.setdefault("entries", [])
            state.setdefault("tombstones", [])
            self.states[key] = state
        return self.states[key]

    def _index(self, record_id: str) -> dict[str, Any] | None:
        if record_id not in self.indexes:
            self.indexes[record_id] = _read_json(self._index_path(record_id))
        return self.indexes[record_id]

    def _set_index(self, record_id: str, index: dict[str, Any]) -> None:
        self.indexes[record_id] = index
        self.touched.add(record_id)

    def _index_path(self, record_id: str) -> Path:
        return self.folder / ".index" / f"{_index_stem(record_id)}.json"

    def write(self) -> list[str]:
        """Render and write each feed that changed (or was never written), then the indexes;
        returns the keys of the feeds written."""
        changed = [
            key
            for key in self.states
            if key in self.changed or not (self.folder / key / "atom.xml").exists()
        ]
        files: list[tuple[Path, bytes]] = []
        for key in changed:
            files.extend(self._files(key, self.states[key]))
        indexes = [(self._index_path(rid), _json_bytes(self.indexes[rid])) for rid in self.touched]
        atomic_write_stages(files, indexes)  # the feeds, then the indexes: one flush to disk
        return changed

    def _files(self, key: str, state: dict[str, Any]) -> list[tuple[Path, bytes]]:
        view = FeedView(self.output.settings, key, state)
        folder = self.folder / key
        return [
            (folder / "atom.xml", view.atom()),
            (folder / "rss.xml", view.rss()),
            (folder / "feed.json", view.json_feed()),
            (folder / "state.json", _json_bytes(state)),
        ]


def _index_stem(record_id: str) -> str:
    return hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _entry_order(entry: Mapping[str, Any]) -> tuple[str, str]:
    return entry["published"], entry["record_id"]


def _stone_order(stone: Mapping[str, Any]) -> tuple[str, str]:
    return stone["when"], stone["ref"]


def _insert_newest_first(
    items: list[Any], item: Any, order: Callable[[Any], tuple[str, str]]
) -> None:
    """Insert into a list kept newest first (states are written sorted, so read sorted)."""
    key = order(item)
    low, high = 0, len(items)
    while low < high:
        middle = (low + high) // 2
        if order(items[middle]) > key:
            low = middle + 1
        else:
            high = middle
    items.insert(low, item)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def make_entry(record: OutputRecord, event: Event, site_url: str) -> dict[str, Any]:
    """What a feed keeps of a record: small, JSON-ready, XML-safe text."""
    fields = record.fields
    published = _parse_date(fields.get("publishedDateTime")) or event.occurred_at
    link = _url(fields.get("webUrl")) or _url(fields.get("originalUrl")) or site_url + "/"
    original = _url(fields.get("originalUrl"))
    related = [
        {"title": clean(item.get("title") or ""), "url": _url(item.get("webUrl"))}
        for item in (fields.get("related") or [])[:MAX_RELATED]
        if isinstance(item, Mapping) and _url(item.get("webUrl"))
    ]
    provider = fields.get("provider")
    entry = {
        "record_id": record.id,
        "id": entry_id(record.id),
        "revision": event.revision,
        "title": clean(record.title),
        "summary": clean(fields.get("excerpt") or ""),
        "content": clean(record.body[:MAX_CONTENT]),
        "link": link,
        "external_url": original if original and original != link else None,
        "published": _rfc3339(published),
        "updated": _rfc3339(max(published, event.occurred_at)),
        "topics": _topic_names(fields.get("topics")),
        "category": clean(str(fields.get("category") or "")),
        "author": clean(str(provider.get("name") or "")) if isinstance(provider, Mapping) else "",
        "related": related,
    }
    entry["digest"] = digest(entry)
    return entry


def _blueprint() -> Any:
    """``/feeds/...`` routes reading the files from the folder the settings name.

    A flask-smorest blueprint, so the routes describe themselves in ``/openapi.json``.
    """
    from flask import current_app, jsonify, send_file
    from flask_smorest import Blueprint

    blueprint = Blueprint("publisher_feeds", __name__, description="Feeds")

    def serve(key: str, fmt: str) -> Any:
        if fmt not in FORMATS:
            return _not_found(jsonify)
        settings = current_app.config.get("PUBLISHER") or {}
        path = feeds_folder(settings) / key / fmt
        if not path.is_file():
            return _not_found(jsonify)
        return send_file(path.resolve(), mimetype=FORMATS[fmt], conditional=True, max_age=60)

    @blueprint.route("/feeds/<fmt>", parameters=[FORMAT_PARAMETER])
    @blueprint.doc(security=[], responses=FEED_RESPONSES)
    def site_feed(fmt: str) -> Any:
        """The site-wide feed"""
        return serve("", fmt)

    @blueprint.route("/feeds/topics/<topic>/<fmt>", parameters=[FORMAT_PARAMETER])
    @blueprint.doc(security=[], responses=FEED_RESPONSES)
    def topic_feed(topic: str, fmt: str) -> Any:
        """A topic's feed"""
        return serve(f"topics/{topic_slug(topic)}", fmt)

    return blueprint


FORMAT_PARAMETER = {
    "name": "fmt",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(FORMATS)},
}
FEED_RESPONSES = {
    "200": {
        "description": "The feed",
        "content": {
            "application/atom+xml": {"schema": {"type": "string"}},
            "application/rss+xml": {"schema": {"type": "string"}},
            "application/feed+json": {
                "schema": {"type": "object", "description": "a JSON Feed 1.1 document"}
            },
        },
    },
    "304": {"description": "Not modified (conditional request)"},
    "404": {"description": "No such feed"},
}


def _not_found(jsonify: Any) -> Any:
    error = NotFound("no such feed")
    return jsonify(error.to_dict()), 404


def _topic_names(raw: Any) -> list[str]:
    """Topics as clean, non-empty strings, whatever shape the field has."""
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else []
    return [name for name in (clean(str(t)).strip() for t in items if t) if name]


def _url(value: Any) -> str | None:
    text = clean(str(value or "")).strip()
    return text if text.startswith(("http://", "https://")) else None


def _parse_date(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    try:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        return None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _is_stale(index: Mapping[str, Any] | None, revision: int) -> bool:
    """A late retry of an older revision must not overwrite a newer state."""
    if not index:
        return False
    stored = int(index.get("revision", 0))
    return stored > revision or (bool(index.get("retracted")) and stored >= revision)
