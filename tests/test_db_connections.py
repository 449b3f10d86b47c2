"""PostgreSQL connections: a busy connection is trusted, an idle one is checked at checkout.

A ping is a round trip, and pinging at every checkout added one to every transaction (a third
of a webhook's). A database restart or an idle timeout shows on a connection that sat in the
pool, so that is the one pinged; a dead one is replaced before anyone uses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, text
from sqlalchemy.exc import DBAPIError

from publisher import db
from tests.backends import create_database, drop_database, require_scaleout


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    require_scaleout()
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.2)
    url = create_database()
    engine = db.make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(url)


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_killed_while_idle_is_replaced_before_use(engine: Engine) -> None:
    with engine.connect() as other:  # a second connection of the pool kills the first
        killed = backend_pid(engine)  # checked out and back while ``other`` is held
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    time.sleep(0.3)  # longer than PING_AFTER_IDLE: the pool pings it at checkout

    pids = {backend_pid(engine) for _ in range(3)}  # no error: a new connection took its place
    assert killed not in pids


def test_a_connection_used_a_moment_ago_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    backend_pid(engine)
    backend_pid(engine)
    backend_pid(engine)
    assert pings == []
    time.sleep(0.3)
    backend_pid(engine)
    assert len(pings) == 1


def test_a_driver_statement_on_a_dead_connection_says_the_connection_is_gone(
    engine: Engine,
) -> None:
    """Intake retries a write whose connection was invalidated: the driver path must say so."""
    table = Table("notes", MetaData(), Column("id", Integer, primary_key=True))
    table.metadata.create_all(engine)
    insert = db.DriverInsert.build(table, ["id"], engine.dialect)
    with engine.connect() as killer, engine.connect() as victim:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.1)
        with pytest.raises(DBAPIError) as raised:
            insert.run(victim, [{"id": 1}])
    assert raised.value.connection_invalidated
    assert pid not in {backend_pid(engine) for _ in range(2)}
