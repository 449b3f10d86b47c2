"""Records, revisions, the ledger and pending deliveries, written in one transaction.

A ``202`` means ``save_records`` committed: the validated records and one pending delivery
per output that must hear of each. Nothing here talks to the queue or to outputs.

The write path runs prebuilt Core statements on a plain connection (intake's
``write_connection``; retraction passes its session's): a request writes a handful of rows,
and the ORM's unit of work and session synchronisation cost more than the statements
themselves (see docs/performance.md). Reads for the API use the ORM.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from publisher.convergence import CLOCK_SLACK, desired_revision, needed, targets
from publisher.db import driver_cursor, unindexed
from publisher.errors import NotFound
from publisher.models import (
    Delivery,
    Placement,
    Record,
    RecordTopic,
    Revision,
    UTCDateTime,
    utcnow,
)
from publisher.records import content_hashes, parse_instant


@dataclass(frozen=True)
class Route:
    """An output as the store sees it: a name, and whether it wants a record's fields."""

    name: str
    wants: Callable[[Mapping[str, Any]], bool] = lambda fields: True


@dataclass
class Incoming:
    """A validated, opened record ready to store."""

    id: str
    fields: dict[str, Any]
    body: str = ""
    source: str = "api"
    secured_status: str = "absent"
    warnings: list[str] = field(default_factory=list)
    request_id: str | None = None
    #: stands for ``secured`` in the content hashes (see ``intake.secured_digest``)
    secured_digest: str | None = None

    def hashed_fields(self) -> Mapping[str, Any]:
        """The fields as revision detection compares them."""
        if self.secured_digest is None:
            return self.fields
        return {**self.fields, "secured": self.secured_digest}


@dataclass(frozen=True)
class Planned:
    """A delivery written by this transaction: enough to enqueue it after the commit."""

    id: str
    record_id: str
    revision: int
    output: str
    event: str
    next_attempt_at: datetime
    enqueued_at: datetime | None
    request_id: str | None
    created_at: datetime
    occurred_at: datetime | None = None


@dataclass
class RecordRow:
    """What planning needs of a record (a stored ``Record`` has the same attributes)."""

    id: str
    revision: int
    published: bool
    fields: dict[str, Any]
    published_at: datetime | None
    expires_at: datetime | None
    state: str = ""
    meaning_revision: int | None = None


@dataclass
class Stored:
    """What ``save_record`` did: ``status`` is created, revised or unchanged."""

    id: str
    revision: int
    status: str
    event: str | None
    state: str
    deliveries: list[Planned] = field(default_factory=list)


# -- the write path's statements ----------------------------------------------------------
# Built once, at import: SQLAlchemy memoises a statement object's cache key and finds its
# compiled form in the engine's cache, where a statement built per call costs a new clause
# tree, its coercions and its cache key every time (several times the cost of executing it:
# docs/performance.md). Values travel as bound parameters; an UPDATE without
# ``values()`` sets the columns named by its parameters' keys.

_PRIOR = (
    select(
        Record.revision,
        Record.published,
        Record.content_hash,
        Record.meaning_hash,
        Record.meaning_revision,
        Record.state,
    )
    .where(Record.id == bindparam("b_id"))
    .with_for_update()
)
_UPDATE_RECORD = update(Record).where(Record.id == bindparam("b_id"))
_INSERT_REVISION = insert(Revision)
_DELETE_TOPICS = delete(RecordTopic).where(RecordTopic.record_id == bindparam("b_id"))
#: a topic row carries its record's ``seq`` (``ix_record_topics_topic_seq`` pages by it),
#: read here because a batch of new records learns its seqs only as it is inserted
_INSERT_TOPICS = insert(RecordTopic).from_select(
    ["record_id", "topic", "record_seq"],
    select(Record.id, bindparam("b_topic", type_=RecordTopic.topic.type), Record.seq).where(
        Record.id == bindparam("b_record_id")
    ),
)
_PLACEMENTS = select(Placement.output, Placement.state).where(
    Placement.record_id == bindparam("b_id")
)
_UPDATE_PLACEMENTS = update(Placement).where(
    Placement.record_id == bindparam("b_id"),
    Placement.output.in_(bindparam("b_outputs", expanding=True)),
)
_INSERT_PLACEMENTS = insert(Placement)
_SUPERSEDE = (
    update(Delivery)
    .where(
        Delivery.record_id == bindparam("b_id"),
        Delivery.output.in_(bindparam("b_outputs", expanding=True)),
        unindexed(Delivery.status) == "pending",
        (Delivery.lease_until.is_(None)) | (Delivery.lease_until < bindparam("b_now")),
    )
    .values(status="superseded", updated_at=bindparam("b_now"))
    .returning(Delivery.output, Delivery.event)
)
_INSERT_DELIVERIES = insert(Delivery)


