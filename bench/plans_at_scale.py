"""The query plans of the delivery path and of the hot reads on PostgreSQL at size.

Fills a fresh database (migrated as the service does) with ``--records`` published records
(a third of them with a common topic, one in 10,000 with a rare one, each with one of 40
others), one placement and one done delivery per record and output, then runs ``EXPLAIN``
on the statements that run and settle a delivery (issue 11) and on the hot reads of
``tests/test_db.py`` (the API's lists, filters and topics, the deliveries listing, the
operator page, the gauges; issue 17), and prints each plan. None may be a sequential scan
of a big table, and a read served in order (a page) may not sort what it found: their cost
would grow with what is stored.

    .venv/bin/python bench/plans_at_scale.py [--records 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import create_engine, event, select

from publisher.db import upgrade
from publisher.dispatch import _CONFIRM, _DONE
from publisher.leases import _lease_statement
from publisher.models import Attempt, Delivery, Placement, Record
from publisher.store import _OPEN
from tests.test_db import _hot_reads

BIG = ("records", "deliveries", "placements", "record_topics", "revisions", "delivery_attempts")

ADMIN = "host=127.0.0.1 user=postgres dbname=test"
OUTPUTS = ("files", "feeds", "webhook:partner")


def fill(url: str, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as db:
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY records (id, revision, source, state, published, fields, body, content_hash,"
                " meaning_hash, meaning_revision, secured_status, warnings, created_at, updated_at)"
                " FROM STDIN"
            ) as copy,
        ):
            for n in range(count):
                copy.write_row((f"r{n}", 1, "api", "published", True, '{"title": "t"}', "",
                                "h", "h", 1, "absent", "[]", now, now))  # fmt: skip
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY placements (record_id, output, state, revision, held_revision, updated_at)"
                " FROM STDIN"
            ) as copy,
        ):
            for n in range(count):
                for output in OUTPUTS:
                    copy.write_row((f"r{n}", output, "live", 1, 1, now))
        with (
            db.cursor() as cursor,
            cursor.copy("COPY record_topics (record_id, topic, record_seq) FROM STDIN") as copy,
        ):
            for n in range(count):  # seq n + 1: the records above, in order
                copy.write_row((f"r{n}", f"topic-{n % 40}", n + 1))
                if n % 3 == 0:
                    copy.write_row((f"r{n}", "AI", n + 1))
                if n % 10_000 == 0:
                    copy.write_row((f"r{n}", "rare", n + 1))
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY deliveries (id, record_id, revision, output, event, status, attempts,"
                " receives, next_attempt_at, resend, created_at, updated_at) FROM STDIN"
            ) as copy,
        ):
            for n in range(count):
                for output in OUTPUTS:
                    copy.write_row((f"dlv_{n}_{output}", f"r{n}", 1, output, "published",
                                    "done", 1, 1, now, False, now, now))  # fmt: skip
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY delivery_attempts (delivery_id, at, outcome, event, duration_ms) FROM STDIN"
            ) as copy,
        ):
            for n in range(count):
                for output in OUTPUTS:
                    copy.write_row((f"dlv_{n}_{output}", now, "delivered", "published", 3))
        db.execute("ANALYZE")


def plans(url: str) -> dict[str, str]:
    engine = create_engine(url)
    statements = {
        "open deliveries of a pair": (_OPEN, {"b_id": "r7", "b_output": "files"}),
        "confirm (ledger)": (
            _CONFIRM,
            {"r": "r7", "o": "files", "v": 2, "s": "live", "h": 2, "t": datetime.now(UTC)},
        ),
        "done": (_DONE, {"b_id": "dlv_x", "b_event": "updated", "b_now": datetime.now(UTC)}),
        "run: deliveries with records and placements": (
            select(Delivery, Record, Placement.held_revision)
            .join(Record, Record.id == Delivery.record_id)
            .outerjoin(
                Placement,
                (Placement.record_id == Delivery.record_id) & (Placement.output == Delivery.output),
            )
            .where(Delivery.id.in_(["dlv_a", "dlv_b"])),
            {},
        ),
        "attempt history": (select(Attempt).where(Attempt.delivery_id.in_(["dlv_a"])), {}),
        "lease": (_lease_statement(["dlv_a", "dlv_b"], datetime.now(UTC), 60), {}),
    }
    found = {}
    for name, (statement, values) in statements.items():
        found[name] = (" / ".join(_explain(engine, statement, values)), False)
    for name, (call, _index, ordered) in _hot_reads().items():
        found[f"read: {name}"] = (" / ".join(_explain_call(engine, call)), ordered)
    engine.dispose()
    return found


def _explain_call(engine, call) -> list[str]:  # noqa: ANN001
    """The plans of what ``call(session)`` runs (as ``_explain``, through an ORM session)."""
    from sqlalchemy.orm import Session

    lines: list[str] = []
    with engine.connect() as connection:

        def explain(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001, ANN202
            return f"EXPLAIN {sql}", parameters

        def capture(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001
            lines.extend(row[0].strip() for row in cursor.fetchall())

        event.listen(connection, "before_cursor_execute", explain, retval=True)
        event.listen(connection, "after_cursor_execute", capture)
        with contextlib.suppress(Exception), Session(bind=connection) as session:
            call(session)
        connection.rollback()
    return lines


def problems(plan: str, ordered: bool) -> list[str]:
    found = [f"Seq Scan on {t}" for t in BIG if f"Seq Scan on {t} " in plan + " "]
    if ordered and "Sort" in plan.replace("Sort Key", "").replace("Incremental Sort", ""):
        found.append("Sort")
    return found


def _explain(engine, statement, values) -> list[str]:  # noqa: ANN001
    """The plan of ``statement`` run as the code runs it (EXPLAIN put in front of its SQL)."""
    lines: list[str] = []
    with engine.connect() as connection:

        def explain(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001, ANN202
            return f"EXPLAIN {sql}", parameters

        def capture(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001
            lines.extend(row[0].strip() for row in cursor.fetchall())

        event.listen(connection, "before_cursor_execute", explain, retval=True)
        event.listen(connection, "after_cursor_execute", capture)
        with contextlib.suppress(Exception):  # the result is a plan, not what it expects
            connection.execute(statement, values)
        connection.rollback()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--full", action="store_true", help="print more of each plan")
    args = parser.parse_args()
    name = f"pub_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        fill(url, args.records)
        bad = 0
        for what, (plan, ordered) in plans(url).items():
            wrong = problems(plan, ordered)
            bad += bool(wrong)
            print(f"{'BAD  ' if wrong else 'ok   '}{what}: {plan[: 400 if args.full else 160]}")
            if wrong:
                print(f"     {', '.join(wrong)}")
        sys.exit(1 if bad else 0)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
