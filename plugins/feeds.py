"""The ``feeds`` output: Atom 1.0, RSS 2.0 and JSON Feed 1.1, site-wide and per topic.

Cost does not depend on how many records are stored: each feed keeps its own small state
(``state.json``: its latest entries, plus recent RFC 6721 tombstones) beside its files, and a
publish touches only the site feed and the feeds of the record's topics (and of topics it
left, known from a small per-record index). All changes happen under one exclusive
``flock`` so concurrent threads and processes never lose an update; files are replaced
atomically. The three formats are written with the standard library (``xml.etree`` and
``json``); see ``docs/decisions/feeds.md`` for why not feedgen.

The app serves the files at ``/feeds/...`` through the ``register_routes`` hook.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import requests

from publisher.errors import ConfigError, NotFound
from publisher.fileio import atomic_write, locked
from publisher.hookspecs import hookimpl
from publisher.outputs import Event, OutputRecord

log = logging.getLogger(__name__)

ATOM_NS = "http://www.w3.org/2005/Atom"
TOMBSTONE_NS = "http://purl.org/atompub/tombstones/1.0"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
FORMATS = {
    "atom.xml": "application/atom+xml; charset=utf-8",
    "rss.xml": "application/rss+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
}
ID_NAMESPACE = uuid.UUID("6f1c1f8e-3d55-5b8e-9a57-6c1b8f0d2a11")  # fixed: ids never change
MAX_CONTENT = 20_000
MAX_RELATED = 20
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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


def entry_id(record_id: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(ID_NAMESPACE, record_id))


@hookimpl
def register_outputs(config: Mapping[str, Any]) -> list[FeedsOutput]:
    return [FeedsOutput(FeedSettings.from_config(config))]


@hookimpl
def register_routes(app: Any) -> None:
    app.register_blueprint(_blueprint())


class FeedsOutput:
    """Keeps the feeds' state and files; one lock for every change."""

    name = "feeds"
    accepts_protected = False

    def __init__(self, settings: FeedSettings) -> None:
        self.settings = settings
        self.folder = settings.folder

    def publish(self, record: OutputRecord, event: Event) -> None:
        with self._locked():
            index = self._read_json(self._index_path(record.id))
            if _is_stale(index, event.revision):
                return
            entry = make_entry(record, event, self.settings.site_url)
            topics = self._topics(record)
            keys = {"": ""} | {f"topics/{s}": n for s, n in topics.items()}
            left = {f"topics/{s}": n for s, n in (index or {}).get("topics", {}).items()}
            changed = [k for k, n in (left | keys).items() if self._apply(k, n, record, entry)]
            self._write_json(
                self._index_path(record.id), {"revision": event.revision, "topics": topics}
            )
        self._ping(changed)

    def retract(self, record: OutputRecord, event: Event) -> None:
        with self._locked():
            index = self._read_json(self._index_path(record.id))
            if index and int(index.get("revision", 0)) > event.revision:
                return
            topics = (index or {}).get("topics", {}) | self._topics(record)
            keys = {"": ""} | {f"topics/{s}": n for s, n in topics.items()}
            stone = {"ref": entry_id(record.id), "when": _rfc3339(event.occurred_at)}
            changed = [k for k, n in keys.items() if self._apply(k, n, record, None, stone)]
            index = {"revision": event.revision, "retracted": True, "topics": {}}
            self._write_json(self._index_path(record.id), index)
        self._ping(changed)

    def _topics(self, record: OutputRecord) -> dict[str, str]:
        topics = {topic_slug(name): name for name in _topic_names(record.fields.get("topics"))}
        return dict(list(topics.items())[: self.settings.max_topics])

    def _apply(
        self,
        key: str,
        topic: str,
        record: OutputRecord,
        entry: dict[str, Any] | None,
        stone: dict[str, str] | None = None,
    ) -> bool:
        """Put ``entry`` in feed ``key`` (or take the record out); write it if it changed."""
        path = self.folder / key / "state.json"
        state = self._read_json(path) or {"topic": topic}
        state.setdefault("entries", [])
        state.setdefault("tombstones", [])
        before = json.dumps(state, sort_keys=True)
        ref = entry_id(record.id)
        entries = [e for e in state["entries"] if e["record_id"] != record.id]
        stones = [s for s in state["tombstones"] if s["ref"] != ref]
        in_feed = not key or key.removeprefix("topics/") in self._topics(record)
        if entry is not None and in_feed:
            entries.append(entry)
        if stone is not None:
            stones.append(stone)
        entries.sort(key=lambda e: (e["published"], e["record_id"]), reverse=True)
        stones.sort(key=lambda s: (s["when"], s["ref"]), reverse=True)
        state["entries"] = entries[: 2 * self.settings.max_entries]  # a buffer for retractions
        state["tombstones"] = stones[: self.settings.max_tombstones]
        if (
            json.dumps(state, sort_keys=True) == before
            and (self.folder / key / "atom.xml").exists()
        ):
            return False
        self._render(key, state)
        self._write_json(path, state)
        return True

    def _render(self, key: str, state: dict[str, Any]) -> None:
        view = FeedView(self.settings, key, state)
        folder = self.folder / key
        atomic_write(folder / "atom.xml", view.atom())
        atomic_write(folder / "rss.xml", view.rss())
        atomic_write(folder / "feed.json", view.json_feed())

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

    def _index_path(self, record_id: str) -> Path:
        digest = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.folder / ".index" / f"{digest}.json"

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _write_json(path: Path, data: Mapping[str, Any]) -> None:
        atomic_write(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))

    def _locked(self) -> AbstractContextManager[None]:
        """One writer at a time, across threads and processes."""
        return locked(self.folder / ".lock")


