"""One slow or hanging output delays only itself: each output has its own lane."""

from __future__ import annotations

import json
import time
from pathlib import Path

from publisher.worker import EmbeddedWorker
from tests.backends import backend_fixture  # noqa: F401 - the fixture
from tests.helpers import bearer


def _seen(log: Path, output: str) -> set[str]:
    if not log.exists():
        return set()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line]
    return {e["id"] for e in lines if e["output"] == output and e["action"] == "publish"}


def test_a_hanging_subscriber_does_not_hold_back_the_other_outputs(
    backend, make_app, base_settings, seed_json
):
    log = Path(base_settings["plugins"]["recording"]["log"])
    app = make_app(
        **backend.overrides(),
        plugins={"recording": {"log": str(log), "slow_seconds": 30}},  # hangs each attempt
        outputs={"slow": {"timeout": 10}},
    )
    services = app.extensions["publisher"]
    client, auth = app.test_client(), bearer(app)
    site = Path(base_settings["data_dir"]) / "site"
    worker = EmbeddedWorker(services, threads=2)
    worker.start()
    delays = []
    try:
        for n in range(9):  # the first warms up (threads, connections, the feeds' files)
            record = dict(seed_json, id=f"steady-{n}", title=f"Steady {n}", published=True)
            answer = client.post(
                "/api/v1/records",
                data=json.dumps(record),
                headers={**auth, "Content-Type": "application/json"},
            )
            assert answer.status_code == 202
            accepted = time.monotonic()
            while time.monotonic() - accepted < 5:
                stems = [p.stem for p in site.rglob("*.md")]
                live = any(stem.startswith(f"steady-{n}-") for stem in stems) and all(
                    f"steady-{n}" in _seen(log, name) for name in ("recorder", "flaky")
                )
                if live:
                    break
                time.sleep(0.02)
            delays.append(time.monotonic() - accepted)
            time.sleep(0.3)
        feed = client.get("/feeds/atom.xml").get_data(as_text=True)
    finally:
        worker.stop()
    assert max(delays[1:]) < 1.0, delays  # the bound: within 1 s of the 202, each time
    assert all(f"Steady {n}" in feed for n in range(9))
    assert _seen(log, "slow") == set()  # the hanging one got nothing through meanwhile


def test_a_forked_child_starts_with_empty_lanes():
    """A lane busy in the parent at the fork must not look busy (for ever) in the child."""
    import threading

    from publisher.background import Lanes
    from tests.concurrency import forked

    lanes, release = Lanes(threads=1, backlog=1), threading.Event()
    assert lanes.submit("slow", release.wait)
    assert not lanes.submit("slow", release.wait)  # the lane is full in the parent

    def child() -> None:
        done = threading.Event()
        assert lanes.submit("slow", done.set)  # room again, and it runs
        assert lanes.wait_idle(timeout=5) and done.is_set()

    with forked(child) as exit_code:
        assert exit_code() == 0
    release.set()
    assert lanes.wait_idle(timeout=5)


def test_messages_waiting_in_a_lane_merge_into_fewer_calls():
    """Under a backlog a lane makes fewer, larger calls (up to ``merge`` ids), in order."""
    import threading

    from publisher.background import Lanes

    calls, started, release = [], threading.Event(), threading.Event()

    def run(ids: list[str], output: str) -> None:
        started.set()
        release.wait(5)
        calls.append((ids, output))

    lanes = Lanes(threads=1, backlog=10, merge=4)
    assert lanes.submit("files", run, ["a"], "files")
    assert started.wait(5)  # the lane's one thread is busy with "a"
    for ids in (["b"], ["c", "d"], ["e"], ["f"]):
        assert lanes.submit("files", run, ids, "files")
    assert lanes.held("files") == 6  # deliveries: a, b, c, d, e, f
    release.set()
    assert lanes.wait_idle(timeout=5)
    assert calls == [(["a"], "files"), (["b", "c", "d", "e"], "files"), (["f"], "files")]


def test_a_lane_holds_deliveries_up_to_its_backlog_not_messages():
    """The backlog counts the ids a lane holds: one message of many ids fills it as many do."""
    import threading

    from publisher.background import Lanes

    release = threading.Event()
    lanes = Lanes(threads=1, backlog=3)
    assert lanes.submit("files", lambda ids: release.wait(5), ["a"])
    assert lanes.submit("files", lambda ids: release.wait(5), ["b", "c"])
    assert lanes.held("files") == 3
    assert not lanes.submit("files", lambda ids: release.wait(5), ["d"])  # full: 4 > 3
    release.set()
    assert lanes.wait_idle(timeout=5)
    assert lanes.submit("files", lambda ids: None, ["e", "f", "g", "h"])  # an empty lane takes any