_EXISTING = (
    select(Record.id)
    .where(Record.id.in_(bindparam("b_ids", expanding=True)))
    .order_by(Record.id)
    .with_for_update()
)


def save_records(
    connection: Connection,
    incomings: Sequence[Incoming],
    routes: Sequence[Route],
    *,
    volatile: Iterable[str] = ("heat",),
    defer: bool = False,
) -> list[Stored]:
    """:func:`save_record` for each of ``incomings``, in order; the caller commits.

    Why: ``publisher ingest`` stores 500 records per transaction, and one by one that is
    six statements per record (on PostgreSQL, six round trips). A record that does not
    exist yet needs no read of its placements or deliveries, so the rows of every new
    record are written with one ``executemany`` per table. Records that exist, and a
    second occurrence of an id, then take :func:`save_record`'s path, in order: the rows
    are the ones it writes, in the same order.
    """
    if not incomings:
        return []
    volatile = tuple(volatile)
    ids = [incoming.id for incoming in incomings]
    existing = {row.id for row in connection.execute(_EXISTING, {"b_ids": ids})}
    rows = _NewRows(_DriverValues.of(connection.dialect))
    now = utcnow()
    results: list[Stored | None] = []
    later: list[int] = []
    for index, incoming in enumerate(incomings):
        if incoming.id in existing:
            later.append(index)
            results.append(None)
            continue
        existing.add(incoming.id)  # a second occurrence must see the first
        results.append(_plan_new(rows, incoming, routes, volatile, now, defer))
    rows.write(connection)
    for index in later:
        results[index] = save_record(
            connection, incomings[index], routes, volatile=volatile, defer=defer
        )
    return results  # type: ignore[return-value]


def save_record(
    connection: Connection,
    incoming: Incoming,
    routes: Sequence[Route],
    *,
    volatile: Iterable[str] = ("heat",),
    now: datetime | None = None,
    defer: bool = False,
) -> Stored:
    """Store a record revision and plan its deliveries; the caller commits.

    ``defer`` leaves the deliveries for the sweeper to enqueue (bulk ingest: no queue write
    per delivery in the ingesting process).
    """
    now = now or utcnow()
    prior = connection.execute(_PRIOR, {"b_id": incoming.id}).first()
    if prior is None:
        rows = _NewRows(_DriverValues.of(connection.dialect))
        stored = _plan_new(rows, incoming, routes, volatile, now, defer)
        rows.write(connection)
        return stored
    chash, mhash = content_hashes(incoming.hashed_fields(), incoming.body, volatile)
    published = bool(incoming.fields.get("published", True))
    # the same content again is no change, unless the record was retracted through the
    # API/CLI since: then sending it (published) again publishes it again
    if prior.content_hash == chash and prior.published == published:
        return Stored(incoming.id, prior.revision, "unchanged", None, prior.state)
    event = _record_event(bool(prior.published), published, prior.meaning_hash != mhash)
    record = _record_row(incoming, prior.revision + 1, published)
    record.state = _state(record, prior.state, now)
    # a volatile-only edit is a revision, not a new state for the outputs to reach
    record.meaning_revision = (
        record.revision if event is not None else (prior.meaning_revision or prior.revision)
    )
    values = _record_values(record, incoming, chash, mhash, now)
    connection.execute(_UPDATE_RECORD, {**values, "b_id": record.id})
    connection.execute(_INSERT_REVISION, _revision_row(record, incoming, chash, event, now))
    connection.execute(_DELETE_TOPICS, {"b_id": record.id})
    topics = _topic_rows(record.id, incoming.fields.get("topics") or [])
    if topics:
        connection.execute(_INSERT_TOPICS, topics)
    deliveries = plan_deliveries(
        connection, record, event, routes, now, incoming.request_id, defer=defer
    )
    return Stored(record.id, record.revision, "revised", event, record.state, deliveries)


