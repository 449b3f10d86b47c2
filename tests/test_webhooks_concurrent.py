"""Concurrent signed webhooks on a real threaded server: group commit keeps every promise.

Each test holds the first commit until the other requests have queued behind it, so they
meet in one batch whatever the scheduling: a ``202 accepted`` then has its row committed
exactly once, a repeat (of a stored id or of another request in the same batch) is a
``duplicate``, and a failed commit answers ``503`` to every request of its batch.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from werkzeug.serving import make_server

from publisher.api.webhooks import inbox_processor
from publisher.db import transaction
from publisher.models import InboxItem
from tests.backends import (  # noqa: F401 - fixtures: backend
    Backend,
    backend_fixture,
    drain,
)
from tests.concurrency import wait_until
from tests.helpers import DATA, SECRET, signed_headers

REQUESTS = 24


@pytest.fixture
def hook_app(backend: Backend, make_app: Callable[..., Flask]) -> Flask:
    return make_app(sources={"cms": {"secrets": [SECRET]}}, **backend.overrides())


@pytest.fixture
def server(hook_app: Flask) -> Iterator[int]:
    """The app under werkzeug's threaded server (a thread per request, as gthread has)."""
    httpd = make_server("127.0.0.1", 0, hook_app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    thread.join()


def post(port: int, body: bytes, msg_id: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/webhooks/cms", body, signed_headers(body, msg_id=msg_id))
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def record(n: int) -> bytes:
    """The seed record with an id of its own (and ``n``, an unknown field, kept)."""
    fields = json.loads((DATA / "seed-record.json").read_text())
    return json.dumps(dict(fields, id=f"concurrent-{n}", n=n)).encode()


def post_all(port: int, msg_ids: list[str]) -> list[tuple[int, dict[str, Any]]]:
    bodies = [record(n) for n in range(len(msg_ids))]
    with ThreadPoolExecutor(len(msg_ids)) as pool:
        return list(pool.map(lambda pair: post(port, *pair), zip(bodies, msg_ids, strict=True)))


def inbox_rows(app: Flask) -> list[InboxItem]:
    with app.extensions["publisher"].sessions() as session:
        return list(session.scalars(select(InboxItem).order_by(InboxItem.id)))


@contextmanager
def first_commit_held(app: Flask, total: int) -> Iterator[list[list[str]]]:
    """Hold the first batch until all ``total`` requests are in it or queued behind it.

    Yields the batches: the first (its leader and whoever queued before the leader took
    it), then the others, together.
    """
    writer = inbox_processor(app).writer
    insert, batches = writer._insert, []

    def held(rows: list[dict[str, Any]]) -> list[int | None]:
        if not batches:
            queue = writer.committer._queue
            wait_until(lambda: len(rows) + len(queue) >= total, seconds=60)
        batches.append([row["webhook_id"] for row in rows])
        return insert(rows)

    writer._insert = held  # type: ignore[method-assign]
    try:
        yield batches
    finally:
        writer._insert = insert  # type: ignore[method-assign]


def test_concurrent_webhooks_are_each_committed_once_in_shared_batches(hook_app, server):
    (status, answer) = post(server, record(-1), "msg_stored")
    assert (status, answer["status"]) == (202, "accepted")
    # a third of the ids are repeats: of the stored one, or of each other within the batch
    msg_ids = [f"msg_{n % 16}" for n in range(REQUESTS - 2)] + ["msg_stored", "msg_stored"]
    with first_commit_held(hook_app, total=REQUESTS) as batches:
        answers = post_all(server, msg_ids)
    assert {status for status, _ in answers} == {202}
    assert max(len(batch) for batch in batches) > 1  # the requests shared commits
    accepted = Counter(a["id"] for _, a in answers if a["status"] == "accepted")
    duplicates = Counter(a["id"] for _, a in answers if a["status"] == "duplicate")
    assert accepted == Counter(f"msg_{n}" for n in range(16))  # each new id once
    assert duplicates["msg_stored"] == 2
    assert sum(duplicates.values()) == REQUESTS - 16
    rows = inbox_rows(hook_app)
    assert sorted(r.webhook_id for r in rows) == sorted([*accepted, "msg_stored"])
    by_id = {r.webhook_id: r for r in rows}
    for n in range(16):  # each accepted row holds the body of the request that won
        assert json.loads(by_id[f"msg_{n}"].payload)["n"] % 16 == n
    drain(hook_app)  # the rows of a batch went to the queue; a worker takes each one in
    assert {r.status for r in inbox_rows(hook_app)} == {"done"}


def test_a_failed_commit_answers_503_to_every_request_of_its_batch(hook_app, server, monkeypatch):
    kept = inbox_processor(hook_app).writer.kept
    real, failures = kept.transaction, []

    @contextmanager
    def commit_fails_once() -> Iterator[Any]:
        with real() as connection:
            yield connection  # the rows are inserted, then the commit fails: all rolled back
            if len(failures) == 1:  # the second batch: the one of the queued requests
                failures.append("failed")
                raise sqlite3.OperationalError("disk I/O error")
            failures.append("ok")

    monkeypatch.setattr(kept, "transaction", commit_fails_once)
    msg_ids = [f"msg_{n}" for n in range(REQUESTS)]
    with first_commit_held(hook_app, total=REQUESTS) as batches:
        answers = post_all(server, msg_ids)
    failed = set(batches[1])
    assert len(failed) > 1
    for msg_id, (status, answer) in zip(msg_ids, answers, strict=True):
        if msg_id in failed:
            assert status == 503
            assert answer == {
                "code": "unavailable",
                "status": 503,
                "message": "the inbox is unavailable; retry later",
                "errors": {},
            }
        else:
            assert (status, answer["status"]) == (202, "accepted")
    stored = {r.webhook_id for r in inbox_rows(hook_app)}
    assert stored == set(msg_ids) - failed  # nothing of the failed batch was kept
    status, answer = post(server, b'{"title": "retried"}', sorted(failed)[0])
    assert (status, answer["status"]) == (202, "accepted")  # the sender's retry goes in


def test_rows_are_stored_as_the_orm_would_store_them(hook_app, server):
    before = datetime.now(UTC)
    body = b"---\ntitle: raw bytes\n---\nbody\n"
    status, _ = post(server, body, "msg_exact")
    assert status == 202
    (row,) = inbox_rows(hook_app)
    assert row.payload == body
    assert (row.source, row.status, row.content_type) == ("cms", "pending", "application/json")
    assert row.received_at.tzinfo is not None
    assert before <= row.received_at <= datetime.now(UTC)


def test_a_row_failing_another_constraint_does_not_fail_its_batch(hook_app):
    writer = inbox_processor(hook_app).writer
    good = {
        "source": "cms",
        "webhook_id": "msg_good",
        "content_type": "application/json",
        "payload": b"{}",
        "status": "pending",
        "request_id": None,
        "received_at": datetime.now(UTC),
    }
    bad = dict(good, webhook_id="msg_bad", payload=None)  # payload is NOT NULL
    item_id, refused = writer._insert([good, bad])
    assert refused is None  # answered as before this change: a repeat, not a 500
    assert [(r.id, r.webhook_id) for r in inbox_rows(hook_app)] == [(item_id, "msg_good")]


def test_the_driver_insert_writes_what_the_orm_writes(hook_app):
    """The inbox row goes in on the driver's cursor: its stored text must be the ORM's."""
    when = datetime(2026, 12, 2, 7, 40, tzinfo=UTC)  # no microseconds: the format's edge
    row = {
        "source": "cms",
        "webhook_id": "msg_driver",
        "content_type": "application/json",
        "payload": b"{}",
        "status": "pending",
        "request_id": None,
        "received_at": when,
    }
    inbox_processor(hook_app).writer.write(row)
    with transaction(hook_app.extensions["publisher"].sessions) as session:
        session.add(InboxItem(**dict(row, webhook_id="msg_orm")))
    with hook_app.extensions["publisher"].engine.connect() as connection:
        stored = connection.execute(
            text("SELECT webhook_id, CAST(received_at AS TEXT), payload FROM inbox")
        ).all()
    texts = {webhook_id: (when_text, bytes(payload)) for webhook_id, when_text, payload in stored}
    assert texts["msg_driver"] == texts["msg_orm"]
