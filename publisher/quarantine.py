"""The quarantine: what intake kept aside, with why, until an operator replays or it ages out.

Both ways in put items here: a webhook whose payload failed to parse, validate or open (the
raw bytes as received, from :mod:`publisher.inbox`), and an API record whose ``secured``
policy says quarantine (from :mod:`publisher.intake`). A replay goes through the inbox
(:meth:`publisher.inbox.InboxProcessor.replay`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from publisher.errors import NotFound
from publisher.models import QuarantineItem, utcnow
from publisher.queries import decode_cursor, encode_cursor
from publisher.records import instant_text

MAX_ID = 2**63 - 1  # larger ids cannot exist (and SQLite cannot even compare them)


def list_quarantined(
    session: Session,
    *,
    source: str | None = None,
    replayed: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[QuarantineItem], str | None]:
    """Newest first; a page and the cursor of the next one (or None)."""
    query = select(QuarantineItem).order_by(QuarantineItem.id.desc()).limit(limit + 1)
    if source:
        query = query.where(QuarantineItem.source == source)
    if replayed is not None:
        column = QuarantineItem.replayed_at
        query = query.where(column.is_not(None) if replayed else column.is_(None))
    if cursor:
        query = query.where(QuarantineItem.id < min(decode_cursor(cursor), MAX_ID))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more and rows else None


def get_quarantined(session: Session, item_id: int) -> QuarantineItem:
    row = session.get(QuarantineItem, item_id) if 0 < item_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"no quarantine item {item_id}")
    return row


def prune_quarantine(session: Session, before: datetime) -> int:
    """Delete quarantine items created before ``before`` (bounded retention)."""
    result = session.execute(delete(QuarantineItem).where(QuarantineItem.created_at < before))
    return int(result.rowcount or 0)


def quarantine_dict(row: QuarantineItem, *, detail: bool = False) -> dict[str, Any]:
    """The API and CLI view; ``detail`` adds the payload as text (ciphertext stays sealed)."""
    answer: dict[str, Any] = {
        "id": row.id,
        "source": row.source,
        "content_type": row.content_type,
        "reason": row.reason,
        "errors": row.errors or {},
        "record_id": row.record_id,
        "created_at": instant_text(row.created_at),
        "replayed_at": instant_text(row.replayed_at),
    }
    if detail:
        answer["payload"] = row.payload.decode("utf-8", errors="replace")
    return answer


def quarantine_values(
    source: str,
    content_type: str,
    payload: bytes,
    reason: str,
    errors: Mapping[str, list[str]],
    record_id: str | None = None,
) -> dict[str, Any]:
    """A quarantine row's columns: the raw payload, so a replay parses what was sent."""
    return {
        "source": source,
        "content_type": content_type,
        "payload": payload,
        "reason": reason[:40],
        "errors": dict(errors),
        "record_id": record_id,
        "created_at": utcnow(),
    }
