"""save_records writes what save_record writes, record by record, in the same order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from publisher.db import make_engine, upgrade, write_connection
from publisher.models import Delivery, Placement, Record, RecordTopic, Revision
from publisher.store import Incoming, Route, Stored, save_record, save_records
from tests.backends import create_database, drop_database, require_scaleout

ROUTES = [Route("files"), Route("feeds", lambda fields: fields.get("quality", 0) >= 20)]
#: columns that differ between two runs by nature (clock, random ids)
VOLATILE = {"created_at", "updated_at", "next_attempt_at", "seq", "occurred_at"}


def _incoming(record_id: str, **fields: Any) -> Incoming:
    return Incoming(id=record_id, fields={"title": record_id, **fields}, body="text")


def _engine(path: Path) -> Engine:
    url = f"sqlite:///{path}"
    upgrade(url)
    return make_engine(url, synchronous="NORMAL")


@pytest.fixture(params=["sqlite", "postgresql"])
def new_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], Engine]]:
    """``new_engine(name)``: an empty, migrated store of this test's backend.

    Both backends: each has its own driver-level insert of new rows (PostgreSQL's sends a
    batch's rows a column at a time).
    """
    made: list[tuple[Engine, str | None]] = []

    def make(name: str) -> Engine:
        if request.param == "sqlite":
            engine = _engine(tmp_path / f"{name}.db")
            made.append((engine, None))
            return engine
        url = create_database()
        upgrade(url)
        engine = make_engine(url)
        made.append((engine, url))
        return engine

    if request.param == "postgresql":
        require_scaleout()
    yield make
    for engine, url in made:
        engine.dispose()
        if url:
            drop_database(url)


def _tables(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    tables = {}
    with engine.connect() as connection:
        for name, order in (
            ("records", "seq"),
            ("revisions", "record_id, revision"),
            ("record_topics", "record_id, topic"),
            ("placements", "record_id, output"),
            ("deliveries", "record_id, output, event, status"),
        ):
            rows = connection.execute(text(f"SELECT * FROM {name} ORDER BY {order}"))  # noqa: S608
            skip = VOLATILE | ({"id"} if name == "deliveries" else set())
            tables[name] = [
                {k: _comparable(k, v) for k, v in row._mapping.items() if k not in skip}
                for row in rows
            ]
    return tables


def _comparable(column: str, value: Any) -> Any:
    return value is not None if column == "enqueued_at" else value


def _summary(stored: list[Stored]) -> list[tuple[Any, ...]]:
    return [
        (s.id, s.revision, s.status, s.event, s.state, [(d.output, d.event) for d in s.deliveries])
        for s in stored
    ]


def test_a_batch_stores_what_one_by_one_stores(new_engine: Callable[[str], Engine]) -> None:
    first = [_incoming("a", published=True, quality=30, topics=["x", "y"]), _incoming("b")]
    batch = [
        _incoming("a", published=True, quality=10, topics=["y"]),  # revised, feeds retracted
        _incoming("b"),  # unchanged draft
        _incoming("c", published=True, topics=["x", "x"]),  # new
        _incoming("d", published=True, quality=40),  # new, then again in the same batch
        _incoming("d", published=True, quality=40, heat=3),
        _incoming("e", published=False),  # a new draft
    ]
    answers = []
    tables = []
    for name, bulk in (("bulk", True), ("single", False)):
        engine = new_engine(name)
        with write_connection(engine) as connection:
            save_records(connection, first, ROUTES)
        with write_connection(engine) as connection:
            if bulk:
                stored = save_records(connection, batch, ROUTES)
            else:
                stored = [save_record(connection, incoming, ROUTES) for incoming in batch]
        answers.append(_summary(stored))
        tables.append(_tables(engine))
    assert answers[0] == answers[1]
    assert [s[2] for s in answers[0]] == [
        "revised",
        "unchanged",
        "created",
        "created",
        "revised",
        "created",
    ]
    assert tables[0] == tables[1]
    assert [r["id"] for r in tables[0]["records"]] == ["a", "b", "c", "d", "e"]
    assert [(r["record_id"], r["revision"]) for r in tables[0]["revisions"]] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("c", 1),
        ("d", 1),
        ("d", 2),
        ("e", 1),
    ]


def test_new_rows_are_stored_as_sqlalchemys_statements_store_them(
    new_engine: Callable[[str], Engine],
) -> None:
    """New records' rows go to the driver as prebuilt SQL: the stored text must be what
    SQLAlchemy's own statements store for the same values (on SQLite an instant is text,
    compared as text by every due/lease query, so its format must not drift)."""
    engine = new_engine("driver")
    incoming = _incoming(
        "a",
        published=True,
        publishedDateTime="2030-01-01T00:00:00Z",  # whole seconds: no microseconds to show
        expiresAt="2099-01-01T00:00:00+02:00",
        topics=["x", "é"],
        heat=3,
    )
    with write_connection(engine) as connection:
        save_records(connection, [incoming, _incoming("b")], ROUTES)
    again = new_engine("core")
    tables = [Record, Revision, RecordTopic, Placement, Delivery]
    with engine.connect() as source, write_connection(again) as target:
        for model in tables:
            rows = [dict(row._mapping) for row in source.execute(select(model.__table__))]
            target.execute(insert(model.__table__), rows)
    for model in tables:
        query = f"SELECT * FROM {model.__tablename__} ORDER BY 1, 2"  # noqa: S608
        with engine.connect() as one, again.connect() as other:
            assert one.exec_driver_sql(query).all() == other.exec_driver_sql(query).all()


@pytest.mark.parametrize("batch", [1, 3])
def test_a_driver_error_on_new_rows_is_raised_as_sqlalchemy_raises_it(
    new_engine: Callable[[str], Engine], batch: int
) -> None:
    """Intake's retries and its one-by-one fallback look for SQLAlchemy's exceptions."""
    engine = new_engine("error")
    refused = Incoming(id="a", fields={"title": "a"}, source=None)  # type: ignore[arg-type]
    others = [_incoming(f"ok-{n}") for n in range(batch - 1)]
    with pytest.raises(IntegrityError), write_connection(engine) as connection:
        save_records(connection, [*others, refused], ROUTES)


@pytest.mark.parametrize("new_engine", ["postgresql"], indirect=True)  # SQLite has no lengths
def test_an_over_long_value_in_a_batch_is_refused_not_cut(
    new_engine: Callable[[str], Engine],
) -> None:
    """A batch's rows must meet the columns' limits as a single insert does."""
    engine = new_engine("long")
    batch = [_incoming("a"), Incoming(id="b", fields={"title": "b"}, source="s" * 101)]
    with pytest.raises(DBAPIError), write_connection(engine) as connection:
        save_records(connection, batch, ROUTES)
