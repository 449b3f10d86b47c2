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
    assert lanes.held("files") == 5
    release.set()
    assert lanes.wait_idle(timeout=5)
    assert calls == [(["a"], "files"), (["b", "c", "d", "e"], "files"), (["f"], "files")]
