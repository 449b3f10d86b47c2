"""The three formats of the ``feeds`` output: Atom 1.0, RSS 2.0 and JSON Feed 1.1.

:class:`FeedView` turns one feed's state (its entries and tombstones, as ``feeds`` keeps
them) into the bytes of each file; it reads and writes nothing. Written with the standard
library (``xml.etree`` and ``json``): see ``docs/decisions/feeds.md`` for why not feedgen.
This module is a helper of ``publisher_plugins.feeds``, not a plugin: it has no hooks.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Mapping
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
XML_DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def entry_id(record_id: str) -> str:
    """The id of a record's entry in every feed and format: a stable ``urn:uuid``."""
    return "urn:uuid:" + str(uuid.uuid5(ID_NAMESPACE, record_id))


def digest(entry: Mapping[str, Any]) -> str:
    """What identifies an entry's content (``make_entry`` stores it in the entry)."""
    text = json.dumps({k: v for k, v in entry.items() if k != "digest"}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
        entries = [self._fragment("atom", entry, _atom_entry) for entry in self.entries]
        stones = [
            _xml(ET.Element("at:deleted-entry", {"ref": clean(t["ref"]), "when": clean(t["when"])}))
            for t in self.tombstones
        ]
        return _document(feed, "feed", entries + stones)

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
        items = [self._fragment("rss", entry, _rss_item) for entry in self.entries]
        return _document(rss, "channel></rss", items)

    def json_feed(self) -> bytes:
        head: dict[str, Any] = {
            "version": JSONFEED_VERSION,
            "title": self.title,
            "home_page_url": self.s.site_url + "/",
            "feed_url": self._url("feed.json"),
        }
        items = ",".join(self._fragment("json", entry, _json_item) for entry in self.entries)
        text = _json(head)[:-1] + f',"items":[{items}]'
        if self.s.websub_hub:
            text += ',"hubs":' + _json([{"type": "WebSub", "url": self.s.websub_hub}])
        return (text + "}").encode("utf-8")

    def _fragment(
        self, fmt: str, entry: Mapping[str, Any], render: Callable[[Mapping[str, Any]], str]
    ) -> str:
        """An entry's text in ``fmt``, from the cache when this process rendered it before."""
        return FRAGMENTS.get((fmt, entry.get("digest") or digest(entry)), lambda: render(entry))

    def _url(self, fmt: str) -> str:
        return self.s.feed_url(self.key, fmt)


class Fragments:
    """A bounded cache of rendered entries, shared by every feed of this process.

    A batch re-renders whole feeds (up to ``max_entries`` entries in three formats) although
    most entries did not change since the last batch: serialising only the new ones is most
    of the saving. Fragments are keyed by the digest of everything the entry holds, so a
    changed entry can never be served stale; least recently used fragments go first.
    """

    def __init__(self, size: int = 2000) -> None:
        self.size = size
        self.items: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Callable[[], str]) -> str:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        text = make()
        with self.lock:
            self.items[key] = text
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return text


FRAGMENTS = Fragments()


def _atom_entry(entry: Mapping[str, Any]) -> str:
    node = ET.Element("entry")
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
    return _xml(node)


def _rss_item(entry: Mapping[str, Any]) -> str:
    item = ET.Element("item")
    _sub(item, "title", entry["title"])
    _sub(item, "link", entry["link"])
    _sub(item, "description", entry["summary"] or entry["title"])
    _sub(item, "guid", entry["id"], isPermaLink="false")
    _sub(item, "pubDate", _rfc822(entry["published"]))
    for topic in entry["topics"]:
        _sub(item, "category", topic)
    return _xml(item)


def _json_item(entry: Mapping[str, Any]) -> str:
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
    return _json(item)


def _document(root: ET.Element, closing: str, children: list[str]) -> bytes:
    """``root`` serialised with ``children`` (already serialised) appended inside the element
    that ``closing`` ends (``</feed>``, or ``</channel></rss>``)."""
    text = _xml(root)
    end = f"</{closing}>"
    if not text.endswith(end):  # pragma: no cover - the roots above always have children
        raise ValueError(f"cannot append to {text[-40:]!r}")
    body = text[: -len(end)] + "".join(children) + end
    return (XML_DECLARATION + body).encode("utf-8")


def _xml(node: ET.Element) -> str:
    return ET.tostring(node, encoding="unicode")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: clean(v) for k, v in attrs.items()})
    if text is not None:
        node.text = clean(text)
    return node


def _rfc822(stamp: str) -> str:
    return format_datetime(datetime.fromisoformat(stamp).astimezone(UTC), usegmt=True)