# -- new records' rows, on the driver ------------------------------------------------------
# The inserts of new records run as prebuilt SQL on the DB-API cursor (one ``executemany``
# per table, see ``_executemany``), each value already as the driver takes it: SQLAlchemy's
# per-row, per-column parameter processing cost more than the statements (docs/performance.md,
# session 5). The values are the ones SQLAlchemy's own bind processors make: JSON text from
# ``json.dumps`` (as the ``JSON`` type writes it, once per document though two tables hold
# it), instants through ``UTCDateTime``'s processor for the dialect, once per distinct instant
# of a transaction.

_RECORD_COLUMNS = tuple(column.name for column in Record.__table__.columns if column.name != "seq")
_REVISION_COLUMNS = tuple(column.name for column in Revision.__table__.columns)
_PLACEMENT_COLUMNS = ("record_id", "output", "state", "revision", "updated_at")
_UNSET = {"error", "lease_until"}  # a new delivery has neither
_DELIVERY_COLUMNS = tuple(c.name for c in Delivery.__table__.columns if c.name not in _UNSET)
_DRIVER_STATEMENTS: tuple[tuple[str, Insert, tuple[str, ...]], ...] = (
    ("records", insert(Record).inline(), _RECORD_COLUMNS),
    ("revisions", insert(Revision).inline(), _REVISION_COLUMNS),
    ("topics", _INSERT_TOPICS, ("b_topic", "b_record_id")),
    ("placements", insert(Placement).inline(), _PLACEMENT_COLUMNS),
    ("deliveries", insert(Delivery).inline(), _DELIVERY_COLUMNS),
)


@dataclass(frozen=True)
class _DriverSQL:
    """The new records' inserts compiled for one dialect, positional in the columns' order."""

    sql: dict[str, str]
    instant: Callable[[Any], Any]
    by_column: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def compile(dialect: Dialect) -> _DriverSQL:
        positional = dialect if dialect.positional else type(dialect)(paramstyle="format")
        sql, by_column = {}, {}
        for name, statement, columns in _DRIVER_STATEMENTS:
            compiled = statement.compile(dialect=positional, column_keys=list(columns))
            if tuple(compiled.positiontup or ()) != columns:
                raise RuntimeError(f"{name}: parameters {compiled.positiontup}, not {columns}")
            sql[name] = compiled.string
            if dialect.name == "postgresql" and statement.select is None:
                by_column[name] = _unnest_insert(statement.table, columns, dialect)
        processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        return _DriverSQL(sql, processor or (lambda value: value), by_column)


def _unnest_insert(table: Any, columns: tuple[str, ...], dialect: Dialect) -> str:
    """PostgreSQL: ``INSERT ... SELECT * FROM unnest(%b::type[], ...)``, one array a column.

    Why: psycopg's ``executemany`` sends each row as a message of its own, and its Python
    work per row was most of a batch ingest's time there (docs/performance.md, session 6);
    a statement of many ``VALUES`` rows is parsed anew by psycopg for every count of rows.
    This text is the same for any number of rows.
    """
    quote = dialect.identifier_preparer.quote
    # no length in the casts: an explicit cast to VARCHAR(n) truncates, the insert's own
    # assignment to the column refuses an over-long value as the one-row insert does
    types = (re.sub(r"\(\d+\)", "", table.c[c].type.compile(dialect=dialect)) for c in columns)
    arrays = ", ".join(f"%b::{kind}[]" for kind in types)  # %b: binary, nothing escaped
    names = ", ".join(quote(c) for c in columns)
    # names and types from the table's metadata, never from input: values are parameters
    return f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"  # noqa: S608


