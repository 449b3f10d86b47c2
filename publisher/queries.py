"""Reading records and deliveries for the API and the CLI: pages, filters, cursors.

The write side (revisions, the ledger, deliveries in one transaction) is ``store``.
"""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from publisher.errors import MalformedInput, NotFound
from publisher.models import Delivery, Placement, Record, RecordTopic


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
    """Newest first; returns a page and the cursor of the next one (or None)."""
    query = select(Record).order_by(Record.seq.desc()).limit(limit + 1)
    if published is not None:
        query = query.where(Record.published.is_(published))
    if state:
        query = query.where(Record.state == state)
    if topic:
        query = query.join(RecordTopic, RecordTopic.record_id == Record.id).where(
            RecordTopic.topic == topic
        )
    if since:
        query = query.where(Record.updated_at >= since)
    if cursor:
        query = query.where(Record.seq < decode_cursor(cursor))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].seq) if more and rows else None


def placements_of(session: Session, record_id: str) -> list[Placement]:
    return list(session.scalars(select(Placement).where(Placement.record_id == record_id)))


def deliveries_of(session: Session, record_id: str) -> list[Delivery]:
    query = (
        select(Delivery)
        .where(Delivery.record_id == record_id, Delivery.status != "superseded")
        .order_by(Delivery.created_at, Delivery.id)
    )
    return list(session.scalars(query))
