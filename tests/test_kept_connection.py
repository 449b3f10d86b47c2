"""The write connection the group committers keep between their batches.

Checking a connection out of the pool and back in costs as much as the webhook's insert, so
the leaders of the inbox's and the API's group commits keep one. These tests say what that
may not change: a writer never waits for the kept connection, a failed transaction leaves
nothing behind, and the pool's checks (a ping after idling, recycling) still happen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from publisher import db
from tests.backends import (  # noqa: F401 - fixtures: backend
    Backend,
    backend_fixture,
    scaleout_backend_fixture,
)


def make_engine(backend: Backend) -> Engine:
    engine = db.make_engine(backend.database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))
    return engine


@pytest.fixture
def engine(backend: Backend) -> Iterator[Engine]:
    engine = make_engine(backend)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def checkouts(engine: Engine) -> list[object]:
    """Every connection the pool hands out, as its driver connection."""
    taken: list[object] = []
    event.listen(engine, "checkout", lambda dbapi, record, proxy: taken.append(dbapi))
    return taken


def note(connection: Any, n: int) -> None:
    connection.execute(text("INSERT INTO notes (id) VALUES (:n)"), {"n": n})


def notes(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM notes ORDER BY id")).scalars())


def test_transactions_one_after_another_take_one_connection_from_the_pool(
    engine: Engine, checkouts: list[object]
) -> None:
    kept = db.KeptConnection(engine)
    for n in range(5):
        with kept.transaction() as connection:
            note(connection, n)
    assert len(checkouts) == 1
    kept.close()
    assert notes(engine) == [0, 1, 2, 3, 4]  # each transaction was committed


def test_a_second_writer_takes_a_connection_of_the_pool_instead_of_waiting(
    engine: Engine, checkouts: list[object]
) -> None:
    kept = db.KeptConnection(engine)
    inside, leave = threading.Event(), threading.Event()

    def first() -> None:
        with kept.transaction() as connection:
            note(connection, 1)
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    if engine.dialect.name == "sqlite":  # one writer at a time: it would wait for the first
        leave.set()
    with kept.transaction() as connection:
        note(connection, 2)
    leave.set()
    thread.join(10)
    assert len(checkouts) == 2 and checkouts[0] is not checkouts[1]
    assert notes(engine) == [1, 2]


def test_a_failed_transaction_is_rolled_back_and_its_connection_given_back(
    engine: Engine, checkouts: list[object]
) -> None:
    kept = db.KeptConnection(engine)
    with pytest.raises(RuntimeError), kept.transaction() as connection:
        note(connection, 1)
        raise RuntimeError("the write failed after its insert")
    with kept.transaction() as connection:
        note(connection, 2)
    assert len(checkouts) == 2  # the second transaction did not reuse the failed one's
    assert notes(engine) == [2]


def test_a_kept_connection_goes_back_to_the_pool_after_keep_for(
    engine: Engine, checkouts: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "KEEP_FOR", 0.05)
    kept = db.KeptConnection(engine)
    with kept.transaction() as connection:
        note(connection, 1)
    time.sleep(0.1)
    with kept.transaction() as connection:
        note(connection, 2)
    assert len(checkouts) == 2  # so the pool's recycling applies to it


@pytest.mark.scaleout
def test_a_kept_connection_killed_while_idle_is_replaced_before_use(
    scaleout_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.2)
    engine = make_engine(scaleout_backend)
    kept = db.KeptConnection(engine)
    with kept.transaction() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    time.sleep(0.3)  # longer than PING_AFTER_IDLE: pinged before it is used again
    with kept.transaction() as connection:  # no error: a new connection took its place
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
        note(connection, 1)
    assert notes(engine) == [1]
    engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_uses_its_parents_kept_connection(engine: Engine) -> None:
    kept = db.KeptConnection(engine)
    with kept.transaction() as connection:
        parents = id(connection.connection.dbapi_connection)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a transaction of its own, on a connection of its own
        try:
            with kept.transaction() as connection:
                note(connection, 7)
                mine = id(connection.connection.dbapi_connection)
            os.write(write, b"own" if mine != parents else b"parent's")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100)
    os.waitpid(pid, 0)
    assert answer == b"own"
    with kept.transaction() as connection:  # and the parent's is still good
        assert id(connection.connection.dbapi_connection) == parents
        note(connection, 8)
    assert notes(engine) == [7, 8]
