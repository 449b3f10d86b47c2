"""The same store and dispatch behaviours on the embedded defaults and on PostgreSQL + Redis,
and what several web and worker processes may do at once on PostgreSQL + Redis.

Tests taking ``backend``/``backend_app`` run once per backend; the PostgreSQL + Redis run is
marked ``scaleout`` and skips (laptop) or fails (``CI=true``) without the services.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from publisher.db import transaction
from publisher.leases import lease
from publisher.models import Delivery, Placement, Record, Revision, utcnow
from publisher.tokens import create_token
from tests.backends import (  # noqa: F401 - fixtures: backend, backend_app, scaleout_backend
    Backend,
    backend_app_fixture,
    backend_fixture,
    drain,
    scaleout_backend_fixture,
)
from tests.helpers import DATA

RECORDING_OUTPUTS = {"recorder", "flaky", "protected-sink"}


def seed(record_id: str, **changes: Any) -> dict[str, Any]:
    fields = json.loads((DATA / "seed-record.json").read_text())
    fields.update({"id": record_id, "published": True}, **changes)
    fields.pop("secured", None)
    return fields


def bearer(app: Flask) -> dict[str, str]:
    with transaction(app.extensions["publisher"].sessions) as session:
        return {"Authorization": f"Bearer {create_token(session, ['admin'])[1]}"}


def submit(client: Any, auth: dict[str, str], body: Any) -> Any:
    return client.post(
        "/api/v1/records",
        data=json.dumps(body),
        headers={**auth, "Content-Type": "application/json"},
    )


def deliveries(app: Flask, record_id: str) -> list[Delivery]:
    with app.extensions["publisher"].sessions() as session:
        query = select(Delivery).where(Delivery.record_id == record_id)
        return list(session.scalars(query.order_by(Delivery.created_at)))


def settings_for(base_settings: dict[str, Any], backend: Backend) -> dict[str, Any]:
    settings = json.loads(json.dumps(base_settings))
    settings.update(backend.overrides())
    return settings


# -- the same behaviours on both backends ---------------------------------------------------


def test_submit_read_back_revise_and_deliver(backend_app, recorded):
    client = backend_app.test_client()
    auth = bearer(backend_app)

    first = submit(client, auth, seed("scale-1"))
    assert first.status_code == 202, first.json
    assert (first.json["status"], first.json["revision"]) == ("created", 1)
    again = submit(client, auth, seed("scale-1"))
    assert (again.json["status"], again.json["revision"]) == ("unchanged", 1)
    revised = submit(client, auth, seed("scale-1", title="A second title"))
    assert (revised.json["status"], revised.json["revision"]) == ("revised", 2)
    volatile = submit(client, auth, seed("scale-1", title="A second title", heat=99))
    assert (volatile.json["status"], volatile.json["revision"]) == ("revised", 3)

    read = client.get("/api/v1/records/scale-1", headers=auth)
    assert read.status_code == 200
    assert read.json["revision"] == 3
    assert read.json["record"]["title"] == "A second title"
    assert read.json["record"]["heat"] == 99
    assert read.json["record"]["related"][0]["images"][0]["width"] == 620

    drain(backend_app)
    listed = client.get("/api/v1/records/scale-1/deliveries", headers=auth).json["items"]
    assert listed and all(item["status"] == "done" for item in listed), listed
    mine = [e for e in recorded() if e["output"] == "recorder"]
    # the first revision's pending delivery was superseded by the second's (nobody held it):
    # the output hears of the record once, at its newest revision. (The event is "updated"
    # today although the output never had the record; reported to the lead.)
    assert [e["revision"] for e in mine] == [3]
    assert mine[0]["event"] == "published"
    assert mine[0]["title"] == "A second title"
    with backend_app.extensions["publisher"].sessions() as session:
        revisions = session.scalars(
            select(Revision.revision).where(Revision.record_id == "scale-1")
        ).all()
        assert sorted(revisions) == [1, 2, 3]
        states = dict(
            session.execute(
                select(Placement.output, Placement.state).where(Placement.record_id == "scale-1")
            ).all()
        )
    assert states["recorder"] == "live"


def test_update_after_delivery_and_retract(backend_app, recorded):
    client = backend_app.test_client()
    auth = bearer(backend_app)
    submit(client, auth, seed("scale-2"))
    drain(backend_app)
    submit(client, auth, seed("scale-2", excerpt="Changed after it went out"))
    drain(backend_app)
    gone = client.delete("/api/v1/records/scale-2", headers=auth)
    assert gone.status_code == 202 and gone.json["status"] == "retracted"
    drain(backend_app)

    mine = [
        (e["action"], e["event"], e["revision"]) for e in recorded() if e["output"] == "recorder"
    ]
    assert mine == [
        ("publish", "published", 1),
        ("publish", "updated", 2),
        ("retract", "retracted", 2),
    ]
    read = client.get("/api/v1/records/scale-2", headers=auth).json
    assert read["state"] == "retracted"
    assert set(read["outputs"].values()) == {"retracted"}
    assert all(d.status == "done" for d in deliveries(backend_app, "scale-2"))
    # a second retraction changes nothing and plans nothing
    again = client.delete("/api/v1/records/scale-2", headers=auth)
    assert again.json["status"] == "unchanged"
    assert drain(backend_app) == 0


def test_a_failing_output_retries_then_succeeds_without_blocking_others(
    backend, make_app, base_settings, recorded, tmp_path
):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(
        **backend.overrides(),
        plugins={
            "recording": {
                "log": base_settings["plugins"]["recording"]["log"],
                "fail_flag": str(flag),
            }
        },
        delivery={"retry_schedule": [0, 0, 0, 0]},
    )
    client = app.test_client()
    auth = bearer(app)
    submit(client, auth, seed("scale-3"))
    huey = app.extensions["publisher"].huey
    # one round: every output runs once; the flaky one fails and is scheduled again
    lanes = app.extensions["publisher"].dispatcher.lanes
    for _ in range(huey.pending_count()):  # one message per output, each to its lane
        huey.execute(huey.dequeue())
    lanes.wait_idle(timeout=60)
    flaky = next(d for d in deliveries(app, "scale-3") if d.output == "flaky")
    assert (flaky.status, flaky.attempts) == ("pending", 1)
    assert "failing on purpose" in flaky.error
    assert {e["output"] for e in recorded()} == {"recorder", "protected-sink"}
    flag.unlink()
    drain(app)
    flaky = next(d for d in deliveries(app, "scale-3") if d.output == "flaky")
    assert (flaky.status, flaky.attempts, flaky.error) == ("done", 2, None)


def test_a_lease_keeps_a_second_worker_out_until_it_expires(backend_app):
    client = backend_app.test_client()
    submit(client, bearer(backend_app), seed("scale-4"))
    dispatcher = backend_app.extensions["publisher"].dispatcher
    delivery = next(d for d in deliveries(backend_app, "scale-4") if d.output == "recorder")
    now = utcnow()
    sessions, seconds = dispatcher.sessions, dispatcher.lease_seconds
    assert lease(sessions, [delivery.id], now, seconds) == ([delivery.id], [])
    assert lease(sessions, [delivery.id], now, seconds) == ([], [])  # another worker, same moment
    later = now + timedelta(seconds=dispatcher.lease_seconds + 1)
    taken_over = lease(sessions, [delivery.id], later, seconds)
    assert taken_over == ([delivery.id], [])  # the first one died: taken over
    with backend_app.extensions["publisher"].sessions() as session:
        assert session.get(Delivery, delivery.id).receives == 2


def test_the_sweeper_enqueues_what_the_queue_lost(backend_app, recorded):
    client = backend_app.test_client()
    submit(client, bearer(backend_app), seed("scale-5"))
    services = backend_app.extensions["publisher"]
    services.huey.flush()  # the queue lost every task (a Redis without persistence restarted)
    assert drain(backend_app) == 0
    assert all(d.status == "pending" for d in deliveries(backend_app, "scale-5"))
    assert services.dispatcher.sweep() == 0  # enqueued a moment ago: not stale yet
    swept = services.dispatcher.sweep(grace=0)
    assert swept == len(deliveries(backend_app, "scale-5"))
    drain(backend_app)
    assert all(d.status == "done" for d in deliveries(backend_app, "scale-5"))
    assert Counter(e["output"] for e in recorded()) == {o: 1 for o in RECORDING_OUTPUTS}


def test_embargoed_record_waits_for_its_time(backend_app, recorded):
    client = backend_app.test_client()
    future = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    answer = submit(client, bearer(backend_app), seed("scale-6", publishedDateTime=future))
    assert answer.status_code == 202
    drain(backend_app)
    assert recorded() == []
    dispatcher = backend_app.extensions["publisher"].dispatcher
    assert dispatcher.sweep(now=utcnow()) == 0
    assert dispatcher.sweep(now=utcnow() + timedelta(hours=2), grace=0) > 0


# -- several processes at once (PostgreSQL + Redis) -------------------------------------------


def _submitter(
    settings: dict[str, Any],
    token: str,
    index: int,
    rounds: int,
    barrier: Any,
    results: Any,
) -> None:
    """One web process: submit the same, shared-but-different and own records, as fast as it can."""
    from publisher.app import create_app

    app = create_app(overrides=settings, environ={})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    answers: list[tuple[str, int, str]] = []
    rng = random.Random(index)
    barrier.wait(timeout=60)
    for k in range(rounds):
        same = submit(client, auth, seed("same", title="Everyone sends this one"))
        answers.append(("same", same.status_code, same.json.get("status", "")))
        shared = submit(client, auth, seed("shared", title=f"edit {index}-{k}"))
        answers.append(("shared", shared.status_code, shared.json.get("status", "")))
        own = submit(client, auth, seed(f"own-{index}-{k}"))
        answers.append(("own", own.status_code, own.json.get("status", "")))
        # a batch touching the same five records in a different order in every process
        ids = [f"batch-{n}" for n in range(5)]
        rng.shuffle(ids)
        batch = submit(client, auth, [seed(i, excerpt=f"from {index}-{k}") for i in ids])
        answers.append(("batch", batch.status_code, json.dumps(batch.json)))
    app.extensions["publisher"].close()
    results.put((index, answers))


def _collect(results: Any, children: list[Any], timeout: float) -> dict[int, Any]:
    """Each child's answers; fails at once (not after the timeout) if a child died."""
    import queue

    collected: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(collected) < len(children) and time.monotonic() < deadline:
        try:
            index, answers = results.get(timeout=0.5)
            collected[index] = answers
        except queue.Empty:
            dead = [c.exitcode for c in children if c.exitcode not in (None, 0)]
            assert not dead, f"a submitting process died (exit codes {dead})"
    assert len(collected) == len(children), "the submitting processes did not finish in time"
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return collected


