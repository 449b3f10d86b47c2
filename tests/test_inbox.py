"""The webhook inbox: one commit before the 202, dedupe by webhook-id, the sweeper, retention."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError

from publisher.api.webhooks import inbox_processor
from publisher.db import transaction
from publisher.inbox import InboxProcessor
from publisher.models import InboxItem, utcnow
from publisher.testing import drain
from tests.helpers import SECRET, send, signed_headers


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    return make_app(sources={"cms": {"secrets": [SECRET]}})


def inbox_rows(app) -> list[InboxItem]:  # noqa: ANN001
    with app.extensions["publisher"].sessions() as session:
        return list(session.scalars(select(InboxItem).order_by(InboxItem.id)))


def publishable(seed_json: dict) -> bytes:
    return json.dumps(dict(seed_json, published=True)).encode()


def test_the_raw_bytes_are_committed_before_the_answer(app, client, seed_md):
    answer = send(client, seed_md, msg_id="msg_raw", content_type="text/markdown")
    assert answer.status_code == 202
    assert answer.json == {"status": "accepted", "id": "msg_raw"}
    (row,) = inbox_rows(app)
    assert (row.source, row.webhook_id, row.status) == ("cms", "msg_raw", "pending")
    assert row.payload == seed_md  # the exact bytes, not re-serialised
    assert row.content_type == "text/markdown"
    assert row.request_id == answer.headers["X-Request-Id"]
    drain(app)
    assert [r.status for r in inbox_rows(app)] == ["done"]


def test_the_same_delivery_twice_publishes_once(app, client, seed_json, recorded):
    body = publishable(seed_json)
    first = send(client, body, msg_id="msg_twice")
    drain(app)
    second = send(client, body, msg_id="msg_twice")
    drain(app)
    assert first.json["status"] == "accepted"
    assert second.status_code == 202
    assert second.json == {"status": "duplicate", "id": "msg_twice"}
    assert len(inbox_rows(app)) == 1
    publishes = [e for e in recorded() if e["output"] == "recorder" and e["action"] == "publish"]
    assert len(publishes) == 1


def test_a_repeat_arriving_before_processing_is_still_one(app, client, seed_json, recorded):
    body = publishable(seed_json)
    headers = signed_headers(body, msg_id="msg_fast")
    assert client.post("/webhooks/cms", data=body, headers=headers).json["status"] == "accepted"
    assert client.post("/webhooks/cms", data=body, headers=headers).json["status"] == "duplicate"
    drain(app)
    assert len([e for e in recorded() if e["output"] == "recorder"]) == 1


def test_the_same_id_from_another_source_is_another_delivery(make_app, seed_md):
    app = make_app(sources={"cms": {"secrets": [SECRET]}, "crawler": {"secrets": [SECRET]}})
    client = app.test_client()
    assert send(client, seed_md, msg_id="msg_1").json["status"] == "accepted"
    assert send(client, seed_md, source="crawler", msg_id="msg_1").json["status"] == "accepted"


def test_a_task_enqueued_twice_runs_once(app, client, seed_md):
    send(client, seed_md, content_type="text/markdown")
    processor = inbox_processor(app)
    (row,) = inbox_rows(app)
    assert processor.process(row.id) == "done"
    assert processor.process(row.id) is None  # already taken: the claim refuses


def test_the_sweeper_enqueues_a_row_whose_enqueue_was_lost(app, client, auth, seed_md):
    processor = inbox_processor(app)
    task, processor._task = processor._task, _Lost()  # the crash between commit and enqueue
    assert send(client, seed_md, content_type="text/markdown").status_code == 202
    processor._task = task
    assert drain(app) == 0  # nothing in the queue: the row is only in the inbox
    assert processor.sweep(grace=0) == 1
    assert processor.sweep(grace=0) == 0  # not enqueued again while the first is queued
    drain(app)
    assert [r.status for r in inbox_rows(app)] == ["done"]
    assert len(client.get("/api/v1/records", headers=auth).json["items"]) == 1


def test_the_sweeper_leaves_fresh_rows_to_their_own_task(app, client, seed_md):
    send(client, seed_md, content_type="text/markdown")
    assert inbox_processor(app).sweep() == 0  # younger than the grace: its task is coming


def test_the_sweeper_frees_a_row_left_processing_by_a_dead_worker(make_app, seed_md):
    app = make_app(sources={"cms": {"secrets": [SECRET]}}, delivery={"lease_seconds": 0})
    send(app.test_client(), seed_md, content_type="text/markdown")
    processor = inbox_processor(app)
    (row,) = inbox_rows(app)
    with transaction(app.extensions["publisher"].sessions) as session:  # a worker took it, died
        session.execute(update(InboxItem).values(status="processing"))
    drain(app)  # the queued task finds it taken
    assert [r.status for r in inbox_rows(app)] == ["processing"]
    assert processor.sweep(grace=0) == 1
    drain(app)
    assert [r.status for r in inbox_rows(app)] == ["done"]


def test_pruning_forgets_finished_rows_after_the_remembered_days(app, client, seed_md):
    processor = inbox_processor(app)
    for msg_id in ("msg_old_done", "msg_old_pending", "msg_recent"):
        send(client, seed_md, msg_id=msg_id, content_type="text/markdown")
    drain(app)
    now = utcnow()
    with transaction(processor.sessions) as session:
        for row in session.scalars(select(InboxItem)):
            if row.webhook_id.startswith("msg_old"):
                row.received_at = now - timedelta(days=8)
            if row.webhook_id == "msg_old_pending":
                row.status = "pending"
    assert processor.prune(now) == 1
    assert sorted(r.webhook_id for r in inbox_rows(app)) == ["msg_old_pending", "msg_recent"]
    # a forgotten id is a new delivery again
    assert send(client, seed_md, msg_id="msg_old_done").json["status"] == "accepted"


def test_ids_are_remembered_at_least_four_days(make_app):
    app = make_app(webhooks={"remember_ids_days": 1})
    assert inbox_processor(app).remember_days() == 4
    assert inbox_processor(make_app()).remember_days() == 7


def test_the_processor_is_built_once_per_app(app):
    assert inbox_processor(app) is inbox_processor(app)
    assert isinstance(app.extensions["publisher.inbox"], InboxProcessor)


class _Lost:
    def __call__(self, *args: object) -> None:
        raise ConnectionError("queue unreachable")


def _commits(app):  # noqa: ANN001, ANN202
    """A list that grows by one for every transaction the app's engine commits."""
    seen: list[int] = []
    event.listen(app.extensions["publisher"].engine, "commit", lambda _conn: seen.append(1))
    return seen


