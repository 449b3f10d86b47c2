"""Scale: the same figures on an empty store and with ``--records`` records already stored.

``.venv/bin/python bench/scale.py [--records 200000] [--backends embedded,postgres+redis]``
(``make bench`` runs it as its ``scale`` section with 20,000 records).

On one store per backend, first empty, then filled: intake (API and webhook vs bare Flask,
``bench/run.py``'s rounds), delivery (files + feeds vs the huey no-op floor), the latency of
the reads (the API's list, its filters and topics, one record, the deliveries listing, the
operator page's calls, the feeds, ``/metrics``, ``/readyz``: ``--reads`` sequential calls
each, p50/p99) and the publish latency (from the ``202`` to visible in the Atom feed and in
the files output) at half of the intake rate just measured. The fill writes rows directly,
in the shape the intake and a finished delivery leave them (a record, its revision, its
topics, a live placement and a done delivery with its attempt per output): what
``publisher ingest`` then the worker would leave, in seconds instead of an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run  # noqa: E402

OUTPUTS = ("files", "feeds")
COMMON_TOPIC = "AI"  # the seed record's topic: in a third of the stored records
#: topics of the stored records: one common, a few dozen mid-sized, one rare
TOPICS = [f"topic-{n}" for n in range(40)]
RARE_TOPIC = "rare"
RARE_EVERY = 10_000
CHUNK = 2_000
#: entries of the feed the publish latency watches (``plugins.feeds.max_entries``): two
#: batches of deliveries, so none falls out unseen; 1000 would cost the latency (performance.md)
FEED_ENTRIES = 200
FEED_ID = re.compile(r"<id>(urn:uuid:[^<]+)</id>")
TARGETS = {"intake": 0.10, "delivery": 0.20, "read_p99_ms": 50.0, "publish_p99_ms": 1000.0}


# -- the fill ---------------------------------------------------------------------------------


def fill(settings: dict[str, Any], count: int) -> float:
    """Write ``count`` published, delivered records; returns the seconds it took."""
    from sqlalchemy import func, select

    from publisher.config import load_settings
    from publisher.db import make_engine, upgrade
    from publisher.models import Record

    url = load_settings(overrides=settings, environ={})["database_url"]
    upgrade(url)
    engine = make_engine(url)
    began = time.perf_counter()
    seed = run.record_body(0)
    with engine.begin() as connection:
        start = int(connection.scalar(select(func.max(Record.seq))) or 0) + 1
    tables = ("records", "revisions", "record_topics", "placements", "deliveries")
    tables += ("delivery_attempts",)
    postgres = engine.dialect.name == "postgresql"
    raw = engine.raw_connection()  # the driver's own bulk paths: COPY, executemany
    try:
        if not postgres:
            raw.driver_connection.execute("PRAGMA synchronous=OFF")  # a bench fill, not data
        for low in range(0, count, CHUNK):
            rows = _rows(seed, start + low, min(CHUNK, count - low), count - low)
            for table, values in zip(tables, rows, strict=True):
                _write(raw, table, values, postgres)
            raw.commit()
        if postgres:  # as autovacuum would; the service never runs ANALYZE on SQLite
            seq = "SELECT setval(pg_get_serial_sequence('records', 'seq'), max(seq)) FROM records"
            raw.driver_connection.execute(seq)
            raw.driver_connection.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    engine.dispose()
    return time.perf_counter() - began


def _write(raw: Any, table: str, rows: list[dict[str, Any]], postgres: bool) -> None:
    """``rows`` into ``table`` as the models store them (JSON text, naive UTC times)."""
    columns = list(rows[0])
    values = [[_column_value(row[c], postgres) for c in columns] for row in rows]
    names = ", ".join(columns)
    if postgres:
        with (
            raw.driver_connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            for value in values:
                copy.write_row(value)
        return
    marks = ", ".join("?" * len(columns))
    raw.driver_connection.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)  # noqa: S608


def _column_value(value: Any, postgres: bool) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive if postgres else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool) and not postgres:
        return int(value)
    return value


def _rows(seed: dict[str, Any], first: int, size: int, age: int) -> tuple[list[Any], ...]:
    records, revisions, topics, placements, deliveries, attempts = [], [], [], [], [], []
    now = datetime.now(UTC)
    for n in range(first, first + size):
        rid = f"scale-{n}"
        when = now - timedelta(seconds=age - (n - first))
        tags = [TOPICS[n % len(TOPICS)]] + ([COMMON_TOPIC] if n % 3 == 0 else [])
        tags += [RARE_TOPIC] if n % RARE_EVERY == 0 else []
        fields = dict(seed, id=rid, title=f"Scale record {n}", topics=tags)
        digest = hashlib.sha256(rid.encode()).hexdigest()
        records.append(
            {"seq": n, "id": rid, "revision": 1, "source": "bench", "state": "published",
             "published": True, "fields": fields, "body": "", "content_hash": digest,
             "meaning_hash": digest, "meaning_revision": 1, "secured_status": "absent",
             "warnings": [], "published_at": when, "expires_at": None, "created_at": when,
             "updated_at": when}
        )  # fmt: skip
        revisions.append(
            {"record_id": rid, "revision": 1, "fields": fields, "body": "",
             "content_hash": digest, "event": "published", "created_at": when}
        )  # fmt: skip
        topics += [{"record_id": rid, "topic": t, **_topic_extra(n)} for t in tags]
        for output in OUTPUTS:
            did = f"dlv_{uuid.uuid4().hex}"
            placements.append(
                {"record_id": rid, "output": output, "state": "live", "revision": 1,
                 "held_revision": 1, "updated_at": when}
            )  # fmt: skip
            deliveries.append(
                {"id": did, "record_id": rid, "revision": 1, "output": output,
                 "event": "published", "status": "done", "attempts": 1, "receives": 1,
                 "error": None, "next_attempt_at": when, "lease_until": None,
                 "enqueued_at": when, "request_id": None, "occurred_at": when, "resend": False,
                 "created_at": when, "updated_at": when}
            )  # fmt: skip
            attempts.append(
                {"delivery_id": did, "at": when, "outcome": "delivered", "event": "published",
                 "status_code": None, "error": None, "duration_ms": 3}
            )  # fmt: skip
    return records, revisions, topics, placements, deliveries, attempts


def _topic_extra(seq: int) -> dict[str, Any]:
    """The record's ``seq`` on its topic rows, where the schema keeps it there."""
    from publisher.models import RecordTopic

    return {"record_seq": seq} if "record_seq" in RecordTopic.__table__.c else {}


