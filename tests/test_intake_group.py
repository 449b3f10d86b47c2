"""Concurrent API submissions of one process share a transaction and its durable commit."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from publisher import intake as intake_module
from publisher.models import Record
from tests.concurrency import wait_until
from tests.helpers import bearer

REQUESTS = 6


def hold_the_first_transaction(monkeypatch, intake, total):
    """Count the records of each transaction; the first waits until ``total`` requests are
    in it or queued behind it, so those behind it meet in the next whatever the scheduling.

    Returns the counts, and an event set once the first transaction has begun."""
    calls: list[int] = []
    begun = threading.Event()
    write_once = intake._write_once

    def held(items, defer):
        if not calls:
            begun.set()
            wait_until(lambda: len(items) + len(intake._group._queue) >= total)
        calls.append(len(items))
        return write_once(items, defer)

    monkeypatch.setattr(intake, "_write_once", held)
    return calls, begun


def post(client, auth, record):
    return client.post(
        "/api/v1/records",
        data=json.dumps(record),
        headers={**auth, "Content-Type": "application/json"},
    )


def test_requests_that_arrive_together_share_one_commit(app, seed_json, monkeypatch):
    intake = app.extensions["publisher.intake"]
    transactions, _ = hold_the_first_transaction(monkeypatch, intake, REQUESTS)
    auth = bearer(app)
    records = [dict(seed_json, id=f"group-{n}", title=f"Story {n}") for n in range(REQUESTS)]
    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = [pool.submit(post, app.test_client(), auth, r) for r in records]
        statuses = [(a.result().status_code, a.result().json["status"]) for a in answers]
    assert statuses == [(202, "created")] * REQUESTS
    assert len(transactions) == 2  # who queued during the first commit shared the next
    assert sum(transactions) == REQUESTS
    with app.extensions["publisher"].sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == REQUESTS


def test_a_request_that_breaks_a_shared_batch_fails_alone(app, seed_json, monkeypatch):
    intake = app.extensions["publisher.intake"]
    save_records = intake_module.save_records

    def fussy(connection, incoming, *args, **kwargs):
        if any(item.id == "boom" for item in incoming):
            raise RuntimeError("this record breaks the store")
        return save_records(connection, incoming, *args, **kwargs)

    monkeypatch.setattr(intake_module, "save_records", fussy)
    auth = bearer(app)
    records = [dict(seed_json, id=f"fine-{n}", title=f"Story {n}") for n in range(3)]
    records.append(dict(seed_json, id="boom", title="Breaks"))
    transactions, begun = hold_the_first_transaction(monkeypatch, intake, len(records))
    with ThreadPoolExecutor(len(records)) as pool:
        # the first leads alone; the others, "boom" among them, queue and share the next
        answers = [pool.submit(post, app.test_client(), auth, records[0])]
        assert begun.wait(10)
        answers += [pool.submit(post, app.test_client(), auth, r) for r in records[1:]]
        codes = [a.result().status_code for a in answers]
    assert transactions[:2] == [1, 3]  # then each of the failed batch alone
    assert codes == [202, 202, 202, 500]  # the others were written again, alone; the
    # culprit gets what it got before group commit: an internal error in the one error shape
    with app.extensions["publisher"].sessions() as session:
        stored = set(session.scalars(select(Record.id)))
    assert stored == {"fine-0", "fine-1", "fine-2"}
