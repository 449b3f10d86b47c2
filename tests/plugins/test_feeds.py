"""The feeds output: valid Atom/RSS/JSON Feed, tombstones, topics, WebSub, routes, locking."""

from __future__ import annotations

import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import feedparser
import flask
import pytest
import yaml

from publisher.errors import ConfigError
from publisher.outputs import Event, OutputRecord
from publisher_plugins import feeds

FORMATS = ("atom.xml", "rss.xml", "feed.json")
TOMBSTONE = "{http://purl.org/atompub/tombstones/1.0}deleted-entry"
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def config(tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path),
        "site_url": "https://news.example",
        "site_title": "Example News",
        "plugins": {"feeds": options},
    }


def make_output(tmp_path: Path, **options: Any) -> feeds.FeedsOutput:
    (output,) = feeds.register_outputs(config=config(tmp_path, **options))
    return output


def seed_fields() -> dict[str, Any]:
    text = (Path(__file__).parents[1] / "data" / "seed-record.md").read_text("utf-8")
    fields = yaml.safe_load(text.split("---\n")[1])
    fields.pop("secured")
    fields["published"] = True
    fields["publishedDateTime"] = fields["publishedDateTime"].isoformat()
    for item in fields["related"]:
        item["publishedDateTime"] = item["publishedDateTime"].isoformat()
    return fields


def record(rid: str, revision: int = 1, minutes: int = 0, **fields: Any) -> OutputRecord:
    base = {
        "title": f"Story {rid}",
        "excerpt": f"About {rid}",
        "webUrl": f"https://news.example/{rid}",
        "publishedDateTime": (BASE_TIME + timedelta(minutes=minutes)).isoformat(),
        "topics": ["AI"],
        "published": True,
    }
    base.update(fields)
    return OutputRecord(id=rid, revision=revision, fields=base, body=f"Body of {rid}")


def event(rec: OutputRecord, kind: str = "published") -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        delivery_id=f"{rec.id}-{rec.revision}-{kind}",
        record_id=rec.id,
        revision=rec.revision,
        occurred_at=BASE_TIME + timedelta(days=1, seconds=rec.revision),
    )


def parse(folder: Path, fmt: str) -> Any:
    return parse_bytes((folder / fmt).read_bytes(), fmt)


def parse_bytes(raw: bytes, fmt: str) -> Any:
    if fmt == "feed.json":
        return parse_json_feed(raw)
    parsed = feedparser.parse(raw)
    assert not parsed.bozo, (fmt, parsed.get("bozo_exception"))
    assert parsed.version == {"atom.xml": "atom10", "rss.xml": "rss20"}[fmt]
    return parsed


FEED_KEYS = {
    "version",
    "title",
    "home_page_url",
    "feed_url",
    "description",
    "user_comment",
    "next_url",
    "icon",
    "favicon",
    "authors",
    "language",
    "expired",
    "hubs",
    "items",
}
ITEM_KEYS = {
    "id",
    "url",
    "external_url",
    "title",
    "content_html",
    "content_text",
    "summary",
    "image",
    "banner_image",
    "date_published",
    "date_modified",
    "authors",
    "tags",
    "language",
    "attachments",
}


