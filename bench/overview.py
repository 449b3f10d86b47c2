"""What the operator's page costs at size: ``.venv/bin/python bench/overview.py``.

Builds a store of ``--records`` records (100,000 by default) on SQLite and, when it answers,
on PostgreSQL, with 1 % of them routed to three outputs where one fails, plus embargoed
ones; then times, through the Flask test client, the calls the page makes: a first page, a
page deep in the store (keyset), the search by a common and by a rare word of the title
(one call, and every call until found: a call reads one window of the store), by id and
by URL, the failing view, a state filter and the header counts. Prints the
median of ``--runs`` calls per row, in milliseconds. The store is written with bulk
inserts (the intake is measured by ``bench/run.py``), in the shape the intake writes.

Options: ``--records 100000``, ``--runs 7``, ``--backends embedded,postgres``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PUBLISHER_DISABLE_PLUGIN_AUTOLOAD", "1")

PG_ADMIN = os.environ.get("BENCH_POSTGRES", "host=127.0.0.1 user=postgres dbname=test")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
WORDS = ("markets", "weather", "sport", "arts", "science", "politics", "health", "travel")
OUTPUTS = ("recorder", "flaky", "protected-sink")
RARE_AT = 0.1  # the one record with the rare word sits 10 % from the oldest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backends", default="embedded,postgres")
    args = parser.parse_args()
    print(f"records: {args.records:,}; median of {args.runs} calls, ms")
    for backend in args.backends.split(","):
        with settings_for(backend.strip()) as settings:
            if settings is None:
                continue
            measure(backend, settings, args.records, args.runs)


@contextmanager
def settings_for(backend: str) -> Iterator[dict[str, Any] | None]:
    work = Path(tempfile.mkdtemp(prefix="pub-bench-overview-"))
    (work / "keys").mkdir(mode=0o700)
    settings: dict[str, Any] = {
        "data_dir": str(work / "data"),
        "keys_dir": str(work / "keys"),
        "queue_url": str(work / "data" / "queue.db"),
        "plugins_dir": str(ROOT / "tests" / "local_plugins"),
        "plugins": {"recording": {"log": str(work / "recorded.jsonl")}},
        "outputs": {"files": {"enabled": False}, "feeds": {"enabled": False}},
        "dev_key": False,
    }
    if backend == "embedded":
        yield settings
        return
    try:
        import psycopg

        database = f"pub_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    except Exception as exc:  # noqa: BLE001 - say why and go on with the other backend
        print(f"{backend} skipped: {type(exc).__name__}: {exc}")
        yield None
        return
    settings["database_url"] = f"{PG_URL}/{database}"
    try:
        yield settings
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def measure(backend: str, settings: dict[str, Any], count: int, runs: int) -> None:
    from publisher.app import create_app
    from publisher.db import transaction
    from publisher.tokens import create_token

    app = create_app(overrides=settings, environ={})
    services = app.extensions["publisher"]
    started = time.perf_counter()
    rare_id, common_word = fill(services.engine, count)
    print(f"\n{backend}: store built in {time.perf_counter() - started:.1f} s")
    with transaction(services.sessions) as session:
        token = create_token(session, ["read"])[1]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    deep = _cursor_at(client, headers, pages=20)
    calls = {
        "first page (50)": "/api/v1/overview/records",
        "page 21 (keyset cursor)": f"/api/v1/overview/records?cursor={deep}",
        f"search, common word ({common_word!r})": f"/api/v1/overview/records?q={common_word}",
        "search, rare word: one call (one window)": "/api/v1/overview/records?q=zebra",
        "search, a word in no title: one call": "/api/v1/overview/records?q=nowhere",
        "search by id": f"/api/v1/overview/records?q={rare_id}",
        "search by URL": "/api/v1/overview/records?q=https://news.example/zebra",
        "failing view (delivery=dead)": "/api/v1/overview/records?delivery=dead",
        "state=embargoed": "/api/v1/overview/records?state=embargoed",
        "header counts": "/api/v1/overview/counts",
    }
    for label, url in calls.items():
        timings = []
        for _ in range(runs):
            begun = time.perf_counter()
            answer = client.get(url, headers=headers)
            timings.append((time.perf_counter() - begun) * 1000)
            assert answer.status_code == 200, (url, answer.json)
        found = len(answer.json.get("items", [])) if "items" in answer.json else "-"
        print(f"  {label:<55} {statistics.median(timings):8.1f}   ({found} items)")
    for word in ("zebra", "nowhere"):
        timings, calls = [], 0
        for _ in range(runs):
            begun = time.perf_counter()
            calls, found = _walk(client, headers, word)
            timings.append((time.perf_counter() - begun) * 1000)
        label = f"search {word!r}, every call until found or at the end ({calls} calls)"
        print(f"  {label:<55} {statistics.median(timings):8.1f}   ({found} items)")
    services.close()


def _walk(client: Any, headers: dict[str, str], word: str) -> tuple[int, int]:
    """Follow the cursor as the page's Next button would, until a match or the end."""
    cursor, calls = "", 0
    while True:
        answer = client.get(f"/api/v1/overview/records?q={word}&cursor={cursor}", headers=headers)
        calls += 1
        items, cursor = answer.json["items"], answer.json["next_cursor"]
        if items or not cursor:
            return calls, len(items)


