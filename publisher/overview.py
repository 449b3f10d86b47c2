"""What the operator's page reads: a page of records with their per-output standing, the
counts of its "is anything wrong?" strip, and a record's revisions.

Every query here is shaped so that its cost follows what is shown or what is wrong, never
the size of the store: pages are keyset pages on ``records.seq`` (the primary key), the
delivery filters and the counts go through ``ix_deliveries_due`` (status first), and the
per-record summaries are read for the page's ids only. A search is an exact look-up by id
first; words of the title are then looked for with a ``LIKE`` over the JSON title, in a
window of at most :data:`SEARCH_WINDOW` records per call (``docs/decisions/ops-page-search.md``
says why, ``docs/ops-page.md`` what it costs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, select
from sqlalchemy.orm import Session

from publisher.errors import InvalidRecord
from publisher.models import (
    Delivery,
    OutputState,
    Placement,
    QuarantineItem,
    Record,
    Revision,
)
from publisher.queries import WAITING, by_seq, decode_cursor, encode_cursor
from publisher.records import record_id as derived_id

#: counts stop here: past it the page says "N+" (the work stays bounded in a backlog)
COUNT_CAP = 10_000
#: which deliveries a record must have to match the ``delivery`` filter
DELIVERY_FILTERS = ("dead", "pending", "due", "scheduled")
ORDERS = ("newest", "oldest")
SEARCH_WORDS = 8
#: a search by title words reads at most this many records per call (then pages on)
SEARCH_WINDOW = 25_000


@dataclass(frozen=True)
class RecordFilter:
    """The page's filters; every one is optional."""

    q: str | None = None
    state: str | None = None
    delivery: str | None = None
    output: str | None = None
    topic: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    order: str = "newest"


def record_page(
    session: Session, wanted: RecordFilter, now: datetime, cursor: str | None, limit: int
) -> tuple[list[Record], str | None]:
    """One keyset page of records in arrival order; the cursor of the next page or None.

    A search is first an exact look-up by id (or by the id a URL derives), through the
    unique index; only when that finds nothing are the words looked for in titles.
    """
    text = (wanted.q or "").strip()
    if not text:
        return _page(session, wanted, now, cursor, limit)
    exact = _page(session, wanted, now, None, limit, Record.id.in_(exact_ids(text)))
    if exact[0]:
        return exact
    return _title_page(session, wanted, now, cursor, limit, text)


def _title_page(
    session: Session, wanted: RecordFilter, now: datetime, cursor: str | None, limit: int, text: str
) -> tuple[list[Record], str | None]:
    """Title words, looked for in at most :data:`SEARCH_WINDOW` records per call.

    The window is a range of ``seq`` (the primary key), so a call never reads more rows
    than that however large the store is. A page that is not full but has a cursor means
    the window ended: the next page goes on with the records beyond it.
    """
    newest = wanted.order != "oldest"
    top = int(session.scalar(select(func.max(Record.seq))) or 0)
    start = decode_cursor(cursor) if cursor else (top + 1 if newest else 0)
    if newest:
        low = max(start - SEARCH_WINDOW, 0)
        window = Record.seq.between(low, start - 1)
    else:
        low = start + SEARCH_WINDOW
        window = Record.seq.between(start + 1, low)
    rows, following = _page(
        session, wanted, now, cursor, limit, and_(window, title_condition(text))
    )
    if following is not None:
        return rows, following
    beyond = low > 1 if newest else low < top
    return rows, encode_cursor(low) if beyond else None


def _page(
    session: Session,
    wanted: RecordFilter,
    now: datetime,
    cursor: str | None,
    limit: int,
    search: ColumnElement[bool] | None = None,
) -> tuple[list[Record], str | None]:
    newest = wanted.order != "oldest"
    query = select(Record)
    for condition in _conditions(wanted, now):
        query = query.where(condition)
    if search is not None:
        query = query.where(search)
    after = decode_cursor(cursor) if cursor else None
    query = by_seq(query, wanted.topic, newest=newest, after=after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].seq) if more and rows else None


def _conditions(wanted: RecordFilter, now: datetime) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.state:
        conditions.append(Record.state == wanted.state)
    if wanted.source:
        conditions.append(Record.source == wanted.source)
    if wanted.since:
        conditions.append(Record.updated_at >= wanted.since)
    if wanted.until:
        conditions.append(Record.updated_at < wanted.until)
    if wanted.delivery or wanted.output:
        conditions.append(Record.id.in_(_with_deliveries(wanted.delivery, wanted.output, now)))
    return conditions


def _with_deliveries(kind: str | None, output: str | None, now: datetime) -> Select[Any]:
    """Ids of records with a delivery of that kind (through ``ix_deliveries_due``)."""
    query = select(Delivery.record_id)
    if kind == "dead":
        query = query.where(Delivery.status == "dead")
    elif kind in ("pending", "due", "scheduled"):
        query = query.where(Delivery.status == "pending")
        if kind == "due":
            query = query.where(Delivery.next_attempt_at <= now)
        elif kind == "scheduled":
            query = query.where(Delivery.next_attempt_at > now)
    else:
        query = query.where(Delivery.status.in_(("pending", "done", "dead")))
    if output:
        query = query.where(Delivery.output == output)
    return query


def exact_ids(term: str) -> list[str]:
    """The ids a search term names: itself, and the id derived from it if it is a URL."""
    ids = [term]
    if term.startswith(("http://", "https://")):
        with suppress(InvalidRecord, ValueError):  # a URL with a bad port, say
            ids.append(derived_id({"originalUrl": term}))
    return ids


