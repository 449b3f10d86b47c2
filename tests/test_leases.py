"""Leases: which deliveries of a message a worker may run now, and which wait."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import insert, select, update

from publisher.leases import lease, renew
from publisher.models import Delivery, utcnow
from tests.concurrency import wait_until


def pending(app, output="recorder"):
    with app.extensions["publisher"].sessions() as session:
        query = select(Delivery).where(Delivery.output == output, Delivery.status == "pending")
        return session.scalars(query).all()


def younger_sibling(app, delivery):
    """A second pending delivery of the same record to the same output, made later."""
    row = {c.name: getattr(delivery, c.key) for c in Delivery.__table__.columns}
    row.update(id=delivery.id + "-b", created_at=delivery.created_at + timedelta(seconds=1))
    with app.extensions["publisher"].sessions.begin() as session:
        session.execute(insert(Delivery).values(**row))
    return row["id"]


def test_the_older_of_two_siblings_runs_and_the_younger_waits(app, seed_json):
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    (first,) = pending(app)
    second = younger_sibling(app, first)
    sessions = app.extensions["publisher"].sessions
    assert lease(sessions, [second, first.id], utcnow(), 60) == ([first.id], [second])
    # while the first runs, the second still waits; once it is done, the second runs
    assert lease(sessions, [second], utcnow(), 60) == ([], [second])
    with sessions.begin() as session:
        session.execute(
            update(Delivery).where(Delivery.id == first.id).values(status="done", lease_until=None)
        )
    assert lease(sessions, [second], utcnow(), 60) == ([second], [])


def test_held_done_and_unknown_deliveries_are_neither_leased_nor_waiting(app, seed_json):
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    held, done = pending(app, "recorder")[0], pending(app, "files")[0]
    sessions = app.extensions["publisher"].sessions
    assert lease(sessions, [held.id], utcnow(), 60) == ([held.id], [])
    with sessions.begin() as session:
        session.execute(update(Delivery).where(Delivery.id == done.id).values(status="done"))
    assert lease(sessions, [held.id, done.id, "dlv_unknown"], utcnow(), 60) == ([], [])


def test_a_batch_is_leased_oldest_first_and_counts_a_receive_each(app, seed_json):
    records = [dict(seed_json, id=f"lease-{n}", published=True) for n in range(3)]
    for record in records:
        app.extensions["publisher.intake"].take([record])
    ids = [d.id for d in sorted(pending(app), key=lambda d: d.created_at)]
    sessions = app.extensions["publisher"].sessions
    leased, waiting = lease(sessions, list(reversed(ids)), utcnow(), 60)
    assert (leased, waiting) == (ids, [])
    assert {d.receives for d in pending(app)} == {1}


def test_renewing_keeps_what_this_worker_holds_and_nothing_else(app, seed_json):
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    held, free = pending(app, "recorder")[0], pending(app, "files")[0]
    sessions = app.extensions["publisher"].sessions
    then = utcnow()
    lease(sessions, [held.id], then, 60)
    renew(sessions, [held.id, free.id], then + timedelta(seconds=50), 60)
    rows = {d.id: d for d in pending(app, "recorder") + pending(app, "files")}
    assert rows[held.id].lease_until == then + timedelta(seconds=110)
    assert rows[free.id].lease_until is None  # not leased by this worker: left alone


def test_a_long_run_of_slow_calls_keeps_its_deliveries_leased(make_app, base_settings, seed_json):
    """Observed, not timed: the lease's end moves on while the calls run, and at the first
    lease's end another worker takes nothing (without renewal it would take them all)."""
    log = base_settings["plugins"]["recording"]["log"]
    app = make_app(
        plugins={"recording": {"log": log, "slow_seconds": 0.3}},
        delivery={"lease_seconds": 0.4, "parallel_calls": 1},  # one call after the other
    )
    records = [dict(seed_json, id=f"slow-{n}", published=True) for n in range(3)]
    app.extensions["publisher.intake"].take(records)
    ids = [d.id for d in pending(app, "slow")]
    dispatcher = app.extensions["publisher"].dispatcher
    worker = threading.Thread(target=dispatcher.run_delivery, args=(ids,))
    worker.start()

    def lease_ends() -> set:
        with dispatcher.sessions() as session:
            query = select(Delivery.lease_until).where(Delivery.id.in_(ids))
            return set(session.scalars(query))

    wait_until(lambda: None not in lease_ends())
    (first_end,) = lease_ends()  # one lease for the message's three deliveries
    wait_until(lambda: lease_ends() - {first_end, None})  # renewed while the calls go on
    taken, _ = lease(dispatcher.sessions, ids, first_end + timedelta(milliseconds=1), 60)
    worker.join()
    assert taken == []
    assert {d.status for d in pending(app, "slow")} == set()  # all three done by the worker