_COMPILED: dict[tuple[str, str], _DriverSQL] = {}


@dataclass
class _DriverValues:
    """Turns a transaction's values into what the driver takes, each instant once."""

    compiled: _DriverSQL
    instants: dict[datetime, Any] = field(default_factory=dict)

    @staticmethod
    def of(dialect: Dialect) -> _DriverValues:
        key = (dialect.name, dialect.driver)
        if key not in _COMPILED:
            _COMPILED[key] = _DriverSQL.compile(dialect)
        return _DriverValues(_COMPILED[key])

    def instant(self, value: datetime | None) -> Any:
        if value is None:
            return None
        known = self.instants.get(value)
        if known is None:
            known = self.instants[value] = self.compiled.instant(value)
        return known


@dataclass
class _NewRows:
    """Rows of records that did not exist: one ``executemany`` per table, parents first."""

    values: _DriverValues
    records: list[tuple[Any, ...]] = field(default_factory=list)
    revisions: list[tuple[Any, ...]] = field(default_factory=list)
    topics: list[tuple[Any, ...]] = field(default_factory=list)
    placements: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        record: RecordRow,
        incoming: Incoming,
        hashes: tuple[str, str],
        event: str | None,
        now: datetime,
    ) -> None:
        """The record's row, its first revision's and its topics'."""
        instant = self.values.instant
        fields, stamp = json.dumps(incoming.fields), instant(now)
        self.records.append(
            (
                record.id,
                record.revision,
                incoming.source,
                record.state,
                record.published,
                fields,
                incoming.body,
                hashes[0],
                hashes[1],
                record.meaning_revision,
                incoming.secured_status,
                json.dumps(incoming.warnings),
                instant(record.published_at),
                instant(record.expires_at),
                stamp,
                stamp,
            )
        )
        self.revisions.append(
            (record.id, record.revision, fields, incoming.body, hashes[0], event, stamp)
        )
        topics = dict.fromkeys(incoming.fields.get("topics") or [])
        self.topics += [(topic, record.id) for topic in topics]

    def plan(
        self, record: RecordRow, planned: Sequence[Planned], outputs: Sequence[str], now: datetime
    ) -> None:
        """The ledger entries and the deliveries of the record's first event."""
        instant = self.values.instant
        stamp = instant(now)
        self.placements += [
            (record.id, name, "pending", record.revision, stamp) for name in outputs
        ]
        self.deliveries += [
            (
                p.id,
                p.record_id,
                p.revision,
                p.output,
                p.event,
                "pending",
                0,
                0,
                instant(p.next_attempt_at),
                instant(p.enqueued_at),
                p.request_id,
                instant(p.occurred_at),
                False,
                instant(p.created_at),
                instant(p.created_at),
            )
            for p in planned
        ]

    def write(self, connection: Connection) -> None:
        sql, by_column = self.values.compiled.sql, self.values.compiled.by_column
        for name, rows in (
            ("records", self.records),
            ("revisions", self.revisions),
            ("topics", self.topics),
            ("placements", self.placements),
            ("deliveries", self.deliveries),
        ):
            if len(rows) > 1 and name in by_column:
                columns = [list(values) for values in zip(*rows, strict=True)]
                with driver_cursor(connection, by_column[name], columns) as cursor:
                    cursor.execute(by_column[name], columns)
            elif rows:
                _executemany(connection, sql[name], rows)