def parse_json_feed(raw: bytes) -> Any:
    """feedparser 6.0 cannot read JSON Feed: check the JSON Feed 1.1 rules here instead."""
    feed = json.loads(raw.decode("utf-8"))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(feed["title"], str) and feed["title"]
    assert feed["feed_url"].startswith("https://") and feed["home_page_url"].startswith("https://")
    assert all(key in FEED_KEYS or key.startswith("_") for key in feed)
    ids = [item["id"] for item in feed["items"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
    entries = []
    for item in feed["items"]:
        assert all(key in ITEM_KEYS or key.startswith("_") for key in item)
        assert isinstance(item.get("content_text") or item.get("content_html"), str)
        for key in ("date_published", "date_modified"):
            assert RFC3339.match(item[key]) and datetime.fromisoformat(item[key])
        assert all(isinstance(tag, str) for tag in item.get("tags", []))
        entries.append(
            SimpleNamespace(
                id=item["id"],
                title=item.get("title"),
                summary=item.get("summary"),
                link=item.get("url"),
                published=item["date_published"],
            )
        )
    return SimpleNamespace(bozo=False, entries=entries, feed=SimpleNamespace(title=feed["title"]))


def atom_root(folder: Path) -> ET.Element:
    return ET.parse(folder / "atom.xml").getroot()  # noqa: S314 - our own output


def ids_in(folder: Path, fmt: str) -> list[str]:
    return [entry.id for entry in parse(folder, fmt).entries]


def test_seed_record_and_fifty_more_parse_in_every_format(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    seed = OutputRecord(id="seed", revision=1, fields=seed_fields(), body="")
    output.publish(seed, event(seed))
    for number in range(50):
        rec = record(f"r{number}", minutes=number, topics=["AI", "Privacy & Law"])
        output.publish(rec, event(rec))
    site = tmp_path / "feeds"
    for fmt in FORMATS:
        entries = parse(site, fmt).entries
        assert len(entries) == 50  # the latest 50: the 2022 seed record fell out
        assert entries[0].title == "Story r49"
    topic = site / "topics" / "privacy-law"
    assert len(parse(topic, "atom.xml").entries) == 50
    assert parse(topic, "atom.xml").feed.title == "Example News: Privacy & Law"


def test_seed_record_entry_in_detail(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    fields = seed_fields()
    seed = OutputRecord(id="seed", revision=1, fields=fields, body="")
    output.publish(seed, event(seed))
    for folder in (tmp_path / "feeds", tmp_path / "feeds" / "topics" / "ai"):
        atom = parse(folder, "atom.xml").entries[0]
        assert atom.title == fields["title"] and atom.summary == fields["excerpt"]
        assert atom.id == feeds.entry_id("seed")
        assert atom.published == "2022-05-23T13:36:00Z"
        related = [link.href for link in atom.links if link.rel == "related"]
        assert related == [item["webUrl"] for item in fields["related"]]
        rss = parse(folder, "rss.xml").entries[0]
        assert rss.published == "Mon, 23 May 2022 13:36:00 GMT"
        assert rss.id == atom.id
        item = json.loads((folder / "feed.json").read_text("utf-8"))["items"][0]
        assert item["id"] == atom.id and item["url"] == fields["webUrl"]
        assert item["_publisher"]["related"][0]["url"] == fields["related"][0]["webUrl"]


def test_hard_titles_come_back_exactly(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    title = "Less <than> & \"quoted\" 'single' \U0001f600 caf\u00e9 ]]> <![CDATA[ x"
    rec = record("hard", title=title, excerpt="a < b && c > d \U0001f680")
    output.publish(rec, event(rec))
    for fmt in FORMATS:
        (entry,) = parse(tmp_path / "feeds", fmt).entries
        assert entry.title == title, fmt
        assert entry.summary in ("a < b && c > d \U0001f680",), fmt


def test_control_characters_do_not_break_the_xml(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record("ctl", title="bad\x00\x01\x0b\ud800 title", excerpt="\x1b[31mred")
    output.publish(rec, event(rec))
    for fmt in FORMATS:
        (entry,) = parse(tmp_path / "feeds", fmt).entries
        assert entry.title == "bad title"


def test_retraction_removes_the_entry_and_leaves_a_tombstone(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    keep, gone = record("keep"), record("gone", minutes=5)
    output.publish(keep, event(keep))
    output.publish(gone, event(gone))
    retracted = record("gone", revision=2, minutes=5)
    output.retract(retracted, event(retracted, "retracted"))
    output.retract(retracted, event(retracted, "retracted"))  # idempotent
    output.publish(gone, event(gone))  # a late retry of revision 1 stays out
    for folder in (tmp_path / "feeds", tmp_path / "feeds" / "topics" / "ai"):
        for fmt in FORMATS:
            assert ids_in(folder, fmt) == [feeds.entry_id("keep")]
        root = atom_root(folder)
        stones = root.findall(TOMBSTONE)
        assert [s.get("ref") for s in stones] == [feeds.entry_id("gone")]
        assert stones[0].get("when") == "2024-01-02T00:00:02Z"
    republished = record("gone", revision=3, minutes=5)
    output.publish(republished, event(republished))
    root = atom_root(tmp_path / "feeds")
    assert root.findall(TOMBSTONE) == []
    assert len(ids_in(tmp_path / "feeds", "atom.xml")) == 2


def test_tombstones_are_bounded(tmp_path: Path) -> None:
    output = make_output(tmp_path, max_tombstones=3)
    for number in range(6):
        rec = record(f"t{number}")
        output.retract(rec, event(rec, "retracted"))
    root = atom_root(tmp_path / "feeds")
    assert len(root.findall(TOMBSTONE)) == 3


def test_leaving_a_topic_removes_the_entry_from_that_topic_only(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    first = record("mover", topics=["AI", "Space"])
    output.publish(first, event(first))
    moved = record("mover", revision=2, topics=["Space"], title="Moved")
    output.publish(moved, event(moved, "updated"))
    topics = tmp_path / "feeds" / "topics"
    assert ids_in(topics / "ai", "atom.xml") == []
    assert ids_in(topics / "space", "rss.xml") == [feeds.entry_id("mover")]
    (entry,) = parse(tmp_path / "feeds", "feed.json").entries
    assert entry.title == "Moved"


def test_retractions_refill_from_the_buffer(tmp_path: Path) -> None:
    output = make_output(tmp_path, max_entries=3)
    for number in range(5):
        rec = record(f"b{number}", minutes=number)
        output.publish(rec, event(rec))
    newest = record("b4", revision=2, minutes=4)
    output.retract(newest, event(newest, "retracted"))
    assert ids_in(tmp_path / "feeds", "atom.xml") == [feeds.entry_id(f"b{n}") for n in (3, 2, 1)]


def test_state_stays_small_whatever_the_number_of_records(tmp_path: Path) -> None:
    output = make_output(tmp_path, max_entries=5)
    for number in range(40):
        rec = record(f"s{number}", minutes=number, topics=[])
        output.publish(rec, event(rec))
    state = json.loads((tmp_path / "feeds" / "state.json").read_text("utf-8"))
    assert len(state["entries"]) == 10  # max_entries plus an equal buffer


def test_concurrent_publishers_lose_no_entry(tmp_path: Path) -> None:
    # One output object per thread, like separate worker processes sharing the folder.
    def work(worker: int) -> None:
        output = make_output(tmp_path, max_entries=200)
        for number in range(12):
            rec = record(f"w{worker}-{number}", minutes=worker * 100 + number, topics=["AI"])
            output.publish(rec, event(rec))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {feeds.entry_id(f"w{w}-{n}") for w in range(8) for n in range(12)}
    for folder in (tmp_path / "feeds", tmp_path / "feeds" / "topics" / "ai"):
        for fmt in FORMATS:
            assert set(ids_in(folder, fmt)) == expected


class Hub(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        self.server.pings.append(parse_qs(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    httpd.pings = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd  # type: ignore[misc]
    httpd.shutdown()
    httpd.server_close()


def test_websub_hub_is_advertised_and_pinged(tmp_path: Path, hub: Any) -> None:
    url = f"http://127.0.0.1:{hub.server_address[1]}/"
    output = make_output(tmp_path, websub_hub=url)
    rec = record("hubbed", topics=["AI"])
    output.publish(rec, event(rec))
    site = tmp_path / "feeds"
    assert url in [link.href for link in parse(site, "atom.xml").feed.links if link.rel == "hub"]
    assert b'rel="hub"' in (site / "rss.xml").read_bytes()
    assert json.loads((site / "feed.json").read_text())["hubs"] == [{"type": "WebSub", "url": url}]
    pinged = {ping["hub.url"][0] for ping in hub.pings}
    assert {p["hub.mode"][0] for p in hub.pings} == {"publish"}
    assert "https://news.example/feeds/atom.xml" in pinged
    assert "https://news.example/feeds/topics/ai/feed.json" in pinged
    count = len(hub.pings)
    output.publish(rec, event(rec))  # nothing changed: no ping
    assert len(hub.pings) == count


def test_a_failing_hub_does_not_fail_the_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = make_output(tmp_path, websub_hub="http://127.0.0.1:9/", hub_timeout=0.5)
    rec = record("lonely")
    output.publish(rec, event(rec))
    assert ids_in(tmp_path / "feeds", "atom.xml") == [feeds.entry_id("lonely")]
    assert "WebSub hub ping failed" in caplog.text


def test_routes_serve_the_files(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    rec = record("served", topics=["Artificial Intelligence"])
    output.publish(rec, event(rec))
    app = flask.Flask("test")
    app.config["PUBLISHER"] = config(tmp_path)
    feeds.register_routes(app=app)
    client = app.test_client()
    for path, kind in [
        ("/feeds/atom.xml", "application/atom+xml"),
        ("/feeds/rss.xml", "application/rss+xml"),
        ("/feeds/feed.json", "application/feed+json"),
        ("/feeds/topics/artificial-intelligence/atom.xml", "application/atom+xml"),
        ("/feeds/topics/Artificial Intelligence/feed.json", "application/feed+json"),
    ]:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.mimetype == kind
        assert parse_bytes(answer.data, path.rsplit("/", 1)[1]).entries
        answer.close()
    for path in ("/feeds/nope.xml", "/feeds/topics/unknown/atom.xml", "/feeds/state.json"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert answer.get_json()["code"] == "not_found"


@pytest.mark.parametrize(
    "options",
    [{"max_entries": 0}, {"max_entries": "many"}, {"websub_hub": "ftp://hub"}],
)
def test_bad_configuration_is_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_output(tmp_path, **options)


def test_topic_slugs() -> None:
    assert feeds.topic_slug("AI") == "ai"
    assert feeds.topic_slug("../..").startswith("t-")
    assert feeds.topic_slug("新闻") != feeds.topic_slug("体育")


def test_odd_shapes_and_hostile_topics(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    odd = record("odd", topics="../../etc", related="not a list", publishedDateTime=None)
    output.publish(odd, event(odd))
    assert sorted(p.name for p in (tmp_path / "feeds" / "topics").iterdir()) == ["etc"]
    (entry,) = parse(tmp_path / "feeds" / "topics" / "etc", "atom.xml").entries
    assert entry.published == "2024-01-02T00:00:01Z"  # the event's time
    dots = record("dots", topics=["..", "/"])
    output.publish(dots, event(dots))
    for folder in (tmp_path / "feeds" / "topics").iterdir():
        assert folder.resolve().parent == (tmp_path / "feeds" / "topics").resolve()


def feed_files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def test_a_batch_writes_what_the_same_deliveries_one_by_one_write(tmp_path: Path) -> None:
    one, many = make_output(tmp_path / "one"), make_output(tmp_path / "many")
    first = [record(f"r{n}", minutes=n, topics=["AI", f"T{n % 2}"]) for n in range(6)]
    moved = record("r1", revision=2, minutes=1, topics=["Sport"], title="Moved on")
    items = [(rec, event(rec)) for rec in first] + [(moved, event(moved))]
    items.append((first[3], event(first[3], "retracted")))
    for rec, evt in items:
        (one.retract if evt.kind == "retracted" else one.publish)(rec, evt)
    assert many.deliver_many(items) == [None] * len(items)
    assert feed_files(one.folder) == feed_files(many.folder)
    titles = [entry.title for entry in parse(many.folder / "topics" / "sport", "atom.xml").entries]
    assert titles == ["Moved on"]


def test_one_bad_record_in_a_batch_fails_alone(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    good = record("good")
    bad = OutputRecord(id="bad", revision=1, fields={"topics": ["AI"]}, body=None)  # type: ignore[arg-type]
    outcomes = output.deliver_many([(bad, event(bad)), (good, event(good))])
    assert isinstance(outcomes[0], Exception) and outcomes[1] is None
    assert [e.title for e in parse(output.folder, "atom.xml").entries] == ["Story good"]


def test_rendered_entries_are_reused_only_while_their_content_is_the_same(tmp_path: Path) -> None:
    output = make_output(tmp_path)
    first = record("cache-1", title="First words")
    output.publish(first, event(first))
    before = (output.folder / "atom.xml").read_bytes()
    output.publish(first, event(first))  # the same delivery again: nothing changes
    assert (output.folder / "atom.xml").read_bytes() == before
    # same id, same revision, same time, other content (as in another deployment)
    other = make_output(tmp_path / "other")
    changed = record("cache-1", title="First words", excerpt="Something else entirely")
    other.publish(changed, event(changed))
    (entry,) = parse(other.folder, "atom.xml").entries
    assert entry.summary == "Something else entirely"
