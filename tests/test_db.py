"""The schema: migrations build exactly what the models describe, on every backend."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text

from publisher import db
from publisher.db import (
    make_engine,
    make_sessionmaker,
    transaction,
    upgrade,
    write_connection,
    writer_lock,
)
from publisher.models import Base
from publisher.queue import make_huey


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
    assert version == "0003"


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
    assert "+deliveries" not in str(wrapped.compile(dialect=postgresql.dialect()))


def test_sqlite_queue_commits_without_fsync_but_consistently(tmp_path):
    """The queue only points at durable rows (the sweeper re-sends a lost message), so it
    runs WAL with synchronous=NORMAL: consistent after a power cut, no fsync per enqueue."""
    huey = make_huey(str(tmp_path / "queue.db"))
    connection = huey.storage.conn
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    huey.storage.enqueue(b"message")
    assert huey.storage.dequeue() == b"message"


def test_sqlite_writers_queue_on_the_writer_lock(tmp_path):
    """A second writer waits on the lock file until the first has committed (it does not
    sleep in SQLite's busy handler), and sees what the first wrote."""
    engine = _engine_with_a_table(tmp_path / "lock.db")
    events: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with write_connection(engine) as connection:
            inside.set()
            time.sleep(0.2)
            connection.execute(text("INSERT INTO t (name) VALUES ('a')"))
            events.append("first commits")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with write_connection(engine) as connection:
        events.append("second begins")
        names = connection.execute(text("SELECT name FROM t")).scalars().all()
    thread.join()
    engine.dispose()
    assert events == ["first commits", "second begins"]
    assert names == ["a"]
    assert (tmp_path / "lock.db-writer.lock").exists()


def test_a_nested_writer_does_not_wait_for_itself(tmp_path):
    engine = _engine_with_a_table(tmp_path / "nested.db")
    with writer_lock(engine), writer_lock(engine), write_connection(engine) as connection:
        connection.execute(text("INSERT INTO t (name) VALUES ('b')"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 1
    engine.dispose()


def _engine_with_a_table(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    with write_connection(engine) as connection:
        connection.execute(text("CREATE TABLE t (name TEXT)"))
    return engine


def test_sqlite_writers_of_many_threads_take_turns_and_all_commit(tmp_path):
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (n INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (0)"))
    inside, most = [0], [0]
    guard = threading.Lock()

    def bump() -> None:
        with transaction(sessions) as session:
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            value = session.execute(text("SELECT n FROM counter")).scalar_one()
            session.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})
            with guard:
                inside[0] -= 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: bump(), range(200)))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM counter")).scalar_one() == 200
    assert most[0] == 1  # one writer at a time, by the queue, not by SQLite's busy handler
    assert (tmp_path / "turns.db-writer.lock").exists()
    engine.dispose()


def test_the_writer_lock_of_threads_is_the_processs_own_after_a_fork(tmp_path, monkeypatch):
    path = str(tmp_path / "x.db-writer.lock")
    parent = db._threads_lock(path)
    assert db._threads_lock(path) is parent
    monkeypatch.setattr(db.os, "getpid", lambda: -1)  # as seen from a child
    assert db._threads_lock(path) is not parent


def test_processes_starting_at_once_on_a_fresh_sqlite_file_all_migrate(tmp_path):
    """gunicorn's workers each run the upgrade on start; they must not race on the DDL."""
    import subprocess
    import sys

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
