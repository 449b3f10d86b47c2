"""The schema: migrations build exactly what the models describe, on every backend."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text

from publisher.db import (
    alembic_config,
    make_engine,
    schema_revision,
    upgrade,
    write_connection,
    writer_lock,
)
from publisher.migrations import HEAD
from publisher.models import Base
from publisher.taskqueue import make_huey
from tests.backends import create_database, drop_database, require_scaleout
from tests.concurrency import forked, wait_until


def test_migrations_match_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"render_as_batch": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == [], "models changed without a migration: run alembic revision --autogenerate"


def test_upgrade_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert version == HEAD


def test_head_names_alembics_newest_revision(tmp_path):
    from alembic.script import ScriptDirectory

    from publisher.db import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    assert scripts.get_current_head() == HEAD


def test_a_store_at_head_starts_without_importing_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'current.db'}"
    upgrade(url)
    script = (
        "import sys; from publisher.db import upgrade; upgrade(sys.argv[1]); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))"
    )
    started = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "[]"


def test_a_store_behind_head_is_migrated_on_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    upgrade(url, "0004")
    assert schema_revision(url) == "0004"
    upgrade(url)
    assert schema_revision(url) == HEAD


def test_looking_at_the_revision_of_a_missing_sqlite_file_does_not_create_it(tmp_path):
    database = tmp_path / "missing.db"
    assert schema_revision(f"sqlite:///{database}") is None
    assert not database.exists()


def test_sqlite_is_durable_by_default(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def query_plan(engine, statement) -> str:
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
        )
        return " | ".join(row[3] for row in rows)


@contextlib.contextmanager
def explaining(engine) -> Iterator[tuple[Any, list[str]]]:  # noqa: ANN001
    """A connection whose statements the database plans instead of running; the plans."""
    plans: list[str] = []
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:

        def explain(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001, ANN202
            return f"EXPLAIN QUERY PLAN {sql}" if sqlite else f"EXPLAIN {sql}", parameters

        def capture(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001
            plans.extend(row[3] if sqlite else row[0] for row in cursor.fetchall())

        event.listen(connection, "before_cursor_execute", explain, retval=True)
        event.listen(connection, "after_cursor_execute", capture)
        yield connection, plans
        connection.rollback()


def bound_plan(engine, statement, **values) -> str:
    """The plan made for a prebuilt statement run with ``values``, as the code runs it."""
    # the result is a plan, not what the statement expects
    with explaining(engine) as (connection, plans), contextlib.suppress(Exception):
        connection.execute(statement, values)
    return " | ".join(plans)


def test_pending_checks_leave_the_choice_of_index_to_the_selective_one(tmp_path):
    """SQLite without statistics would walk every pending delivery through ix_deliveries_due."""
    from datetime import UTC, datetime

    from sqlalchemy import update
    from sqlalchemy.dialects import postgresql

    from publisher.db import unindexed
    from publisher.leases import _lease_statement
    from publisher.models import Delivery

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    plain = update(Delivery).where(Delivery.record_id == "r", Delivery.status == "pending")
    wrapped = update(Delivery).where(
        Delivery.record_id == "r", unindexed(Delivery.status) == "pending"
    )
    assert "ix_deliveries_due" in query_plan(engine, plain)  # what the wrapper is for
    assert "ix_deliveries_due" not in query_plan(engine, wrapped)
    lease_plan = query_plan(engine, _lease_statement(["a", "b"], now, 60))
    assert "ix_deliveries_due" not in lease_plan
    assert "ix_deliveries_record_output" in lease_plan  # the running-sibling check
    assert "+deliveries" not in str(wrapped.compile(dialect=postgresql.dialect()))  # SQLite's


def test_sqlite_queue_commits_without_fsync_but_consistently(tmp_path):
    """The queue only points at durable rows (the sweeper re-sends a lost message), so it
    runs WAL with synchronous=NORMAL: consistent after a power cut, no fsync per enqueue."""
    huey = make_huey(str(tmp_path / "queue.db"))
    connection = huey.storage.conn
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    huey.storage.enqueue(b"message")
    assert huey.storage.dequeue() == b"message"


@contextmanager
def lock_file_held(database: Path) -> Iterator[Path]:
    """Hold the writers' lock file of ``database`` as another process's writer would."""
    path = Path(f"{database}-writer.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def waiting_for(lock_file: Path) -> int:
    """How many ``flock`` waiters the kernel lists for ``lock_file`` (``/proc/locks``)."""
    inode = f":{lock_file.stat().st_ino} "
    return sum("-> FLOCK" in line and inode in line for line in open("/proc/locks"))


def sqlite_write_lock_is_free(database: Path) -> bool:
    """True if a writer outside publisher gets SQLite's write lock at once."""
    connection = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def test_a_sqlite_writer_waits_for_its_turn_on_the_lock_file_not_inside_sqlite(tmp_path):
    """While another process's writer holds the turn, a writer sleeps on the lock file:
    it has not begun its transaction (SQLite's lock is free), and goes on once released."""
    database = tmp_path / "turn.db"
    engine = _engine_with_a_table(database)
    done = threading.Event()

    def write() -> None:
        with write_connection(engine) as connection:
            connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
        done.set()

    with lock_file_held(database) as lock_file:
        writer = threading.Thread(target=write)
        writer.start()
        wait_until(lambda: waiting_for(lock_file) == 1)
        assert sqlite_write_lock_is_free(database)
        assert not done.is_set()
    writer.join(10)
    assert done.is_set()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM t")).scalars().all() == ["a"]
    engine.dispose()