def test_a_full_lane_that_moves_makes_its_caller_wait_for_room():
    """Backpressure: a huey thread waits for room instead of taking more from the queue, so
    that what this process cannot start soon stays there for other worker processes."""
    import threading

    from publisher.background import Lanes

    lanes = Lanes(threads=1, backlog=2, wait=5.0)
    assert lanes.submit("files", time.sleep, 0.3)
    assert lanes.submit("files", time.sleep, 0.3)  # full now
    began = time.monotonic()
    assert lanes.submit("files", time.sleep, 0.0)  # taken once the first one finished
    waited = time.monotonic() - began
    assert 0.2 < waited < 4.0, waited
    assert lanes.wait_idle(timeout=5)
    done = threading.Event()
    assert lanes.submit("files", done.set)
    assert done.wait(5)


def test_a_full_lane_that_does_not_move_refuses_at_once():
    """A hanging output must not hold huey's threads: its full lane refuses without waiting."""
    import threading

    from publisher.background import Lanes

    release = threading.Event()
    lanes = Lanes(threads=1, backlog=1, wait=0.3)
    assert lanes.submit("slow", release.wait, 10)
    time.sleep(0.4)  # nothing finished for longer than ``wait``: the lane is stuck
    began = time.monotonic()
    assert not lanes.submit("slow", release.wait, 10)
    assert time.monotonic() - began < 0.2
    release.set()
    assert lanes.wait_idle(timeout=5)


def test_a_second_worker_process_takes_its_share_of_a_backlog(
    backend, make_app, base_settings, seed_json
):
    """One worker must not drain the whole queue into its lanes while another idles: each
    process holds only what it can start soon, so a worker started later still gets work."""
    log = base_settings["plugins"]["recording"]["log"]
    settings = {
        **backend.overrides(),
        "plugins": {"recording": {"log": log, "slow_seconds": 0.02}},  # slow, but moving
        "delivery": {"lane_backlog": 100},
    }
    first, second = make_app(**settings), make_app(**settings)
    ran: dict[str, int] = {"first": 0, "second": 0}
    for name, app in (("first", first), ("second", second)):
        dispatcher = app.extensions["publisher"].dispatcher
        run = dispatcher.run_delivery

        def counted(ids, output=None, _run=run, _name=name):  # noqa: ANN001, ANN202
            if output == "slow":
                ran[_name] += len(ids)
            return _run(ids, output)

        dispatcher.run_delivery = counted
    intake = first.extensions["publisher.intake"]
    records = [dict(seed_json, id=f"backlog-{n}", published=True) for n in range(600)]
    intake.take(records, source="test")  # six messages of 100 for each output
    workers = [EmbeddedWorker(app.extensions["publisher"], threads=2) for app in (first, second)]
    workers[0].start()
    try:
        time.sleep(1.0)  # the first worker alone, long enough to take the whole queue
        workers[1].start()
        deadline = time.monotonic() + 60
        while sum(ran.values()) < len(records) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
    assert sum(ran.values()) >= len(records), ran
    assert ran["second"] >= 100, ran  # at least one of the six messages


def test_a_full_lane_takes_more_rather_than_starve_another_lane():
    """A huey thread waiting on one full lane brings nothing to the others: while another
    lane has nothing waiting, a full lane takes up to twice its backlog and the caller goes
    back to the queue, where the next message may be for the lane that would run dry."""
    import threading

    from publisher.background import Lanes

    release = threading.Event()
    lanes = Lanes(threads=1, backlog=2, wait=5.0)
    assert lanes.submit("feeds", lambda ids: None, ["x"])
    assert lanes.wait_idle(timeout=5)  # the feeds lane is there, with nothing waiting
    assert lanes.submit("files", lambda ids: release.wait(5), ["a", "b"])  # full
    began = time.monotonic()
    assert lanes.submit("files", lambda ids: None, ["c", "d"])  # taken at once
    assert time.monotonic() - began < 0.2
    assert lanes.held("files") == 4
    release.set()
    assert lanes.wait_idle(timeout=5)


def test_a_lane_that_stops_moving_while_a_caller_waits_refuses_it():
    """Waiting ends when the lane stops moving, and then the caller is refused: a full lane
    never holds more than its backlog because it hung."""
    import threading

    from publisher.background import Lanes

    release = threading.Event()
    lanes = Lanes(threads=1, backlog=1, wait=0.3)
    assert lanes.submit("slow", lambda: None)
    assert lanes.wait_idle(timeout=5)  # it moved just now
    assert lanes.submit("slow", release.wait, 10)  # full, and this one hangs
    assert not lanes.submit("slow", lambda: None)  # waited, then the lane stopped moving
    assert lanes.held("slow") == 1
    release.set()
    assert lanes.wait_idle(timeout=5)
