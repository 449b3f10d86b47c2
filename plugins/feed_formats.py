"""The three formats of the ``feeds`` output: Atom 1.0, RSS 2.0 and JSON Feed 1.1.

:class:`FeedView` turns one feed's state (its entries and tombstones, as ``feeds`` keeps
them) into the bytes of each file; it reads and writes nothing. Written with the standard
library (``xml.etree`` and ``json``): see ``docs/decisions/feeds.md`` for why not feedgen.
This module is a helper of ``publisher_plugins.feeds``, not a plugin: it has no hooks.
"""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from publisher_plugins.feeds import FeedSettings

ATOM_NS = "http://www.w3.org/2005/Atom"
TOMBSTONE_NS = "http://purl.org/atompub/tombstones/1.0"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
FORMATS = {
    "atom.xml": "application/atom+xml; charset=utf-8",
    "rss.xml": "application/rss+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
}
ID_NAMESPACE = uuid.UUID("6f1c1f8e-3d55-5b8e-9a57-6c1b8f0d2a11")  # fixed: ids never change
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def entry_id(record_id: str) -> str:
    """The id of a record's entry in every feed and format: a stable ``urn:uuid``."""
    return "urn:uuid:" + str(uuid.uuid5(ID_NAMESPACE, record_id))


def clean(text: str) -> str:
    """Drop what XML 1.0 cannot carry (most control characters, lone surrogates)."""
    return _NOT_XML.sub("", str(text))


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
        return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

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


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: clean(v) for k, v in attrs.items()})
    if text is not None:
        node.text = clean(text)
    return node


def _rfc822(stamp: str) -> str:
    return format_datetime(datetime.fromisoformat(stamp).astimezone(UTC), usegmt=True)