def _executemany(connection: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` through ``sql`` on the connection's DB-API cursor, in its transaction.

    Why not ``exec_driver_sql``: its result and execution context cost as much as a
    single-row insert on SQLite, five times per API record.
    """
    with driver_cursor(connection, sql, rows) as cursor:
        cursor.executemany(sql, rows)


def _plan_new(
    rows: _NewRows,
    incoming: Incoming,
    routes: Sequence[Route],
    volatile: Iterable[str],
    now: datetime,
    defer: bool,
) -> Stored:
    """A record's first revision: its rows go to ``rows``; a draft has no deliveries."""
    hashes = content_hashes(incoming.hashed_fields(), incoming.body, volatile)
    published = bool(incoming.fields.get("published", True))
    event = _record_event(False, published, True)
    record = _record_row(incoming, 1, published)
    record.state = _state(record, None, now)
    record.meaning_revision = 1
    rows.add(record, incoming, hashes, event, now)
    planned: list[Planned] = []
    if event is not None:
        planned, touched = _plan(record, event, routes, now, incoming.request_id, {}, defer)
        rows.plan(record, planned, touched, now)
    return Stored(record.id, record.revision, "created", event, record.state, planned)


def _record_row(incoming: Incoming, revision: int, published: bool) -> RecordRow:
    return RecordRow(
        id=incoming.id,
        revision=revision,
        published=published,
        fields=incoming.fields,
        published_at=parse_instant(incoming.fields.get("publishedDateTime")),
        expires_at=parse_instant(incoming.fields.get("expiresAt")),
    )


def _record_values(
    record: RecordRow, incoming: Incoming, chash: str, mhash: str, now: datetime
) -> dict[str, Any]:
    """The record row's columns, but ``id`` and ``created_at`` (set once, on insert)."""
    return {
        "revision": record.revision,
        "source": incoming.source,
        "state": record.state,
        "published": record.published,
        "fields": incoming.fields,
        "body": incoming.body,
        "content_hash": chash,
        "meaning_hash": mhash,
        "meaning_revision": record.meaning_revision,
        "secured_status": incoming.secured_status,
        "warnings": incoming.warnings,
        "published_at": record.published_at,
        "expires_at": record.expires_at,
        "updated_at": now,
    }


def _revision_row(
    record: RecordRow, incoming: Incoming, chash: str, event: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "record_id": record.id,
        "revision": record.revision,
        "fields": incoming.fields,
        "body": incoming.body,
        "content_hash": chash,
        "event": event,
        "created_at": now,
    }


def _topic_rows(record_id: str, topics: Iterable[str]) -> list[dict[str, Any]]:
    return [{"b_record_id": record_id, "b_topic": topic} for topic in dict.fromkeys(topics)]


def _record_event(was_published: bool, published: bool, meaningful: bool) -> str | None:
    """The lifecycle event a new revision triggers (spec section 2)."""
    if published and not was_published:
        return "published"
    if published and was_published:
        return "updated" if meaningful else None
    if was_published and not published:
        return "retracted"
    return None


def _state(record: RecordRow, previous: str | None, now: datetime) -> str:
    if not record.published:
        return "retracted" if previous in {"published", "embargoed"} else "draft"
    if record.expires_at and record.expires_at <= now:
        return "expired"
    if record.published_at and record.published_at > now:
        return "embargoed"
    return "published"


def plan_deliveries(
    connection: Connection,
    record: Record | RecordRow,
    event: str | None,
    routes: Sequence[Route],
    now: datetime,
    request_id: str | None = None,
    *,
    new: bool = False,
    defer: bool = False,
) -> list[Planned]:
    """One delivery per output that must hear of ``event``; older pending ones are superseded.

    An output that had the record and no longer wants it (its routing rule stopped matching,
    or the record was retracted) gets ``retracted``; one that wants it and never had it gets
    ``published``, even when the record-level event is ``updated``.
    """
    if event is None:
        return []
    known = not new  # a record created in this transaction has no placements nor deliveries
    placements = _placements(connection, record.id) if known else {}
    planned, touched = _plan(record, event, routes, now, request_id, placements, defer)
    if known and touched:
        dropped = _supersede(connection, record.id, touched, now)
        # an output whose first publish was superseded before a worker took it never had
        # the record: it must hear "published", not "updated"
        planned = [
            replace(p, event="published")
            if p.event == "updated" and (p.output, "published") in dropped
            else p
            for p in planned
        ]
    _place(connection, placements, record, touched, now)
    _insert_deliveries(connection, planned)
    return planned


def _plan(
    record: Record | RecordRow,
    event: str,
    routes: Sequence[Route],
    now: datetime,
    request_id: str | None,
    placements: Mapping[str, str],
    defer: bool,
) -> tuple[list[Planned], list[str]]:
    """The deliveries ``event`` needs, and the outputs whose ledger entry they change."""
    publishable = record.published and not (record.expires_at and record.expires_at <= now)
    due = max(now, record.published_at) if record.published_at else now
    planned: list[Planned] = []
    touched: list[str] = []
    for route in routes:
        had = placements.get(route.name) in {"pending", "live", "failed"}
        wants = publishable and route.wants(record.fields)
        kind = _output_event(wants, had)
        if kind is None:
            continue
        touched.append(route.name)
        when = due if wants else now
        planned.append(_delivery(record, route.name, kind, when, request_id, now, defer=defer))
        if wants and record.expires_at:
            expiry = record.expires_at
            planned.append(_delivery(record, route.name, "retracted", expiry, request_id, now))
    return planned, touched


def _output_event(wants: bool, had: bool) -> str | None:
    if wants:
        return "updated" if had else "published"
    return "retracted" if had else None


def _delivery(
    record: Record | RecordRow,
    output: str,
    kind: str,
    due: datetime,
    request_id: str | None,
    now: datetime,
    *,
    defer: bool = False,
) -> Planned:
    """A pending delivery; one due now counts as enqueued unless the sweeper is to do it.

    ``now`` is the planning transaction's: every row a transaction writes shares its instant.
    """
    return Planned(
        id=f"dlv_{uuid.uuid4().hex}",
        record_id=record.id,
        revision=record.revision,
        output=output,
        event=kind,
        next_attempt_at=due,
        enqueued_at=now if due <= now and not defer else None,
        request_id=request_id,
        created_at=now,
        occurred_at=max(due, now),
    )


def _insert_deliveries(connection: Connection, planned: Sequence[Planned]) -> None:
    if planned:
        connection.execute(_INSERT_DELIVERIES, _delivery_rows(planned))


def _delivery_rows(planned: Sequence[Planned]) -> list[dict[str, Any]]:
    # vars(), not asdict(): a Planned holds plain values, and asdict deep-copies each one
    return [
        {**vars(p), "status": "pending", "attempts": 0, "receives": 0, "updated_at": p.created_at}
        for p in planned
    ]


def _placements(connection: Connection, record_id: str) -> dict[str, str]:
    rows = connection.execute(_PLACEMENTS, {"b_id": record_id})
    return {output: state for output, state in rows}


def _place(
    connection: Connection,
    known: Mapping[str, str],
    record: Record | RecordRow,
    outputs: Sequence[str],
    now: datetime,
    state: str = "pending",
) -> None:
    """Set the ledger of ``outputs`` for this record: one UPDATE, and inserts for new ones."""
    existing = [name for name in outputs if name in known]
    if existing:
        connection.execute(
            _UPDATE_PLACEMENTS,
            {
                "b_id": record.id,
                "b_outputs": existing,
                "state": state,
                "revision": record.revision,
                "updated_at": now,
            },
        )
    fresh = _placement_rows(record, [name for name in outputs if name not in known], now, state)
    if fresh:
        connection.execute(_INSERT_PLACEMENTS, fresh)


def _placement_rows(
    record: Record | RecordRow, outputs: Sequence[str], now: datetime, state: str = "pending"
) -> list[dict[str, Any]]:
    return [
        {
            "record_id": record.id,
            "output": name,
            "state": state,
            "revision": record.revision,
            "updated_at": now,
        }
        for name in outputs
    ]


def _supersede(
    connection: Connection, record_id: str, outputs: Sequence[str], now: datetime
) -> set[tuple[str, str]]:
    """Pending deliveries not yet taken by a worker are replaced by the newest one.

    Returns the (output, event) pairs it replaced: those never reached their output.
    """
    result = connection.execute(
        _SUPERSEDE, {"b_id": record_id, "b_outputs": list(outputs), "b_now": now}
    )
    return {(output, event) for output, event in result}


def retract_record(
    session: Session, record_id: str, routes: Sequence[Route], request_id: str | None = None
) -> Stored:
    """Retract a record everywhere it is (``DELETE`` and ``publisher retract``)."""
    now = utcnow()
    record = session.scalars(
        select(Record).where(Record.id == record_id).with_for_update()
    ).one_or_none()
    if record is None:
        raise NotFound(f"no record with id {record_id!r}")
    if not record.published and record.state in {"retracted", "draft"}:
        return Stored(record.id, record.revision, "unchanged", None, record.state)
    record.published = False
    record.state = "retracted"
    record.updated_at = now
    deliveries = plan_deliveries(session.connection(), record, "retracted", routes, now, request_id)
    return Stored(record.id, record.revision, "retracted", "retracted", record.state, deliveries)


_OPEN = select(
    Delivery.id,
    Delivery.event,
    Delivery.revision,
    Delivery.status,
    Delivery.next_attempt_at,
    Delivery.lease_until,
    Delivery.attempts,
).where(
    Delivery.record_id == bindparam("b_id"),
    Delivery.output == bindparam("b_output"),
    unindexed(Delivery.status).in_(("pending", "dead")),
)
_HAS_PLACEMENT = select(Placement.state).where(
    Placement.record_id == bindparam("b_id"), Placement.output == bindparam("b_output")
)


def converge_pair(
    connection: Connection,
    record: Record | RecordRow,
    route: Route,
    held: int | None,
    now: datetime,
) -> Planned | None:
    """Make the pair's open deliveries the one transition it needs now; the caller commits.

    ``held`` is what the output holds. Due open deliveries that no longer target the
    desired state are superseded (one a worker holds right now is left to finish); one that
    does is kept (a dead one comes back to life with its id and history); if none does, a
    new one is planned. Deliveries scheduled for later (an embargo's end, an expiry) are left
    for their time. Returns the delivery to enqueue, if any.
    """
    want = desired_revision(record, route.wants, now)
    kind = needed(held, want)
    rows = connection.execute(_OPEN, {"b_id": record.id, "b_output": route.name}).all()
    due = [row for row in rows if row.next_attempt_at <= now + CLOCK_SLACK]
    keep = None
    if kind is not None:
        keep = next((row for row in due if targets(row, want)), None)
    running = {row.id for row in due if row.lease_until is not None and row.lease_until > now}
    retire = [row.id for row in due if row is not keep and row.id not in running]
    if retire:
        connection.execute(
            update(Delivery)
            .where(Delivery.id.in_(retire))
            .values(status="superseded", lease_until=None, updated_at=now)
        )
    if kind is None:
        return None
    if keep is not None:
        return _revive(connection, record, route.name, keep, now)
    planned = _delivery(record, route.name, kind, now, None, now)
    state = connection.execute(_HAS_PLACEMENT, {"b_id": record.id, "b_output": route.name}).scalar()
    known = {route.name: state} if state is not None else {}
    _place(connection, known, record, [route.name], now)
    _insert_deliveries(connection, [planned])
    return planned


def _revive(
    connection: Connection, record: Record | RecordRow, output: str, row: Any, now: datetime
) -> Planned:
    if row.status == "dead":
        connection.execute(
            update(Delivery)
            .where(Delivery.id == row.id)
            .values(status="pending", receives=row.attempts, next_attempt_at=now, updated_at=now)
        )
    return Planned(
        id=row.id,
        record_id=record.id,
        revision=row.revision,
        output=output,
        event=row.event,
        next_attempt_at=min(row.next_attempt_at, now),
        enqueued_at=now,
        request_id=None,
        created_at=now,
    )