@pytest.mark.scaleout
def test_concurrent_web_processes_store_each_record_once_and_lose_no_update(
    scaleout_backend, make_app, base_settings
):
    processes, rounds = 4, 5
    settings = settings_for(base_settings, scaleout_backend)
    app = make_app(**scaleout_backend.overrides())  # migrates once, makes the token
    token = bearer(app)["Authorization"].split()[1]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    children = [
        context.Process(
            target=_submitter, args=(settings, token, i, rounds, barrier, results), daemon=True
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    collected = _collect(results, children, timeout=120)

    answers = [a for i in sorted(collected) for a in collected[i]]
    failures = [a for a in answers if a[1] != 202]
    assert not failures, failures[:5]
    statuses = Counter((kind, status) for kind, _, status in answers if kind != "batch")
    # the same content from everyone: one process created it, every other answer is "unchanged"
    assert statuses[("same", "created")] == 1
    assert statuses[("same", "unchanged")] == processes * rounds - 1
    # distinct edits of one record: each is a revision of its own, none lost
    assert statuses[("shared", "created")] == 1
    assert statuses[("shared", "revised")] == processes * rounds - 1
    assert statuses[("own", "created")] == processes * rounds

    sessions = app.extensions["publisher"].sessions
    with sessions() as session:
        counts = dict(session.execute(select(Record.id, func.count()).group_by(Record.id)).all())
        assert set(counts.values()) == {1}  # no record stored twice
        assert len(counts) == 2 + processes * rounds + 5
        shared = session.scalars(select(Record).where(Record.id == "shared")).one()
        assert shared.revision == processes * rounds
        history = session.execute(
            select(Revision.revision, Revision.fields)
            .where(Revision.record_id == "shared")
            .order_by(Revision.revision)
        ).all()
        assert [r for r, _ in history] == list(range(1, processes * rounds + 1))
        titles = {fields["title"] for _, fields in history}
        assert titles == {f"edit {i}-{k}" for i in range(processes) for k in range(rounds)}
        assert shared.fields["title"] == history[-1][1]["title"]  # current = newest revision
        for n in range(5):
            batch = session.scalars(select(Record).where(Record.id == f"batch-{n}")).one()
            assert batch.revision == processes * rounds  # every batch's edit counted
        # one live (not superseded) pending delivery per output and record at most
        pending = session.execute(
            select(Delivery.record_id, Delivery.output, Delivery.event, func.count())
            .where(Delivery.status == "pending")
            .group_by(Delivery.record_id, Delivery.output, Delivery.event)
        ).all()
        assert all(count == 1 for *_, count in pending), pending


def _write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def _worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PUBLISHER_CONFIG": str(config), "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-c", "from publisher.cli import main; main()", "worker"]
    return subprocess.Popen(
        [*command, "--threads", "3"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _wait_until_started(workers: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Until each running worker's consumer has logged its start, then half a second more:
    huey sets its signal handlers right after that line (30 s at most in all)."""
    deadline = time.monotonic() + 30
    for worker, log in zip(workers, logs, strict=True):
        while worker.poll() is None and time.monotonic() < deadline:
            if "Huey consumer started" in log.read_text():
                time.sleep(0.5)  # the handlers come right after the consumer's threads
                break
            time.sleep(0.1)


@pytest.mark.scaleout
def test_two_worker_processes_run_each_delivery_once(
    scaleout_backend, make_app, base_settings, recorded, tmp_path
):
    settings = settings_for(base_settings, scaleout_backend)
    settings["delivery"]["sweep_interval"] = 0.5
    app = make_app(**scaleout_backend.overrides())
    client = app.test_client()
    auth = bearer(app)
    count = 25
    for n in range(count):
        assert submit(client, auth, seed(f"work-{n}", title=f"Work item {n}")).status_code == 202
    dispatcher = app.extensions["publisher"].dispatcher
    with app.extensions["publisher"].sessions() as session:
        ids = list(session.scalars(select(Delivery.id).where(Delivery.status == "pending")))
    for delivery_id in ids:  # every task twice more: a duplicate enqueue and a racing sweeper
        dispatcher._task(delivery_id)
        dispatcher._task(delivery_id)

    config = _write_config(tmp_path / "publisher.yaml", settings)
    workers = [_worker(config, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with app.extensions["publisher"].sessions() as session:
                left = session.scalar(
                    select(func.count()).where(Delivery.status != "done").select_from(Delivery)
                )
            if left == 0 or any(w.poll() is not None for w in workers):
                break
            time.sleep(0.2)
    finally:
        # a worker still starting has no handler yet: SIGTERM would kill it, not stop it
        _wait_until_started(workers, [tmp_path / f"worker-{i}.log" for i in range(2)])
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    logs = "\n".join((tmp_path / f"worker-{i}.log").read_text() for i in range(2))
    assert left == 0, logs[-3000:]
    assert codes == [0, 0], logs[-3000:]  # SIGTERM is a graceful stop

    with app.extensions["publisher"].sessions() as session:
        rows = list(session.scalars(select(Delivery)))
    assert len(rows) == len(ids) and all(r.status == "done" for r in rows)
    assert all(r.attempts == 1 and r.receives == 1 for r in rows), [
        (r.output, r.attempts, r.receives) for r in rows if r.attempts != 1 or r.receives != 1
    ]
    entries = recorded()
    per_delivery = Counter(e["delivery_id"] for e in entries)
    assert set(per_delivery.values()) == {1}  # no delivery ran twice
    assert len(per_delivery) == count * len(RECORDING_OUTPUTS)
    # both processes took part
    assert all("publisher" in (tmp_path / f"worker-{i}.log").read_text() for i in range(2))
