"""Erasure and retention: purge a record everywhere, keep a tombstone, prune old content.

A purge is a retraction followed by erasure (docs/decisions/purge-is-retract-then-erase.md):
the record is retracted from every output as any retraction is, a tombstone is written at
once (so the id is refused from then on), and the sweeper erases the rows once no delivery
of the record is pending any more, that is once every output confirmed the retraction or
its retraction ended dead. Nothing of the record is kept but the tombstone.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, LargeBinary, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from publisher.db import driver_fetch, transaction, unindexed
from publisher.errors import Gone, NotFound
from publisher.models import (
    Attempt,
    Delivery,
    InboxItem,
    Placement,
    QuarantineItem,
    Record,
    RecordTopic,
    Revision,
    Tombstone,
    utcnow,
)
from publisher.records import instant_text
from publisher.store import retract_record

if TYPE_CHECKING:
    from publisher.services import Services

log = logging.getLogger("publisher.erasure")

#: seconds between two retention runs of one sweeper
PRUNE_EVERY = 600.0
#: fields whose values may stand for the record in a raw payload (an id derived from a URL)
URL_FIELDS = ("originalUrl", "webUrl")
CHUNK = 500


@dataclass(frozen=True)
class PurgeState:
    """What the API and the CLI say about a purge."""

    id: str
    status: str  # pending, purged
    requested_at: datetime
    requested_by: str
    purged_at: datetime | None
    unconfirmed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "requested_at": instant_text(self.requested_at),
            "requested_by": self.requested_by,
            "purged_at": instant_text(self.purged_at),
            "unconfirmed": self.unconfirmed,
        }


class Eraser:
    """Purges records and applies the retention setting; one per app (the sweeper runs it)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.retention = services.settings["retention"]
        self._pruned_at = 0.0

    def purge(self, record_id: str, who: str, *, at_once: bool = False) -> PurgeState:
        """Retract everywhere and leave a tombstone; erase now if nothing waits for a receipt.

        ``at_once`` erases without waiting (an output that is off or failing keeps what it
        holds: it is listed in ``unconfirmed``). Asking again for a pending purge is no error.
        """
        dispatcher = self.services.dispatcher
        with transaction(self.services.sessions) as session:
            stone = session.get(Tombstone, record_id)
            if stone is None:
                outcome = retract_record(session, record_id, dispatcher.routes())
                session.add(_tombstone(record_id, who))
                deliveries = outcome.deliveries
            else:
                deliveries = []
        dispatcher.enqueue(deliveries)
        self.finish(record_id, at_once=at_once)
        return self.state(record_id)

    def state(self, record_id: str) -> PurgeState:
        with self.services.sessions() as session:
            stone = session.get(Tombstone, record_id)
            if stone is None:
                raise NotFound(f"no purge of {record_id!r}")
            return _state(stone)

    def finish(self, record_id: str, *, at_once: bool = False) -> bool:
        """Erase a pending purge's record if its retraction is settled everywhere."""
        with transaction(self.services.sessions) as session:
            stone = session.get(Tombstone, record_id, with_for_update=True)
            if stone is None or stone.purged_at is not None:
                return False
            if not at_once and _open_deliveries(session, record_id):
                return False
            stone.unconfirmed = _still_held(session, record_id)
            erase(session.connection(), record_id)
            stone.purged_at = utcnow()
        log.info("record %s purged", record_id, extra={"record_id": record_id})
        return True

    def sweep(self) -> int:
        """The sweeper's step: finish the purges whose receipts came, prune on schedule."""
        with self.services.sessions() as session:
            waiting = session.scalars(
                select(Tombstone.record_id).where(Tombstone.purged_at.is_(None)).limit(CHUNK)
            ).all()
        finished = sum(self.finish(record_id) for record_id in waiting)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY or not self._pruned_at:
            self._pruned_at = time.monotonic()
            self.prune()
        return finished

    def prune(self, now: datetime | None = None) -> dict[str, int]:
        """Apply ``retention``: old revisions (never a current one) and old raw payloads."""
        now = now or utcnow()
        counts = {"revisions": 0, "payloads": 0}
        with transaction(self.services.sessions) as session:
            days = self.retention["revisions_days"]
            if days:
                counts["revisions"] = prune_revisions(session, now - timedelta(days=days))
            days = self.retention["payloads_days"]
            if days:
                counts["payloads"] = prune_payloads(session, now - timedelta(days=days))
        if any(counts.values()):
            log.info("retention pruned %s", counts)
        return counts


# built once: intake runs it in every write transaction
_TOMBSTONES_OF = select(Tombstone.record_id, Tombstone.requested_at).where(
    Tombstone.record_id.in_(bindparam("ids", expanding=True))
)


def refuse_purged(connection: Connection, record_ids: Sequence[str]) -> dict[str, Gone]:
    """The ids among ``record_ids`` that have a tombstone, each with the 410 to answer."""
    ids = sorted(set(record_ids))
    if not ids or not driver_fetch(connection, _any_tombstone_sql(len(ids)), ids):
        return {}
    rows = connection.execute(_TOMBSTONES_OF, {"ids": ids}).all()
    return {row.record_id: gone(row.record_id, row.requested_at) for row in rows}


