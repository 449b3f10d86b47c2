"""Reading records and deliveries for the API and the CLI: pages, filters, cursors.

The write side (revisions, the ledger, deliveries in one transaction) is ``store``.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, literal, or_, select, tuple_
from sqlalchemy.orm import Session

from publisher.errors import MalformedInput, NotFound
from publisher.models import Delivery, Placement, Record, RecordTopic

#: the deliveries still waiting to be done: exactly the rows ``ix_deliveries_due`` holds (a
#: partial index). SQLite uses it only for a WHERE that implies its predicate term by term,
#: ``status = :s`` or these same two terms: an ``IN (:a, :b)`` would scan once it has statistics
WAITING: ColumnElement[bool] = or_(Delivery.status == "pending", Delivery.status == "dead")


def get_record(session: Session, record_id: str) -> Record:
    record = session.scalars(select(Record).where(Record.id == record_id)).one_or_none()
    if record is None:
        raise NotFound(f"no record with id {record_id!r}")
    return record


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        seq = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput("invalid cursor", errors={"cursor": ["invalid cursor"]}) from exc
    if not 0 < seq < 2**62:  # beyond what any database integer holds
        raise MalformedInput("invalid cursor", errors={"cursor": ["invalid cursor"]})
    return seq


def list_records(
    session: Session,
    *,
    published: bool | None = None,
    topic: str | None = None,
    since: datetime | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Record], str | None]:
    """Newest first; returns a page and the cursor of the next one (or None).

    Each filter has an index that yields its records newest first (``ix_records_state_seq``,
    ``ix_records_published_seq``, ``ix_record_topics_topic_seq``), so a page reads a page
    whatever the store holds (``tests/test_db.py`` checks the plans).
    """
    query = select(Record)
    if published is not None:
        query = query.where(Record.published == published)  # ``IS`` is not indexable on PG
    if state:
        query = query.where(Record.state == state)
    if since:
        query = query.where(Record.updated_at >= since)
    after = decode_cursor(cursor) if cursor else None
    query = by_seq(query, topic, newest=True, after=after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].seq) if more and rows else None


def by_seq(
    query: Select[Any], topic: str | None, *, newest: bool, after: int | None
) -> Select[Any]:
    """``query`` in arrival order from ``after`` on; through a topic's rows when one is given.

    With a topic the order and the keyset are on ``record_topics.record_seq``: the planner
    then walks ``ix_record_topics_topic_seq`` and fetches each record by its primary key,
    instead of sorting every record of the topic.
    """
    seq = Record.seq
    if topic:
        seq = RecordTopic.record_seq
        query = query.join(RecordTopic, RecordTopic.record_seq == Record.seq).where(
            RecordTopic.topic == topic
        )
    if after is not None:
        query = query.where(seq < after if newest else seq > after)
    return query.order_by(seq.desc() if newest else seq.asc())


def list_deliveries(
    session: Session,
    *,
    status: str | None = None,
    output: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 200,
) -> tuple[list[Delivery], bool]:
    """Newest change first, from ``after`` (the last one's ``updated_at, id``); True if more.

    Read through ``ix_deliveries_status_updated`` (a status) or ``ix_deliveries_updated``;
    the keyset is a row comparison, which both backends turn into an index range.
    """
    query = select(Delivery).order_by(Delivery.updated_at.desc(), Delivery.id.desc())
    if status:
        query = query.where(Delivery.status == status)
    if output:
        query = query.where(Delivery.output == output)
    if after is not None:
        when, delivery_id = after  # typed as the columns: UTCDateTime stores naive UTC
        last = tuple_(
            literal(when, Delivery.updated_at.type), literal(delivery_id, Delivery.id.type)
        )
        query = query.where(tuple_(Delivery.updated_at, Delivery.id) < last)
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def placements_of(session: Session, record_id: str) -> list[Placement]:
    return list(session.scalars(select(Placement).where(Placement.record_id == record_id)))


def deliveries_of(session: Session, record_id: str) -> list[Delivery]:
    query = (
        select(Delivery)
        .where(Delivery.record_id == record_id, Delivery.status != "superseded")
        .order_by(Delivery.created_at, Delivery.id)
    )
    return list(session.scalars(query))
