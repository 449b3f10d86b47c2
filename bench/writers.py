"""SQLite writers' turns: processes x threads group-committing one-row inserts on one file.

``.venv/bin/python bench/writers.py [--processes 2] [--threads 4] [--seconds 5]``

Each process runs ``--threads`` threads that submit a row at a time to one
:class:`~publisher.groupcommit.GroupCommitter` whose leader takes the writers' turn
(:func:`publisher.db.writer_lock`) before its batch, as intake and the webhook inbox do;
the database is a fresh SQLite file with ``synchronous=FULL``. Prints, per process and in
total, the rows and transactions committed and each row's wait (p50, p99, max). What it
isolates is the writers' lock and the batching around it: no HTTP, no validation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_process(url: str, threads: int, seconds: float) -> dict[str, float]:
    from sqlalchemy import text

    from publisher.db import make_engine, write_connection, writer_lock
    from publisher.groupcommit import GroupCommitter

    engine = make_engine(url)
    transactions = [0]

    def write(items: list[int]) -> list[int]:
        with write_connection(engine) as connection:
            connection.execute(
                text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 200}] * len(items)
            )
        transactions[0] += 1
        return items

    committer = GroupCommitter(write, gate=lambda: writer_lock(engine))
    waits: list[float] = []
    stop = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            committer.submit(1)
            waits.append(time.monotonic() - start)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    waits.sort()
    return {
        "rows": len(waits),
        "transactions": transactions[0],
        "p50_ms": waits[len(waits) // 2] * 1000,
        "p99_ms": waits[int(len(waits) * 0.99)] * 1000,
        "max_ms": waits[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--url", help=argparse.SUPPRESS)  # a child process's database
    args = parser.parse_args()
    if args.url:
        print(json.dumps(one_process(args.url, args.threads, args.seconds)))
        return
    from sqlalchemy import text

    from publisher.db import make_engine, write_connection

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/writers.db"
        engine = make_engine(url)
        with write_connection(engine) as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        engine.dispose()
        command = [sys.executable, __file__, "--url", url, "--threads", str(args.threads)]
        children = [
            subprocess.Popen([*command, "--seconds", str(args.seconds)], stdout=subprocess.PIPE)
            for _ in range(args.processes)
        ]
        results = [json.loads(child.communicate()[0]) for child in children]
    for number, result in enumerate(results, 1):
        print(f"process {number}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()))
    rows = sum(r["rows"] for r in results)
    transactions = sum(r["transactions"] for r in results)
    print(
        f"total: {rows / args.seconds:.0f} rows/s in {transactions / args.seconds:.0f} "
        f"transactions/s ({rows / max(transactions, 1):.1f} rows a transaction)"
    )


if __name__ == "__main__":
    main()