@functools.cache
def _any_tombstone_sql(count: int) -> str:
    """Whether any of ``count`` ids has a tombstone: asked by every write, nearly always no."""
    marks = ", ".join("?" * count)
    return f"SELECT 1 FROM {Tombstone.__tablename__} WHERE record_id IN ({marks}) LIMIT 1"  # noqa: S608


def gone(record_id: str, when: datetime) -> Gone:
    message = f"record {record_id!r} was purged ({instant_text(when)}): its id cannot be used again"
    return Gone(message, errors={"id": [message]})


def check_not_purged(session: Session, record_id: str) -> None:
    """Raise ``410`` for a purged id (or one whose purge waits for receipts), with the time."""
    stone = session.get(Tombstone, record_id)
    if stone is None:
        return
    if stone.purged_at is None:
        message = (
            f"record {record_id!r} is being purged (asked {instant_text(stone.requested_at)}): "
            "it is erased once every output confirmed its retraction"
        )
    else:
        message = f"record {record_id!r} was purged ({instant_text(stone.purged_at)})"
    raise Gone(message, errors={"id": [message]})


def erase(connection: Connection, record_id: str) -> None:
    """Delete every row that holds the record or its content; the caller commits."""
    markers = _markers(connection, record_id)
    ids = connection.execute(select(Delivery.id).where(Delivery.record_id == record_id))
    delivery_ids = [row.id for row in ids]
    for start in range(0, len(delivery_ids), CHUNK):
        chunk = delivery_ids[start : start + CHUNK]
        connection.execute(delete(Attempt).where(Attempt.delivery_id.in_(chunk)))
    for model in (Delivery, Placement, RecordTopic, Revision):
        connection.execute(delete(model).where(model.record_id == record_id))
    connection.execute(delete(Record).where(Record.id == record_id))
    connection.execute(delete(QuarantineItem).where(QuarantineItem.record_id == record_id))
    finished = InboxItem.status.in_(("done", "quarantined"))
    for marker in markers:
        _erase_payloads(connection, QuarantineItem, marker)
        _erase_payloads(connection, InboxItem, marker, finished)


def prune_revisions(session: Session, before: datetime) -> int:
    """Delete revisions made before ``before`` that are not their record's current one."""
    current = select(Record.revision).where(Record.id == Revision.record_id).scalar_subquery()
    result = session.execute(
        delete(Revision)
        .where(Revision.created_at < before, Revision.revision < current)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def prune_payloads(session: Session, before: datetime) -> int:
    """Empty the raw payloads of finished inbox rows received before ``before``.

    The row stays (its webhook-id still turns a repeat away until ``remember_ids_days``).
    """
    result = session.execute(
        update(InboxItem)
        .where(
            InboxItem.status.in_(("done", "quarantined")),
            InboxItem.received_at < before,
            func.length(InboxItem.payload) > 0,
        )
        .values(payload=b"")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def _tombstone(record_id: str, who: str) -> Tombstone:
    return Tombstone(record_id=record_id, requested_at=utcnow(), requested_by=who, unconfirmed=[])


def _open_deliveries(session: Session, record_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.record_id == record_id, unindexed(Delivery.status) == "pending")
        )
        or 0
    )


def _still_held(session: Session, record_id: str) -> list[str]:
    """Outputs that never confirmed the retraction (it ended dead, or the purge did not wait)."""
    rows = session.scalars(
        select(Placement.output).where(
            Placement.record_id == record_id, Placement.held_revision.is_not(None)
        )
    )
    return sorted(rows)


def _markers(connection: Connection, record_id: str) -> list[bytes]:
    """What stands for the record in a raw payload: its id, and the URLs its id may derive from."""
    markers = {record_id}
    rows = connection.execute(select(Revision.fields).where(Revision.record_id == record_id))
    for (fields,) in rows:
        markers.update(str(fields[key]) for key in URL_FIELDS if fields.get(key))
    return [marker.encode() for marker in sorted(markers)]


def _erase_payloads(connection: Connection, model: Any, marker: bytes, *where: Any) -> None:
    """Delete stored payloads holding ``marker``, found by the database (no payload is read)."""
    connection.execute(delete(model).where(_contains(connection, model.payload, marker), *where))


def _contains(connection: Connection, column: Any, marker: bytes) -> Any:
    if connection.dialect.name == "postgresql":  # POSITION(x IN y) works on bytea
        where = f"position(:marker IN {column.table.name}.{column.name}) > 0"
        return text(where).bindparams(bindparam("marker", marker, type_=LargeBinary))
    return func.instr(column, marker) > 0


def _state(stone: Tombstone) -> PurgeState:
    return PurgeState(
        stone.record_id,
        "pending" if stone.purged_at is None else "purged",
        stone.requested_at,
        stone.requested_by,
        stone.purged_at,
        list(stone.unconfirmed or []),
    )