def make_entry(record: OutputRecord, event: Event, site_url: str) -> dict[str, Any]:
    """What a feed keeps of a record: small, JSON-ready, XML-safe text."""
    fields = record.fields
    published = _parse_date(fields.get("publishedDateTime")) or event.occurred_at
    link = _url(fields.get("webUrl")) or _url(fields.get("originalUrl")) or site_url + "/"
    original = _url(fields.get("originalUrl"))
    related = [
        {"title": _clean(item.get("title") or ""), "url": _url(item.get("webUrl"))}
        for item in (fields.get("related") or [])[:MAX_RELATED]
        if isinstance(item, Mapping) and _url(item.get("webUrl"))
    ]
    provider = fields.get("provider")
    return {
        "record_id": record.id,
        "id": entry_id(record.id),
        "revision": event.revision,
        "title": _clean(record.title),
        "summary": _clean(fields.get("excerpt") or ""),
        "content": _clean(record.body[:MAX_CONTENT]),
        "link": link,
        "external_url": original if original and original != link else None,
        "published": _rfc3339(published),
        "updated": _rfc3339(max(published, event.occurred_at)),
        "topics": _topic_names(fields.get("topics")),
        "category": _clean(str(fields.get("category") or "")),
        "author": _clean(str(provider.get("name") or "")) if isinstance(provider, Mapping) else "",
        "related": related,
    }