def _cursor_at(client: Any, headers: dict[str, str], pages: int) -> str:
    cursor = ""
    for _ in range(pages):
        answer = client.get(f"/api/v1/overview/records?cursor={cursor}", headers=headers).json
        cursor = answer["next_cursor"]
    return cursor


def fill(engine: Any, count: int) -> tuple[str, str]:
    """Records in arrival order; 1 % routed to the outputs (flaky dead), 0.2 % embargoed."""
    from sqlalchemy import insert, text

    from publisher.models import Delivery, Placement, Record, Revision
    from publisher.records import record_id as derive

    now = datetime.now(UTC)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    rare = int(count * RARE_AT)
    rare_id = ""
    batch: dict[str, list[dict[str, Any]]] = {"r": [], "v": [], "d": [], "p": []}
    with engine.begin() as connection:
        for number in range(count):
            record_id = hashlib.sha256(f"r{number}".encode()).hexdigest()[:32]
            title = f"Story {number} on {WORDS[number % len(WORDS)]} and more"
            url = f"https://news.example/{number}"
            if number == rare:
                title, url = "Zebra crossing reopens", "https://news.example/zebra"
            embargoed = number % 500 == 7
            watched = number % 100 == 3 or embargoed
            fields = {"title": title, "originalUrl": url, "published": True, "type": "article"}
            if number == rare:
                record_id = rare_id = derive({"originalUrl": url})
            moment = now - timedelta(seconds=count - number)
            batch["r"].append(
                {
                    "id": record_id,
                    "revision": 1,
                    "source": "api",
                    "state": "embargoed" if embargoed else "published",
                    "published": True,
                    "fields": fields,
                    "body": "",
                    "content_hash": "0" * 64,
                    "meaning_hash": "0" * 64,
                    "secured_status": "absent",
                    "warnings": [],
                    "published_at": later if embargoed else moment,
                    "expires_at": None,
                    "created_at": moment,
                    "updated_at": moment,
                }
            )
            batch["v"].append(
                {
                    "record_id": record_id,
                    "revision": 1,
                    "fields": fields,
                    "body": "",
                    "content_hash": "0" * 64,
                    "event": "published",
                    "created_at": moment,
                }
            )
            if watched:
                for output in OUTPUTS:
                    status = "pending" if embargoed else ("dead" if output == "flaky" else "done")
                    batch["d"].append(
                        {
                            "id": f"dlv_{uuid.uuid4().hex}",
                            "record_id": record_id,
                            "revision": 1,
                            "output": output,
                            "event": "published",
                            "status": status,
                            "attempts": 0 if embargoed else 1,
                            "receives": 0,
                            "error": "failing on purpose" if status == "dead" else None,
                            "next_attempt_at": later if embargoed else moment,
                            "created_at": moment,
                            "updated_at": moment,
                        }
                    )
                    placement = {"pending": "pending", "dead": "failed", "done": "live"}[status]
                    batch["p"].append(
                        {
                            "record_id": record_id,
                            "output": output,
                            "state": placement,
                            "revision": 1,
                            "updated_at": moment,
                        }
                    )
            if len(batch["r"]) >= 5000 or number == count - 1:
                for key, table in (("r", Record), ("v", Revision), ("d", Delivery),
                                   ("p", Placement)):  # fmt: skip
                    if batch[key]:
                        connection.execute(insert(table), batch[key])
                        batch[key] = []
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))  # as a deployment's database would have
    return rare_id, WORDS[3]


if __name__ == "__main__":
    main()
