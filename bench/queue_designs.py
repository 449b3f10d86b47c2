"""The two designs issue 11 asked to measure before choosing, at the claim step.

- "huey carries the work": a message of ``batch`` ids is dequeued from huey, then those
  rows are leased by id in the record store (what ``publisher.leases`` does).
- "the table is the queue": one statement claims ``batch`` due rows (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL; on SQLite, which has no row locks, a plain ``UPDATE ... WHERE id IN
  (SELECT ... LIMIT)`` inside ``BEGIN IMMEDIATE``).

Printed: deliveries claimed per second for each, on SQLite and on PostgreSQL + Redis, and
their ratio. Only the claim is measured (no output call), so the difference is the design's.

    .venv/bin/python bench/queue_designs.py [--rows 20000] [--batch 100]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from huey import RedisHuey, SqliteHuey

PG = "host=127.0.0.1 user=postgres dbname=test"
REDIS = "redis://127.0.0.1:6379/0"


def _rows(n: int) -> list[tuple[str]]:
    return [(f"dlv_{uuid.uuid4().hex}",) for _ in range(n)]


def sqlite_table(path: Path, rows: list[tuple[str]], batch: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("create table jobs (id text primary key, status text, due real)")
    db.execute("create index ix_due on jobs (status, due)")
    db.executemany("insert into jobs values (?, 'pending', 0)", rows)
    claimed, started = 0, time.perf_counter()
    while True:
        db.execute("begin immediate")
        got = db.execute(
            "update jobs set status = 'leased' where id in (select id from jobs where"
            " status = 'pending' and due <= ? order by due limit ?) returning id",
            (time.time(), batch),
        ).fetchall()
        db.execute("commit")
        if not got:
            break
        claimed += len(got)
    return claimed / (time.perf_counter() - started)


def sqlite_huey(folder: Path, rows: list[tuple[str]], batch: int) -> float:
    db = sqlite3.connect(folder / "store.db", isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("create table jobs (id text primary key, status text, due real)")
    db.executemany("insert into jobs values (?, 'pending', 0)", rows)
    huey = SqliteHuey("bench", filename=str(folder / "queue.db"), results=False)
    return _huey_claims(huey, rows, batch, lambda ids: _lease_sqlite(db, ids))


def _lease_sqlite(db: sqlite3.Connection, ids: list[str]) -> int:
    db.execute("begin immediate")
    marks = ",".join("?" * len(ids))
    got = db.execute(
        f"update jobs set status = 'leased' where id in ({marks}) and status = 'pending'"  # noqa: S608
        " returning id",
        ids,
    ).fetchall()
    db.execute("commit")
    return len(got)


def _huey_claims(huey, rows, batch, lease) -> float:  # noqa: ANN001
    task = huey.task(name="bench.noop")(lambda ids: None)
    for start in range(0, len(rows), batch):
        task([row[0] for row in rows[start : start + batch]])
    claimed, started = 0, time.perf_counter()
    while (message := huey.dequeue()) is not None:
        claimed += lease(list(message.args[0]))
    elapsed = time.perf_counter() - started
    huey.storage.flush_all()
    return claimed / elapsed


def postgres(rows: list[tuple[str]], batch: int, huey: bool) -> float:
    import psycopg

    table = f"bench_jobs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as db:
        db.execute(f"create table {table} (id text primary key, status text, due float8)")
        db.execute(f"create index on {table} (status, due)")
        with db.cursor() as cursor:
            cursor.executemany(f"insert into {table} values (%s, 'pending', 0)", rows)  # noqa: S608
        try:
            if huey:
                queue = RedisHuey(f"bench_{uuid.uuid4().hex[:8]}", url=REDIS, results=False)
                return _huey_claims(queue, rows, batch, lambda ids: _lease_pg(db, table, ids))
            return _claim_pg(db, table, batch)
        finally:
            db.execute(f"drop table {table}")


def _lease_pg(db, table: str, ids: list[str]) -> int:  # noqa: ANN001
    with db.transaction():
        return len(
            db.execute(
                f"update {table} set status = 'leased' where id = any(%s)"  # noqa: S608
                " and status = 'pending' returning id",
                (ids,),
            ).fetchall()
        )


def _claim_pg(db, table: str, batch: int) -> float:  # noqa: ANN001
    claimed, started = 0, time.perf_counter()
    while True:
        with db.transaction():
            got = db.execute(
                f"update {table} set status = 'leased' where id in (select id from {table}"  # noqa: S608
                " where status = 'pending' and due <= %s order by due limit %s"
                " for update skip locked) returning id",
                (time.time(), batch),
            ).fetchall()
        if not got:
            break
        claimed += len(got)
    return claimed / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    rows = _rows(args.rows)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        results = {
            "SQLite: huey + lease by id": sqlite_huey(Path(a), rows, args.batch),
            "SQLite: table claim": sqlite_table(Path(b) / "t.db", rows, args.batch),
            "PostgreSQL + Redis: huey + lease by id": postgres(rows, args.batch, huey=True),
            "PostgreSQL: table claim (SKIP LOCKED)": postgres(rows, args.batch, huey=False),
        }
    width = max(map(len, results))
    for name, rate in results.items():
        print(f"{name:<{width}}  {rate:>10,.0f} deliveries claimed/s")
    names = list(results)
    for huey_name, table_name in ((names[0], names[1]), (names[2], names[3])):
        print(f"{table_name} / {huey_name}: {results[table_name] / results[huey_name]:.2f}")


if __name__ == "__main__":
    main()