def test_a_batch_of_rows_is_claimed_stored_and_settled_once_not_once_a_row(app, client, seed_json):
    """What a group commit's rows cost the worker does not grow with the rows."""
    for n in range(10):
        body = json.dumps(dict(seed_json, id=f"batched-{n}", published=True)).encode()
        assert send(client, body, msg_id=f"msg_batched_{n}").status_code == 202
    ids = [row.id for row in inbox_rows(app)]
    commits = _commits(app)
    assert inbox_processor(app).process_batch(ids) == ["done"] * 10
    assert len(commits) == 3  # the claim, the records, the rows' statuses
    drain(app)  # each row's own message finds it taken
    assert {r.status for r in inbox_rows(app)} == {"done"}


def test_a_batch_quarantines_its_bad_rows_and_takes_in_the_others(app, client, auth, seed_json):
    good = [json.dumps(dict(seed_json, id=f"good-{n}")).encode() for n in range(2)]
    invalid = json.dumps(dict(seed_json, id="bad", webUrl="not a url")).encode()
    for n, body in enumerate([good[0], b'{"title": ', invalid, good[1]]):
        assert send(client, body, msg_id=f"msg_mixed_{n}").status_code == 202
    ids = [row.id for row in inbox_rows(app)]
    statuses = inbox_processor(app).process_batch(ids)
    assert statuses == ["done", "quarantined", "quarantined", "done"]
    held = client.get("/api/v1/quarantine", headers=auth).json["items"]
    assert sorted(item["reason"] for item in held) == ["invalid", "malformed"]
    stored = client.get("/api/v1/records", headers=auth).json["items"]
    assert sorted(r["id"] for r in stored) == ["good-0", "good-1"]


def test_a_database_outage_puts_a_batch_back_for_the_sweeper(app, client, seed_json):
    for n in range(3):
        body = json.dumps(dict(seed_json, id=f"later-{n}")).encode()
        assert send(client, body, msg_id=f"msg_later_{n}").status_code == 202
    ids = [row.id for row in inbox_rows(app)]
    processor = inbox_processor(app)

    def down(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    taking, processor.intake.take_many = processor.intake.take_many, down
    try:
        assert processor.process_batch(ids) == [None, None, None]
    finally:
        processor.intake.take_many = taking
    assert [r.status for r in inbox_rows(app)] == ["pending"] * 3
    drain(app)
    assert [r.status for r in inbox_rows(app)] == ["done"] * 3


def test_a_database_outage_at_the_claim_leaves_the_rows_pending(
    app, client, seed_json, monkeypatch
):
    assert send(client, json.dumps(seed_json).encode(), msg_id="msg_unclaimed").status_code == 202
    ids = [row.id for row in inbox_rows(app)]

    def down(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("UPDATE", {}, Exception("the database went away"))

    monkeypatch.setattr("publisher.inbox.write_connection", down)
    assert inbox_processor(app).process_batch(ids) == [None]
    monkeypatch.undo()
    assert [r.status for r in inbox_rows(app)] == ["pending"]


def test_the_sweeper_sends_the_rows_it_finds_together(app, client, seed_json):
    """A backlog the sweeper re-sends goes out as batches, not one message a row."""
    for n in range(5):
        body = json.dumps(dict(seed_json, id=f"swept-{n}")).encode()
        assert send(client, body, msg_id=f"msg_swept_{n}").status_code == 202
    huey = app.extensions["publisher"].huey
    huey.flush()  # their messages were lost
    assert inbox_processor(app).sweep(grace=0) == 5
    assert huey.pending_count() == 1
    drain(app)
    assert [r.status for r in inbox_rows(app)] == ["done"] * 5


def test_two_rows_of_one_record_in_a_batch_are_two_revisions_in_order(app, client, auth, seed_json):
    for n, title in enumerate(["First", "Second"]):
        body = json.dumps(dict(seed_json, id="twice", title=title)).encode()
        assert send(client, body, msg_id=f"msg_twice_{n}").status_code == 202
    ids = [row.id for row in inbox_rows(app)]
    assert inbox_processor(app).process_batch(ids) == ["done", "done"]
    record = client.get("/api/v1/records/twice", headers=auth).json
    assert (record["revision"], record["record"]["title"]) == (2, "Second")