class FeedView:
    """Renders one feed's state in the three formats."""

    def __init__(self, settings: FeedSettings, key: str, state: Mapping[str, Any]) -> None:
        self.s = settings
        self.key = key
        self.entries = state["entries"][: settings.max_entries]
        self.tombstones = state["tombstones"]
        topic = state.get("topic")
        self.title = f"{settings.site_title}: {topic}" if topic else settings.site_title
        stamps = [e["updated"] for e in self.entries] + [t["when"] for t in self.tombstones]
        self.updated = max(stamps, default="1970-01-01T00:00:00Z")

    def atom(self) -> bytes:
        feed = ET.Element("feed", {"xmlns": ATOM_NS, "xmlns:at": TOMBSTONE_NS})
        _sub(feed, "id", entry_id(f"feed:{self.key}"))
        _sub(feed, "title", self.title, type="text")
        _sub(feed, "updated", self.updated)
        _sub(
            feed,
            "link",
            rel="self",
            type=FORMATS["atom.xml"].split(";")[0],
            href=self._url("atom.xml"),
        )
        _sub(feed, "link", rel="alternate", type="text/html", href=self.s.site_url + "/")
        if self.s.websub_hub:
            _sub(feed, "link", rel="hub", href=self.s.websub_hub)
        _sub(_sub(feed, "author"), "name", self.s.site_title)
        _sub(feed, "generator", "publisher")
        for entry in self.entries:
            self._atom_entry(feed, entry)
        for stone in self.tombstones:
            _sub(feed, "at:deleted-entry", ref=stone["ref"], when=stone["when"])
        return ET.tostring(feed, encoding="utf-8", xml_declaration=True)

    def _atom_entry(self, feed: ET.Element, entry: Mapping[str, Any]) -> None:
        node = _sub(feed, "entry")
        _sub(node, "id", entry["id"])
        _sub(node, "title", entry["title"], type="text")
        _sub(node, "updated", entry["updated"])
        _sub(node, "published", entry["published"])
        _sub(node, "link", rel="alternate", type="text/html", href=entry["link"])
        if entry["external_url"]:
            _sub(node, "link", rel="via", href=entry["external_url"])
        for item in entry["related"]:
            _sub(node, "link", rel="related", href=item["url"], title=item["title"])
        if entry["author"]:
            _sub(_sub(node, "author"), "name", entry["author"])
        for topic in entry["topics"]:
            _sub(node, "category", term=topic)
        if entry["summary"]:
            _sub(node, "summary", entry["summary"], type="text")
        if entry["content"]:
            _sub(node, "content", entry["content"], type="text")

    def rss(self) -> bytes:
        rss = ET.Element("rss", {"version": "2.0", "xmlns:atom": ATOM_NS})
        channel = _sub(rss, "channel")
        _sub(channel, "title", self.title)
        _sub(channel, "link", self.s.site_url + "/")
        _sub(channel, "description", self.title)
        _sub(channel, "lastBuildDate", _rfc822(self.updated))
        _sub(channel, "generator", "publisher")
        _sub(
            channel, "atom:link", rel="self", type="application/rss+xml", href=self._url("rss.xml")
        )
        if self.s.websub_hub:
            _sub(channel, "atom:link", rel="hub", href=self.s.websub_hub)
        for entry in self.entries:
            item = _sub(channel, "item")
            _sub(item, "title", entry["title"])
            _sub(item, "link", entry["link"])
            _sub(item, "description", entry["summary"] or entry["title"])
            _sub(item, "guid", entry["id"], isPermaLink="false")
            _sub(item, "pubDate", _rfc822(entry["published"]))
            for topic in entry["topics"]:
                _sub(item, "category", topic)
        return ET.tostring(rss, encoding="utf-8", xml_declaration=True)

    def json_feed(self) -> bytes:
        feed: dict[str, Any] = {
            "version": JSONFEED_VERSION,
            "title": self.title,
            "home_page_url": self.s.site_url + "/",
            "feed_url": self._url("feed.json"),
            "items": [self._json_item(entry) for entry in self.entries],
        }
        if self.s.websub_hub:
            feed["hubs"] = [{"type": "WebSub", "url": self.s.websub_hub}]
        return json.dumps(feed, ensure_ascii=False, indent=1).encode("utf-8")

    @staticmethod
    def _json_item(entry: Mapping[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": entry["id"],
            "url": entry["link"],
            "title": entry["title"],
            "content_text": entry["content"] or entry["summary"] or entry["title"],
            "date_published": entry["published"],
            "date_modified": entry["updated"],
            "tags": entry["topics"],
            "_publisher": {"record_id": entry["record_id"], "related": entry["related"]},
        }
        if entry["summary"]:
            item["summary"] = entry["summary"]
        if entry["external_url"]:
            item["external_url"] = entry["external_url"]
        if entry["author"]:
            item["authors"] = [{"name": entry["author"]}]
        return item

    def _url(self, fmt: str) -> str:
        return self.s.feed_url(self.key, fmt)


def _blueprint() -> Any:
    """``/feeds/...`` routes reading the files from the folder the settings name."""
    from flask import Blueprint, current_app, jsonify, send_file

    blueprint = Blueprint("publisher_feeds", __name__)

    def serve(key: str, fmt: str) -> Any:
        if fmt not in FORMATS:
            return _not_found(jsonify)
        settings = current_app.config.get("PUBLISHER") or {}
        path = feeds_folder(settings) / key / fmt
        if not path.is_file():
            return _not_found(jsonify)
        return send_file(path.resolve(), mimetype=FORMATS[fmt], conditional=True, max_age=60)

    @blueprint.get("/feeds/<fmt>")
    def site_feed(fmt: str) -> Any:
        return serve("", fmt)

    @blueprint.get("/feeds/topics/<topic>/<fmt>")
    def topic_feed(topic: str, fmt: str) -> Any:
        return serve(f"topics/{topic_slug(topic)}", fmt)

    return blueprint


def _not_found(jsonify: Any) -> Any:
    error = NotFound("no such feed")
    return jsonify(error.to_dict()), 404


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text is not None:
        node.text = _clean(text)
    return node


def _topic_names(raw: Any) -> list[str]:
    """Topics as clean, non-empty strings, whatever shape the field has."""
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else []
    return [name for name in (_clean(str(t)).strip() for t in items if t) if name]


def _clean(text: str) -> str:
    """Drop what XML 1.0 cannot carry (most control characters, lone surrogates)."""
    return _NOT_XML.sub("", str(text))


def _url(value: Any) -> str | None:
    text = _clean(str(value or "")).strip()
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


def _rfc822(stamp: str) -> str:
    return format_datetime(datetime.fromisoformat(stamp).astimezone(UTC), usegmt=True)


def _is_stale(index: Mapping[str, Any] | None, revision: int) -> bool:
    """A late retry of an older revision must not overwrite a newer state."""
    if not index:
        return False
    stored = int(index.get("revision", 0))
    return stored > revision or (bool(index.get("retracted")) and stored >= revision)