# -- reads ------------------------------------------------------------------------------------


def reads(port: int, token: str, calls: int) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of ``calls`` sequential GETs of each read, after one warm-up call."""
    base = f"http://127.0.0.1:{port}"
    newest = _get(base, "/api/v1/records?limit=1", token)["items"]
    one = newest[0]["id"] if newest else "none"
    paths = {
        "records list": "/api/v1/records",
        "records ?published=true": "/api/v1/records?published=true",
        "records ?published=false": "/api/v1/records?published=false",
        "records ?state=published": "/api/v1/records?state=published",
        f"records ?topic={COMMON_TOPIC} (common)": f"/api/v1/records?topic={COMMON_TOPIC}",
        "records ?topic=topic-7 (1/40)": "/api/v1/records?topic=topic-7",
        f"records ?topic={RARE_TOPIC} (1/{RARE_EVERY:,})": f"/api/v1/records?topic={RARE_TOPIC}",
        "one record": f"/api/v1/records/{one}",
        "deliveries list": "/api/v1/deliveries",
        "deliveries ?limit=200": "/api/v1/deliveries?limit=200",
        "deliveries ?status=done": "/api/v1/deliveries?status=done",
        "deliveries ?status=dead": "/api/v1/deliveries?status=dead",
        "deliveries ?output=feeds": "/api/v1/deliveries?output=feeds",
        "overview records": "/api/v1/overview/records",
        f"overview ?topic={COMMON_TOPIC}": f"/api/v1/overview/records?topic={COMMON_TOPIC}",
        "overview ?delivery=dead": "/api/v1/overview/records?delivery=dead",
        "overview counts": "/api/v1/overview/counts",
        "feed atom": "/feeds/atom.xml",
        f"feed topic {COMMON_TOPIC}": f"/feeds/topics/{COMMON_TOPIC.lower()}/atom.xml",
        "/metrics": "/metrics",
        "/readyz": "/readyz",
    }
    found: dict[str, dict[str, float]] = {}
    for name, path in paths.items():
        times = []
        status = _status(base + path, token)
        for _ in range(calls):
            began = time.perf_counter()
            _status(base + path, token)
            times.append((time.perf_counter() - began) * 1000)
        found[name] = {"p50": _pct(times, 50), "p99": _pct(times, 99), "status": status}
    return found


def _pct(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _request(url: str, token: str, data: bytes | None = None) -> urllib.request.Request:
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=data, headers=headers)


def _status(url: str, token: str) -> int:
    try:
        with urllib.request.urlopen(_request(url, token), timeout=30) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _get(base: str, path: str, token: str) -> Any:
    with urllib.request.urlopen(_request(base + path, token), timeout=30) as answer:
        return json.loads(answer.read())


# -- publish latency --------------------------------------------------------------------------


def publish_latency(
    port: int, token: str, data_dir: Path, rate: float, seconds: float
) -> dict[str, float]:
    """Records sent at ``rate``/s; ms from each ``202`` until its entry is in the Atom feed
    (read over HTTP, as a reader would) and its file's index is written by the files output.

    The feed is served with :data:`FEED_ENTRIES` entries (``publishing``): with the default
    50, a batch of deliveries pushed entries out between two polls and they were never seen.
    """
    from plugins.feed_formats import entry_id
    from plugins.files import STATE_DIR, record_hash

    base = f"http://127.0.0.1:{port}"
    accepted: dict[str, float] = {}
    visible: dict[str, float] = {}
    sending = threading.Event()
    sending.set()
    run_id = uuid.uuid4().hex[:6]
    index = data_dir / "site" / STATE_DIR / "index"

    lock = threading.Lock()

    def watch() -> None:
        while sending.is_set() or len(visible) < len(accepted):
            with contextlib.suppress(OSError, http.client.HTTPException):
                with urllib.request.urlopen(base + "/feeds/atom.xml", timeout=10) as answer:
                    feed = set(FEED_ID.findall(answer.read().decode()))
                now = time.perf_counter()
                with lock:
                    outstanding = [r for r in accepted if r not in visible]
                for rid in outstanding:
                    if entry_id(rid) in feed and (index / f"{record_hash(rid, 32)}.json").is_file():
                        visible[rid] = now
            if not sending.is_set() and time.perf_counter() - stopped[0] > 30:
                return  # what is still not there after 30 s counts as lost
            time.sleep(0.02)

    def send(n: int) -> None:
        rid = f"lat-{run_id}-{n:06d}"
        # published now, as a newsroom publishes: feeds are ordered by publication time
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fields = dict(run.record_body(0), id=rid, title=f"Latency {n}", publishedDateTime=stamp)
        request = _request(base + "/api/v1/records", token, json.dumps(fields).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        with lock:
            accepted[rid] = time.perf_counter()

    stopped = [float("inf")]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.perf_counter()
    n = 0
    with ThreadPoolExecutor(8) as senders:  # the rate holds while a request takes long
        while time.perf_counter() - began < seconds:
            time.sleep(max(0.0, began + n / rate - time.perf_counter()))
            senders.submit(send, n)
            n += 1
    stopped[0] = time.perf_counter()
    sending.clear()
    watcher.join(60)
    waits = [(visible[r] - accepted[r]) * 1000 for r in accepted if r in visible]
    return {
        "rate": rate,
        "sent": len(accepted),
        "seconds": seconds,
        "seen": len(waits),
        "p50": _pct(waits, 50) if waits else float("nan"),
        "p99": _pct(waits, 99) if waits else float("nan"),
    }


@contextlib.contextmanager
def served(settings: dict[str, Any], work: Path) -> Iterator[int]:
    """gunicorn (2 workers) with a ``publisher worker`` beside it, as deployed."""
    config = run.write_config(settings, work)
    env = {**run.ENV, "PUBLISHER_CONFIG": str(config)}
    worker = subprocess.Popen(
        [sys.executable, "-c", "from publisher.cli import main; main()", "worker"],
        env=env, cwd=run.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with run.gunicorn("wsgi:app", config) as (port, _):
            yield port
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def drained(settings: dict[str, Any], limit: float = 600.0) -> float:
    """Wait until the worker has taken in every webhook and has no pending delivery left
    (what intake left behind): the reads and the publish latency are measured on a quiet
    worker, not beside the intake section's backlog. Returns the seconds it waited."""
    from sqlalchemy import func, select

    from publisher.config import load_settings
    from publisher.db import make_engine
    from publisher.models import Delivery, InboxItem

    engine = make_engine(load_settings(overrides=settings, environ={})["database_url"])
    pending = select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
    inbox = select(func.count()).select_from(InboxItem)
    unread = inbox.where(InboxItem.status.in_(("pending", "processing")))
    began = time.monotonic()
    try:
        while time.monotonic() < began + limit:
            with engine.connect() as connection:
                if not connection.scalar(unread) and not connection.scalar(pending):
                    return time.monotonic() - began
            time.sleep(0.5)
        run.say("  (webhooks or deliveries still pending: measuring anyway)")
        return float("inf")
    finally:
        engine.dispose()


