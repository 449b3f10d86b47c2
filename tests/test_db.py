"""The schema: migrations build exactly what the models describe, on every backend."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from publisher import db
from publisher.db import WriterQueue, make_engine, make_sessionmaker, transaction, upgrade
from publisher.models import Base


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
    assert version == "0001"


def test_sqlite_is_durable_by_default(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


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
    assert (tmp_path / "turns.db.write-lock").exists()
    engine.dispose()


def test_the_writer_queue_is_the_processs_own_after_a_fork(tmp_path, monkeypatch):
    queue = WriterQueue(tmp_path / "x.write-lock")
    parent = queue._threads()
    assert queue._threads() is parent
    monkeypatch.setattr(db.os, "getpid", lambda: -1)  # as seen from a child
    assert queue._threads() is not parent


def test_a_writer_that_waits_too_long_gets_an_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "WRITER_WAIT", 0.01)
    queue = WriterQueue(tmp_path / "x.write-lock")
    with queue.hold():
        outcome: list[BaseException] = []

        def second() -> None:
            try:
                with queue.hold():
                    pass
            except TimeoutError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(outcome) == 1