def test_of_a_processs_waiting_writers_one_waits_on_the_lock_file(tmp_path):
    """The others wait on a lock of their process: each process gets its turn, however
    many of its threads wait (a worker's delivery threads against a web process's leader)."""
    database = tmp_path / "fair.db"
    engine = _engine_with_a_table(database)
    waiting = threading.Barrier(5)

    def write() -> None:
        waiting.wait(10)
        with write_connection(engine) as connection:
            connection.execute(text("INSERT INTO t (name) VALUES ('w')"))

    with lock_file_held(database) as lock_file:
        writers = [threading.Thread(target=write) for _ in range(4)]
        for writer in writers:
            writer.start()
        waiting.wait(10)  # all four are on their way to the turn
        wait_until(lambda: waiting_for(lock_file) >= 1)
        time.sleep(0.2)  # time for the others to queue on the file too, if they would
        assert waiting_for(lock_file) == 1
    for writer in writers:
        writer.join(10)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 4
    engine.dispose()


def test_a_thread_keeps_its_turn_for_the_writes_it_nests_until_the_outermost_ends(tmp_path):
    """As a group commit's leader does: it takes the turn, then opens its transaction."""
    database = tmp_path / "nested.db"
    engine = _engine_with_a_table(database)
    with writer_lock(engine):
        with write_connection(engine) as connection:
            connection.execute(text("INSERT INTO t (name) VALUES ('b')"))
        assert not turn_is_free(database)  # the inner one ended, the thread's turn did not
    assert turn_is_free(database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 1
    engine.dispose()


def turn_is_free(database: Path) -> bool:
    """True if another process's writer would get the turn at once."""
    fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _engine_with_a_table(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    with write_connection(engine) as connection:
        connection.execute(text("CREATE TABLE t (name TEXT)"))
    return engine


#: writers that fail at once with "database is locked" if they ever meet SQLite's lock
BUMPS = """
import sys
from concurrent.futures import ThreadPoolExecutor
from sqlalchemy import event, text
from publisher.db import make_engine, make_sessionmaker, transaction

engine = make_engine(sys.argv[1])
event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout=0"))
sessions = make_sessionmaker(engine)

def bump(_):
    with transaction(sessions) as session:
        value = session.execute(text("SELECT n FROM counter")).scalar_one()
        session.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})

with ThreadPoolExecutor(8) as pool:
    list(pool.map(bump, range(int(sys.argv[2]))))
"""


def test_sqlite_writers_of_many_processes_and_threads_never_meet_sqlites_lock(tmp_path):
    """With SQLite's busy timeout at 0, a writer that found the database locked would fail:
    every one of them commits, so they took turns on the lock file, never inside SQLite."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    engine = make_engine(url)
    with write_connection(engine) as connection:
        connection.execute(text("CREATE TABLE counter (n INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (0)"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", BUMPS, url, "150"], stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=90), p.stderr.read()) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 450
    engine.dispose()


def test_a_forked_child_does_not_keep_the_lock_its_parents_writer_held(tmp_path):
    """A ``flock`` lives as long as any copy of its descriptor: the child closes its copy,
    so once the parent's writer commits, the child (and everyone else) gets the turn."""
    engine = _engine_with_a_table(tmp_path / "fork.db")
    inside, release = threading.Event(), threading.Event()

    def parent_writer() -> None:
        with write_connection(engine) as connection:
            connection.execute(text("INSERT INTO t (name) VALUES ('parent')"))
            inside.set()
            release.wait(10)

    writer = threading.Thread(target=parent_writer)
    writer.start()
    inside.wait(10)

    def child() -> None:
        # (SQLite itself must not be used across a fork with a transaction open: the child
        # only takes its turn on the lock file)
        with writer_lock(engine):
            pass

    with forked(child) as exit_code:
        release.set()
        writer.join(10)
    assert exit_code() == 0  # the child got the turn; it did not wait forever for its copy
    with write_connection(engine) as connection:  # and so does the parent
        assert connection.execute(text("SELECT name FROM t")).scalars().all() == ["parent"]
    engine.dispose()


def test_processes_starting_at_once_on_a_fresh_sqlite_file_all_migrate(tmp_path):
    """gunicorn's workers each run the upgrade on start; they must not race on the DDL."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    script = "import sys; from publisher.db import upgrade; upgrade(sys.argv[1])"
    starts = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read()) for p in starts]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()


def test_a_migration_waits_for_its_turn_before_it_looks_at_the_schema(tmp_path):
    """So of several processes starting on a fresh file, one creates the tables and the
    others, migrating after it, find them there."""
    database = tmp_path / "waits.db"
    url = f"sqlite:///{database}"
    script = "import sys; from publisher.db import upgrade; upgrade(sys.argv[1])"
    with lock_file_held(database) as lock_file:
        start = subprocess.Popen([sys.executable, "-c", script, url])
        wait_until(lambda: waiting_for(lock_file) == 1, seconds=60)
        assert start.poll() is None
        assert not database.exists() or "alembic_version" not in _tables(database)
    assert start.wait(timeout=60) == 0
    assert "alembic_version" in _tables(database)


def _tables(database: Path) -> set[str]:
    connection = sqlite3.connect(database)
    try:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()


def test_the_delivery_paths_find_their_rows_by_index_whatever_is_stored(tmp_path):
    """Running and settling a delivery touches its own rows only: no scan grows with the store."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from publisher.dispatch import _CONFIRM
    from publisher.models import Attempt, Delivery, Placement
    from publisher.store import _OPEN

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    opened = bound_plan(engine, _OPEN, b_id="r", b_output="files")
    assert "ix_deliveries_record_output" in opened
    values = {"r": "r", "o": "files", "v": 1, "s": "live", "h": 1, "t": datetime.now(UTC)}
    confirm = bound_plan(engine, _CONFIRM, **values)
    assert "sqlite_autoindex_placements_1" in confirm or "PRIMARY KEY" in confirm
    history = select(Attempt).where(Attempt.delivery_id.in_(["a", "b"])).order_by(Attempt.id)
    assert "ix_delivery_attempts_delivery_id" in query_plan(engine, history)
    by_output = select(Placement.record_id).where(Placement.output == "files")
    assert "ix_placements_output_record" in query_plan(engine, by_output)
    due = select(Delivery.id).where(Delivery.status == "pending", Delivery.next_attempt_at <= 1)
    assert "ix_deliveries_due" in query_plan(engine, due)
    plans = [opened, confirm] + [query_plan(engine, s) for s in (history, by_output, due)]
    for plan in plans:
        assert "SCAN" not in plan, plan
    engine.dispose()


# -- the hot reads: each walks an index, whatever is stored ------------------------------------


def session_plans(engine, call) -> str:  # noqa: ANN001
    """The plans SQLite makes for every statement ``call(session)`` runs, as the code runs it."""
    from sqlalchemy.orm import Session

    explained = explaining(engine)
    # what the call gets back is a plan, not rows: it may fail, as it likes
    with (
        explained as (connection, plans),
        contextlib.suppress(Exception),
        Session(bind=connection) as session,
    ):
        call(session)
    return " | ".join(plans)


def _hot_reads() -> dict[str, tuple[Any, str, bool]]:
    """name: (call(session), the index it must use, whether its order comes from that index)."""
    from datetime import UTC, datetime

    from publisher import metrics, overview, queries

    now = datetime.now(UTC)
    after = (now, "dlv_x")
    page = overview.RecordFilter
    cursor = queries.encode_cursor(1000)

    def gauges(session) -> Any:  # noqa: ANN001
        return session.execute(metrics.DELIVERIES_WAITING).all()

    def gauge_held(session) -> Any:  # noqa: ANN001
        return session.execute(metrics.QUARANTINE_HELD).all()

    def held(session) -> Any:  # noqa: ANN001
        return overview.quarantine_count(session)

    return {
        "records ?published=true": (
            lambda s: queries.list_records(s, published=True),
            "ix_records_published_seq",
            True,
        ),
        "records ?published=false, next page": (
            lambda s: queries.list_records(s, published=False, cursor=cursor),
            "ix_records_published_seq",
            True,
        ),
        "records ?state=": (
            lambda s: queries.list_records(s, state="published"),
            "ix_records_state_seq",
            True,
        ),
        "records ?topic=": (
            lambda s: queries.list_records(s, topic="AI"),
            "ix_record_topics_topic_seq",
            True,
        ),
        "records ?topic= (a rare one)": (
            lambda s: queries.list_records(s, topic="rare"),
            "ix_record_topics_topic_seq",
            True,
        ),
        "records ?topic=, next page": (
            lambda s: queries.list_records(s, topic="AI", cursor=cursor),
            "ix_record_topics_topic_seq",
            True,
        ),
        "records ?topic=&published=true": (
            lambda s: queries.list_records(s, topic="AI", published=True),
            "ix_record_topics_topic_seq",
            True,
        ),
        "a record's deliveries": (
            lambda s: queries.deliveries_of(s, "r"),
            "ix_deliveries_record_output",
            False,
        ),
        "deliveries": (lambda s: queries.list_deliveries(s), "ix_deliveries_updated", True),
        "deliveries, next page": (
            lambda s: queries.list_deliveries(s, after=after),
            "ix_deliveries_updated",
            True,
        ),
        "deliveries ?output=": (
            lambda s: queries.list_deliveries(s, output="files"),
            "ix_deliveries_updated",
            True,
        ),
        "deliveries ?status=, next page": (
            lambda s: queries.list_deliveries(s, status="done", after=after),
            "ix_deliveries_status_updated",
            True,
        ),
        "overview ?topic=": (
            lambda s: overview.record_page(s, page(topic="AI"), now, None, 50),
            "ix_record_topics_topic_seq",
            True,
        ),
        "overview ?topic= oldest first, next page": (
            lambda s: overview.record_page(s, page(topic="AI", order="oldest"), now, cursor, 50),
            "ix_record_topics_topic_seq",
            True,
        ),
        "overview ?state=": (
            lambda s: overview.record_page(s, page(state="embargoed"), now, None, 50),
            "ix_records_state_seq",
            True,
        ),
        "overview ?delivery=dead": (
            lambda s: overview.record_page(s, page(delivery="dead"), now, None, 50),
            "ix_deliveries_due",
            False,
        ),
        "overview ?delivery=due": (
            lambda s: overview.record_page(s, page(delivery="due"), now, None, 50),
            "ix_deliveries_due",
            False,
        ),
        "overview counts": (lambda s: overview.delivery_counts(s, now), "ix_deliveries_due", False),
        "overview held quarantine": (held, "ix_quarantine_replayed_at", False),
        "gauge: pending and dead deliveries": (gauges, "ix_deliveries_due", False),
        "gauge: held quarantine": (gauge_held, "ix_quarantine_replayed_at", False),
    }


def _plan_problems(plan: str, index: str, ordered: bool) -> list[str]:
    """What makes ``plan`` grow with the store: the index unused, a table scan, a sort."""
    problems = [] if index in plan else [f"does not use {index}"]
    for step in plan.split(" | "):
        table = step.split()[1] if step.startswith("SCAN ") else ""
        if table and not table.startswith("anon_") and "USING" not in step:
            problems.append(step)  # (a capped subquery's rows, ``anon_N``, may be scanned)
    if ordered and "TEMP B-TREE" in plan:
        problems.append("sorts what it found (USE TEMP B-TREE)")
    return problems


def test_every_hot_read_walks_an_index_and_reads_its_page_in_order(tmp_path):
    """The API's lists, filters and topics, the deliveries listing, the operator page and the
    gauges: a read whose plan scans a table or sorts its matches fails here (``bench/scale.py``
    measures them with 200,000 records; ``bench/plans_at_scale.py`` checks PostgreSQL)."""
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    upgrade(url)
    engine = make_engine(url)
    found = {
        name: (plan, _plan_problems(plan, index, ordered))
        for name, (call, index, ordered) in _hot_reads().items()
        for plan in [session_plans(engine, call)]
    }
    engine.dispose()
    assert {n: p for n, (_, p) in found.items() if p} == {}, found


def test_the_plan_check_fails_when_a_hot_reads_index_is_gone(tmp_path):
    """The check above can fail: without its index, each read's plan is refused."""
    url = f"sqlite:///{tmp_path / 'dropped.db'}"
    upgrade(url)
    engine = make_engine(url)
    reads = _hot_reads()
    with write_connection(engine) as connection:
        for index in {index for _, index, _ in reads.values()}:
            connection.execute(text(f"DROP INDEX {index}"))
    passing = [
        name
        for name, (call, index, ordered) in reads.items()
        if not _plan_problems(session_plans(engine, call), index, ordered)
    ]
    engine.dispose()
    assert passing == []


def _fill_deliveries(engine: Engine, done: int, waiting: int) -> None:
    """``done`` delivered rows and ``waiting`` pending and dead ones, over three outputs."""
    statuses = ["done"] * done + ["pending", "dead"] * (waiting // 2)
    rows = [
        {
            "id": f"dlv_{n}",
            "record": f"r{n // 3}",
            "output": ("files", "feeds", "hook")[n % 3],
            "status": status,
        }
        for n, status in enumerate(statuses)
    ]
    with write_connection(engine) as connection:
        connection.execute(
            text(
                "INSERT INTO deliveries (id, record_id, revision, output, event, status,"
                " attempts, receives, next_attempt_at, resend, created_at, updated_at)"
                " VALUES (:id, :record, 1, :output, 'published', :status, 1, 1,"
                " '2026-12-01 00:00:00', 0, '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
            ),
            rows,
        )
        connection.execute(text("ANALYZE"))


def test_the_waiting_deliveries_are_read_by_index_after_an_analyze(tmp_path):
    """An operator's ``ANALYZE`` (or ``PRAGMA optimize``) tells SQLite that ``status`` is
    nearly always ``done``, not that ``pending`` and ``dead`` are rare (it keeps no
    histograms), and it scanned the table for them. ``ix_deliveries_due`` holds only the
    waiting rows, so the gauges, the overview's counts and filters and the sweep read it
    whatever the statistics say."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from publisher.models import Delivery

    url = f"sqlite:///{tmp_path / 'analyzed.db'}"
    upgrade(url)
    engine = make_engine(url)
    _fill_deliveries(engine, done=3_000, waiting=10)
    reads = {
        n: call for n, (call, index, _) in _hot_reads().items() if index == "ix_deliveries_due"
    }
    now = datetime.now(UTC)
    due = select(Delivery.id).where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
    reads["the sweep's due deliveries"] = lambda session: session.execute(due).all()
    found = {
        name: (plan, _plan_problems(plan, "ix_deliveries_due", False))
        for name, call in reads.items()
        for plan in [session_plans(engine, call)]
    }
    engine.dispose()
    assert len(found) == 5
    assert {n: p for n, (_, p) in found.items() if p} == {}, found


LARGE_VALUES = {"records": ("fields", "body"), "revisions": ("fields", "body"),
                "inbox": ("payload",), "quarantine": ("payload",)}  # fmt: skip


@contextmanager
def fresh_postgresql() -> Iterator[tuple[str, Engine]]:
    """A new PostgreSQL database at the schema's head, and an engine on it; dropped after."""
    require_scaleout()
    url = create_database()
    engine = create_engine(url)
    try:
        upgrade(url)
        yield url, engine
    finally:
        engine.dispose()
        drop_database(url)


def test_postgresql_compresses_whole_records_and_payloads_with_lz4():
    """With pglz, the inserts of a record's row and revision were most of the server's time
    per record (migration 0006)."""
    with fresh_postgresql() as (url, engine):
        with engine.connect() as connection:
            if not connection.execute(text(LZ4_BUILT)).scalar():
                pytest.skip("this PostgreSQL server was built without lz4")
            assert _compression(connection) == {c: "l" for c in _large_columns()}
        command.downgrade(alembic_config(url), "0005")
        with engine.connect() as connection:
            assert _compression(connection) == {c: "" for c in _large_columns()}


LZ4_BUILT = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def _large_columns() -> list[str]:
    return [f"{table}.{column}" for table, columns in LARGE_VALUES.items() for column in columns]


def _compression(connection: Any) -> dict[str, str]:
    """Each large column's own compression method (``l``: lz4; empty: the server default)."""
    rows = connection.execute(
        text(
            "SELECT c.relname || '.' || a.attname, a.attcompression FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname || '.' || a.attname = ANY(:n)"
        ),
        {"n": _large_columns()},
    )
    return {name: str(method or "") for name, method in rows}


def test_postgresql_leases_by_id_and_record_whatever_its_statistics_say():
    """PostgreSQL plans with statistics, and they lag a burst of new deliveries: analysed
    when nothing was pending, it took ``ix_deliveries_due`` for "pending" and walked every
    pending delivery once per id leased (1.7 s a lease of 50, with 32,000 pending). The
    inbox's claim of a batch of rows has the same shape."""
    from datetime import UTC, datetime

    from publisher.inbox import _CLAIM
    from publisher.leases import _lease_statement

    with fresh_postgresql() as (_, engine):
        with engine.begin() as connection:
            connection.execute(text(_DELIVERIES), {"status": "done", "n": 20_000})
            connection.execute(text("ANALYZE deliveries"))
            connection.execute(text(_DELIVERIES), {"status": "pending", "n": 5_000})
            connection.execute(text(_INBOX), {"status": "done", "n": 20_000})
            connection.execute(text("ANALYZE inbox"))
            connection.execute(text(_INBOX), {"status": "pending", "n": 5_000})
        ids = [f"pending-{n}" for n in range(1, 51)]
        lease = bound_plan(engine, _lease_statement(ids, datetime.now(UTC), 60))
        assert "ix_deliveries_due" not in lease
        assert "pk_deliveries" in lease and "ix_deliveries_record_output" in lease
        claim = bound_plan(engine, _CLAIM, ids=list(range(20_001, 20_051)))
        assert "ix_inbox_status" not in claim and "pk_inbox" in claim


_INBOX = """
INSERT INTO inbox (source, webhook_id, content_type, payload, status, received_at)
SELECT 'bench', :status || '-' || n, 'application/json', '\\x7b7d', :status, now()
FROM generate_series(1, :n) AS n
"""
_DELIVERIES = """
INSERT INTO deliveries (id, record_id, revision, output, event, status, attempts, receives,
                        next_attempt_at, created_at, updated_at, resend)
SELECT :status || '-' || n, 'record-' || :status || '-' || n, 1, 'files', 'publish', :status,
       0, 0, now(), now(), now(), false
FROM generate_series(1, :n) AS n
"""