# -- one store, empty then filled -------------------------------------------------------------


def measure(settings: dict[str, Any], work: Path, args: Any, label: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    sections = args.sections.split(",")
    if "intake" in sections:
        run.say(f"  [{label}] intake")
        found["intake"] = run.section_intake(settings, work / f"intake-{label}", args)
    if "delivery" in sections:
        run.say(f"  [{label}] delivery")
        record = work / "record.json"
        record.write_text(json.dumps(run.record_body(0)))
        data = Path(settings["data_dir"])
        found["delivery"] = {
            mode: run.run_delivery(settings, data, record, mode, args)
            for mode in ("deliver", "noop")
        }
    token = run.make_token(settings)
    if "reads" in sections:
        with served(settings, work) as port:
            found["backlog_seconds"] = drained(settings)
            run.say(f"  [{label}] reads (after {found['backlog_seconds']:.0f} s of backlog)")
            found["reads"] = reads(port, token, args.reads)
    if "publish" in sections:
        intake_rps = found.get("intake", {}).get("api", {}).get("rps") or 40.0
        rate = getattr(args, "publish_rate", 0.0) or max(intake_rps / 2, 1.0)
        feed_entries = getattr(args, "feed_entries", FEED_ENTRIES)
        with served(publishing(settings, feed_entries), work) as port:
            drained(settings)
            run.say(f"  [{label}] publish latency at {rate:.0f}/s")
            found["publish"] = publish_latency(
                port, token, Path(settings["data_dir"]), rate, args.publish_seconds
            )
    return found


def publishing(settings: dict[str, Any], entries: int = FEED_ENTRIES) -> dict[str, Any]:
    """``settings`` with a feed long enough for the publish latency's watcher to see every
    record (the reads are timed on the default feed)."""
    plugins = dict(settings.get("plugins") or {})
    plugins["feeds"] = {**(plugins.get("feeds") or {}), "max_entries": entries}
    return {**settings, "plugins": plugins}


def one_backend(name: str, args: Any) -> dict[str, Any] | None:
    with (
        tempfile.TemporaryDirectory(prefix="publisher-scale-") as tmp,
        run.backend(name, Path(tmp)) as settings,
    ):
        if settings is None:
            return None
        return on_store(settings, Path(tmp) / "work", args)


def on_store(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    """The figures on this (empty) store, then again once ``args.records`` are stored."""
    for folder in ("intake-empty", f"intake-{args.records}"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "records": args.records,
        "empty": measure(settings, work, args, "empty"),
    }
    run.say(f"  filling {args.records:,} records")
    result["fill_seconds"] = fill(settings, args.records)
    run.say(f"  filled in {result['fill_seconds']:.0f} s")
    result["stored"] = measure(settings, work, args, str(args.records))
    return result


# -- the table --------------------------------------------------------------------------------


def table(name: str, records: int, r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, empty, stored, ratio, verdict) rows."""
    rows: list[tuple[str, str, str, str, str]] = []
    empty, stored = r["empty"], r["stored"]
    if "intake" in empty:
        for kind in ("api", "webhook"):
            if "ratio" not in empty["intake"].get(kind, {}):
                continue
            a, b = empty["intake"][kind]["ratio"], stored["intake"][kind]["ratio"]
            ok = b >= a * (1 - TARGETS["intake"])
            rows.append((f"intake {kind} / bare Flask", f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}",
                         _verdict(ok, ">= 0.90")))  # fmt: skip
    if "delivery" in empty:
        a = empty["delivery"]["deliver"]["per_second"]
        b = stored["delivery"]["deliver"]["per_second"]
        na, nb = empty["delivery"]["noop"]["per_second"], stored["delivery"]["noop"]["per_second"]
        ok = b >= a * (1 - TARGETS["delivery"])
        rows.append(
            (
                "delivery files + feeds (/s)",
                f"{a:.0f} (no-op {na:.0f})",
                f"{b:.0f} (no-op {nb:.0f})",
                f"{b / a:.2f}",
                _verdict(ok, ">= 0.80"),
            )
        )
    if "backlog_seconds" in empty:
        a, b = empty["backlog_seconds"], stored["backlog_seconds"]
        rows.append(("what intake left, taken in and delivered (s)", f"{a:.0f}", f"{b:.0f}",
                     f"{b / max(a, 0.01):.2f}", "(reported)"))  # fmt: skip
    for read, a in empty.get("reads", {}).items():
        b = stored["reads"][read]
        bad = "" if b["status"] == 200 else f" [{b['status']}]"
        ok = b["p99"] < TARGETS["read_p99_ms"]
        rows.append(
            (
                f"GET {read} p50/p99 ms",
                f"{a['p50']:.1f} / {a['p99']:.1f}",
                f"{b['p50']:.1f} / {b['p99']:.1f}{bad}",
                f"{b['p99'] / max(a['p99'], 0.01):.1f}",
                _verdict(ok, "p99 < 50 ms"),
            )
        )
    if "publish" in empty:
        a, b = empty["publish"], stored["publish"]
        ok = b["p99"] < TARGETS["publish_p99_ms"] and b["seen"] == b["sent"]
        rows.append(
            (
                f"publish latency 202 -> feed + file (ms, {b['rate']:.0f}/s)",
                f"{a['p50']:.0f} / {a['p99']:.0f} ({a['seen']}/{a['sent']})",
                f"{b['p50']:.0f} / {b['p99']:.0f} ({b['seen']}/{b['sent']})",
                f"{b['p99'] / max(a['p99'], 0.01):.1f}",
                _verdict(ok, "p99 < 1 s"),
            )
        )
    return [(f"[{name}] {a}", b, c, d, e) for a, b, c, d, e in rows]


def _verdict(ok: bool, target: str) -> str:
    return f"{'met' if ok else 'MISSED'} ({target})"


def print_table(results: dict[str, Any], records: int) -> None:
    print(f"\n| measure | empty store | {records:,} stored | stored/empty | target |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        if r is None:
            print(f"| [{name}] skipped: unreachable | | | | |")
            continue
        print_rows(name, r)


def print_rows(name: str, r: dict[str, Any]) -> None:
    records = r["records"]
    print(f"| [{name}] fill of {records:,} records | | {r['fill_seconds']:.0f} s | | |")
    for row in table(name, records, r):
        print("| " + " | ".join(row) + " |")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=100, help="calls per read")
    parser.add_argument("--publish-seconds", type=float, default=15.0)
    parser.add_argument(
        "--scale-sections", dest="sections", default="intake,delivery,reads,publish"
    )
    parser.add_argument(
        "--publish-rate", type=float, default=0.0, help="records/s (default: half the intake)"
    )
    parser.add_argument(
        "--feed-entries", type=int, default=FEED_ENTRIES, help="feed length for the publish latency"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--backends", default="embedded,postgres+redis")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delivery-records", type=int, default=1000)
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    run.say("machine: " + json.dumps(run.machine()))
    results = {name: one_backend(name, args) for name in args.backends.split(",")}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print_table(results, args.records)


if __name__ == "__main__":
    main()
