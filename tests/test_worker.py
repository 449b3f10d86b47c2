"""A real worker process: killed mid-delivery, another one finishes everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from publisher.app import create_app
from publisher.models import Delivery
from tests.helpers import DATA, LOCAL_PLUGINS

PUBLISHER = str(Path(sys.executable).parent / "publisher")


@pytest.fixture
def deployment(tmp_path):
    """A configuration file shared by the test (as the web side) and worker processes."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    log = tmp_path / "recorded.jsonl"
    config = {
        "data_dir": str(tmp_path / "data"),
        "keys_dir": str(keys),
        "plugins_dir": str(LOCAL_PLUGINS),
        "dev_key": False,
        "sqlite_synchronous": "NORMAL",
        "plugins": {"recording": {"log": str(log), "slow_seconds": 1.5}},
        "delivery": {
            "lease_seconds": 3,
            "sweep_interval": 0.5,
            "timeout": 2.5,
            "jitter": 0,
            "retry_schedule": [0, 1, 1, 1],
        },
    }
    path = tmp_path / "publisher.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PUBLISHER_CONFIG": str(path), "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return env, log


def start_worker(env):
    return subprocess.Popen(
        [PUBLISHER, "worker", "--threads", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(predicate, timeout=60.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def entries(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_kill_9_mid_delivery_loses_nothing(deployment):
    env, log = deployment
    app = create_app(environ=env)
    services = app.extensions["publisher"]
    record = json.loads((DATA / "seed-record.json").read_text())
    record["published"] = True
    items = [dict(record, originalUrl=f"https://example.com/{n}") for n in range(3)]
    app.extensions["publisher.intake"].take(items)

    worker = start_worker(env)
    try:
        started = wait_for(lambda: any(e["action"] == "start" for e in entries(log)), 30)
        assert started, "the slow output never started"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed_in_flight = {e["delivery_id"] for e in entries(log) if e["action"] == "start"}
        worker = start_worker(env)

        def all_done():
            with services.sessions() as session:
                open_ = session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status != "done")
                )
            return open_ == 0

        assert wait_for(all_done, 60), "deliveries still open after the restart"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        services.close()
    with services.sessions() as session:
        rows = list(session.scalars(select(Delivery)))
    assert len(rows) == 3 * len(services.dispatcher.outputs)
    finished = [e for e in entries(log) if e["output"] == "slow" and e["action"] == "publish"]
    slow_ids = {d.id for d in rows if d.output == "slow"}
    assert {e["delivery_id"] for e in finished} == slow_ids  # every one arrived
    # a delivery cut short by the kill came again under the same id
    assert killed_in_flight <= slow_ids
    for delivery_id in killed_in_flight:
        starts = [
            e for e in entries(log) if e["action"] == "start" and e["delivery_id"] == delivery_id
        ]
        assert len(starts) >= 2


def test_sigterm_lets_the_worker_finish_in_flight_work(deployment):
    env, log = deployment
    app = create_app(environ=env)
    services = app.extensions["publisher"]
    record = json.loads((DATA / "seed-record.json").read_text())
    record["published"] = True
    app.extensions["publisher.intake"].take([record])
    worker = start_worker(env)
    try:
        assert wait_for(lambda: any(e["action"] == "start" for e in entries(log)), 30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        services.close()
    started = {e["delivery_id"] for e in entries(log) if e["action"] == "start"}
    finished = {
        e["delivery_id"] for e in entries(log) if e["action"] == "publish" and e["output"] == "slow"
    }
    assert started == finished
