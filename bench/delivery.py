"""One delivery measurement in a process of its own (run by ``bench/run.py``).

``deliver``: store N published records (not timed), then run a huey consumer with the
built-in outputs (files, feeds) and time until every delivery is done.
``noop``: the same number of tasks of a huey task that does nothing, on the same storage,
through the same consumer. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from publisher.app import create_app  # noqa: E402
from publisher.db import unindexed  # noqa: E402
from publisher.models import Delivery  # noqa: E402
from publisher.worker import make_consumer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=["deliver", "noop"], required=True)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--record", required=True, help="a JSON record to vary")
    args = parser.parse_args()
    settings = json.loads(Path(args.config).read_text())
    app = create_app(overrides=settings, environ={})
    services = app.extensions["publisher"]
    huey = services.huey
    huey.flush()
    template = json.loads(Path(args.record).read_text())
    intake = app.extensions["publisher.intake"]
    run = uuid.uuid4().hex[:8]  # rounds may share a database (PostgreSQL): new records each
    ids = [f"dlv-{args.mode}-{run}-{n}" for n in range(args.records)]
    for start in range(0, args.records, 500):
        batch = []
        for n in range(start, min(args.records, start + 500)):
            item = dict(template, id=ids[n], title=f"Delivery bench {n}")
            batch.append(item)
        intake.take(batch, source="bench")
    # by record id (an index), never by status (every done delivery of a big store): this
    # is polled while the deliveries run, and must not compete with them for the CPUs
    mine = Delivery.record_id.in_(ids)
    with services.sessions() as session:
        total = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(mine, unindexed(Delivery.status) == "pending")
        )
    done = [0]
    lock = threading.Lock()
    if args.mode == "noop":
        huey.flush()

        @huey.task(name="bench.noop")
        def noop(n: int) -> None:
            with lock:
                done[0] += 1

        for n in range(total):
            noop(n)

    consumer = make_consumer(services, args.threads, embedded=True)
    began = time.perf_counter()
    consumer.start()
    finished = 0
    while time.perf_counter() - began < args.limit:
        if args.mode == "noop":
            finished = done[0]
        else:
            with services.sessions() as session:
                done_now = select(func.count()).select_from(Delivery)
                finished = session.scalar(
                    done_now.where(mine, unindexed(Delivery.status) == "done")
                )
        if finished >= total:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    consumer.stop(graceful=True)
    print(
        json.dumps(
            {
                "mode": args.mode,
                "tasks": total,
                "done": finished,
                "seconds": elapsed,
                "per_second": finished / elapsed if elapsed else 0,
            }
        )
    )
    services.close()


if __name__ == "__main__":
    main()
