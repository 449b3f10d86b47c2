"""What the operator's page reads: a page of records with their per-output standing, the
counts of its "is anything wrong?" strip, and a record's revisions.

Every query here is shaped so that its cost follows what is shown or what is wrong, never
the size of the store: pages are keyset pages on ``records.seq`` (the primary key), the
delivery filters and the counts go through ``ix_deliveries_due`` (status first), and the
per-record summaries are read for the page's ids only. The one exception is the search by a
word of the title, a ``LIKE`` over the JSON title that reads records newest first until the
page is full; ``docs/ops-page.md`` says why that is acceptable and what it costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, false, func, or_, select
from sqlalchemy.orm import Session

from publisher.errors import InvalidRecord
from publisher.models import (
    Delivery,
    OutputState,
    Placement,
    QuarantineItem,
    Record,
    RecordTopic,
    Revision,
)
from publisher.queries import decode_cursor, encode_cursor
from publisher.records import record_id as derived_id

#: counts stop here: past it the page says "N+" (the work stays bounded in a backlog)
COUNT_CAP = 10_000
#: which deliveries a record must have to match the ``delivery`` filter
DELIVERY_FILTERS = ("dead", "pending", "due", "scheduled")
ORDERS = ("newest", "oldest")
SEARCH_WORDS = 8


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
    """One keyset page of records in arrival order; the cursor of the next page or None."""
    newest = wanted.order != "oldest"
    query = select(Record).order_by(Record.seq.desc() if newest else Record.seq.asc())
    for condition in _conditions(wanted, now):
        query = query.where(condition)
    if wanted.topic:
        query = query.join(RecordTopic, RecordTopic.record_id == Record.id).where(
            RecordTopic.topic == wanted.topic
        )
    if cursor:
        seq = decode_cursor(cursor)
        query = query.where(Record.seq < seq if newest else Record.seq > seq)
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
    if wanted.q and wanted.q.strip():
        conditions.append(search_condition(wanted.q))
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


def search_condition(text: str) -> ColumnElement[bool]:
    """An id or URL matches exactly; otherwise every word must be in the title."""
    term = text.strip()
    exact: list[ColumnElement[bool]] = [Record.id == term]
    if term.startswith(("http://", "https://")):
        with suppress(InvalidRecord, ValueError):  # a URL with a bad port, say
            exact.append(Record.id == derived_id({"originalUrl": term}))
        exact.append(Record.fields["originalUrl"].as_string() == term)
        exact.append(Record.fields["webUrl"].as_string() == term)
    words = term.lower().split()[:SEARCH_WORDS]
    title = func.lower(Record.fields["title"].as_string())
    in_title = [title.like(f"%{_escape_like(word)}%", escape="\\") for word in words]
    if not in_title:
        return or_(*exact)
    everything: ColumnElement[bool] = in_title[0]
    for condition in in_title[1:]:
        everything = everything & condition
    return or_(*exact, everything)


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def output_summaries(
    session: Session, records: Sequence[Record]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per record and output: the ledger's state and the newest delivery, in two queries."""
    ids = [r.id for r in records]
    revisions = {r.id: r.revision for r in records}
    summary: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in ids}
    if not ids:
        return summary
    placements = select(Placement).where(Placement.record_id.in_(ids))
    for placement in session.scalars(placements):
        summary[placement.record_id][placement.output] = {"placement": placement.state}
    deliveries = (
        select(Delivery)
        .where(Delivery.record_id.in_(ids), Delivery.status != "superseded")
        .order_by(Delivery.created_at, Delivery.id)
    )
    for delivery in session.scalars(deliveries):  # oldest first: the newest one stays
        cell = summary[delivery.record_id].setdefault(delivery.output, {"placement": None})
        cell.update(delivery_cell(delivery, revisions[delivery.record_id]))
    return summary


def delivery_cell(delivery: Delivery, record_revision: int) -> dict[str, Any]:
    """The newest delivery of an output, as the page's status cell needs it."""
    return {
        "delivery_id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "error": delivery.error,
        "due_at": delivery.next_attempt_at if delivery.status == "pending" else None,
        "can_redeliver": can_redeliver(delivery, record_revision),
    }


def can_redeliver(delivery: Delivery, record_revision: int) -> bool:
    """Only a finished delivery of the record's current revision is worth sending again."""
    return delivery.status in ("dead", "done") and delivery.revision == record_revision


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
        .where(Delivery.status.in_(("pending", "dead")))
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