def title_condition(text: str) -> ColumnElement[bool]:
    """Every word (case aside) somewhere in the title: a scan, newest first, until the page
    is full (``docs/ops-page.md`` has what it costs at size)."""
    title = func.lower(Record.fields["title"].as_string())
    words = text.lower().split()[:SEARCH_WORDS]
    conditions = [title.like(f"%{_escape_like(word)}%", escape="\\") for word in words]
    return and_(*conditions)


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def output_summaries(
    session: Session,
    records: Sequence[Record],
    redeliverable: Callable[[Delivery, Record, int | None], bool],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per record and output: the ledger's state and the newest delivery, in two queries.

    ``redeliverable(delivery, record, held revision)`` says whether Redeliver still means
    something (the dispatcher's rule: see ``publisher.convergence.can_redeliver``).
    """
    ids = [r.id for r in records]
    by_id = {r.id: r for r in records}
    held: dict[tuple[str, str], int | None] = {}
    summary: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in ids}
    if not ids:
        return summary
    placements = select(Placement).where(Placement.record_id.in_(ids))
    for placement in session.scalars(placements):
        summary[placement.record_id][placement.output] = {"placement": placement.state}
        held[(placement.record_id, placement.output)] = placement.held_revision
    deliveries = (
        select(Delivery)
        .where(Delivery.record_id.in_(ids), Delivery.status != "superseded")
        .order_by(Delivery.created_at, Delivery.id)
    )
    for delivery in session.scalars(deliveries):  # oldest first: the newest one stays
        cell = summary[delivery.record_id].setdefault(delivery.output, {"placement": None})
        pair = (delivery.record_id, delivery.output)
        may = redeliverable(delivery, by_id[delivery.record_id], held.get(pair))
        cell.update(delivery_cell(delivery, may))
    return summary


def delivery_cell(delivery: Delivery, can_redeliver: bool) -> dict[str, Any]:
    """The newest delivery of an output, as the page's status cell needs it."""
    return {
        "delivery_id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "error": delivery.error,
        "due_at": delivery.next_attempt_at if delivery.status == "pending" else None,
        # a pending one is looked at anyway: Redeliver is for finished ones still meaningful
        "can_redeliver": can_redeliver and delivery.status in ("dead", "done"),
    }


def delivery_counts(session: Session, now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """Failing, due and scheduled deliveries per output, read through ``ix_deliveries_due``.

    Only ``pending`` and ``dead`` rows are read, and at most :data:`COUNT_CAP` + 1 of them:
    the second value says the cap was reached (the numbers are then lower bounds).
    """
    per_output: dict[str, dict[str, Any]] = {}
    total = 0
    for output, status, is_later, count, oldest in session.execute(counts_statement(now)):
        total += count
        row = per_output.setdefault(output, _empty_counts(output))
        if status == "dead":
            row["dead"] += count
        elif is_later:
            row["scheduled"] += count
            row["next_scheduled_at"] = _earliest(row["next_scheduled_at"], oldest)
        else:
            row["due"] += count
            row["oldest_due_at"] = _earliest(row["oldest_due_at"], oldest)
    return [per_output[name] for name in sorted(per_output)], total > COUNT_CAP


def counts_statement(now: datetime) -> Select[Any]:
    """Pending and dead rows only, at most :data:`COUNT_CAP` + 1, grouped per output."""
    wanted = (
        select(
            Delivery.output.label("output"),
            Delivery.status.label("status"),
            Delivery.next_attempt_at.label("due"),
        )
        .where(WAITING)
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    later = (wanted.c.due > now).label("later")
    return select(
        wanted.c.output, wanted.c.status, later, func.count(), func.min(wanted.c.due)
    ).group_by(wanted.c.output, wanted.c.status, later)


def _empty_counts(output: str) -> dict[str, Any]:
    return {
        "output": output,
        "dead": 0,
        "due": 0,
        "scheduled": 0,
        "oldest_due_at": None,
        "next_scheduled_at": None,
    }


def _earliest(current: datetime | None, other: Any) -> datetime | None:
    value = _as_datetime(other)
    if current is None or (value is not None and value < current):
        return value
    return current


def _as_datetime(value: Any) -> datetime | None:
    """``min()`` over a subquery comes back raw on SQLite (a string): read it as UTC."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def quarantine_count(session: Session) -> tuple[int, bool]:
    """Items not yet replayed, at most :data:`COUNT_CAP` read; True when capped."""
    held = (
        select(QuarantineItem.id)
        .where(QuarantineItem.replayed_at.is_(None))
        .limit(COUNT_CAP + 1)
        .subquery()
    )
    count = int(session.scalar(select(func.count()).select_from(held)) or 0)
    return min(count, COUNT_CAP), count > COUNT_CAP


def disabled_outputs(session: Session, known: Iterable[str]) -> list[dict[str, Any]]:
    """Outputs turned off by an operator or by a downstream answer (``410 Gone``)."""
    names = set(known)
    rows = session.scalars(select(OutputState).where(OutputState.enabled == false()))
    return [
        {"name": row.name, "reason": row.reason, "since": row.updated_at}
        for row in sorted(rows, key=lambda r: r.name)
        if row.name in names
    ]


def revisions_of(session: Session, record_id: str) -> list[Revision]:
    """Every kept revision of a record, newest first."""
    query = (
        select(Revision)
        .where(Revision.record_id == record_id)
        .order_by(Revision.revision.desc())
        .limit(200)
    )
    return list(session.scalars(query))
