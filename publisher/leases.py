"""Taking deliveries for a while, so that no two workers run the same one at once.

A worker leases the deliveries of a queue message before it runs them: each leased row gets
``lease_until`` and one more ``receives``. A lease that expires (the worker died) lets the
sweeper hand the delivery to another worker. Two deliveries of the same record and output
never run side by side: the older goes first, the younger waits for it (their order is the
order the record changed in).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from publisher.db import transaction, unindexed, write_connection
from publisher.models import Delivery, Placement

#: a delivery enqueued for "now" may reach a worker whose clock is a little behind
CLOCK_SLACK = timedelta(seconds=1)


def lease(
    sessions: sessionmaker[Session], ids: Sequence[str], now: datetime, seconds: float
) -> tuple[list[str], list[str]]:
    """Lease what can run of ``ids`` in one transaction.

    Returns the leased ids (oldest first) and the ids that are due but must wait for a
    sibling that runs now (the caller looks at those again shortly). The rest (done, dead,
    not due yet, held by another worker) are left to whoever holds them or to the sweeper.
    The statements are built once: a batch costs their execution, not their compilation.
    """
    with write_connection(sessions.kw["bind"]) as connection:
        rows = connection.execute(_ROWS, {"ids": list(ids)}).all()
        if not rows:
            return [], []
        first = _oldest_per_pair(rows)
        if connection.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE serialises already
            _lock_placements(connection, sorted(first))
        candidates = [row.id for row in first.values()]
        times = {"now": now, "soon": now + CLOCK_SLACK, "until": now + timedelta(seconds=seconds)}
        taken = set(connection.scalars(_LEASE, {"ids": candidates, **times}))
        rest = [row.id for row in rows if row.id not in taken]
        waiting = list(connection.scalars(_WAITING, {"ids": rest, **times})) if rest else []
    ordered = sorted(rows, key=lambda row: (row.created_at, row.id))
    return [row.id for row in ordered if row.id in taken], waiting


def _oldest_per_pair(rows: Sequence[Any]) -> dict[tuple[str, str], Any]:
    """Of several deliveries of one record to one output in a message, only the oldest runs."""
    first: dict[tuple[str, str], Any] = {}
    for row in sorted(rows, key=lambda row: (row.created_at, row.id)):
        first.setdefault((row.record_id, row.output), row)
    return first


def _lock_placements(connection: Any, pairs: list[tuple[str, str]]) -> None:
    """Row-lock the placements of ``pairs`` in one order (PostgreSQL; SQLite's ``BEGIN
    IMMEDIATE`` serialises writers already), so two workers leasing siblings cannot both
    see "no sibling running", and two batches cannot deadlock on each other."""
    records = sorted({record_id for record_id, _ in pairs})
    outputs = sorted({output for _, output in pairs})
    connection.execute(_LOCK, {"records": records, "outputs": outputs})


def _free(now: Any, soon: Any) -> ColumnElement[bool]:
    """Pending, due (by ``soon``: now and the clocks' slack), and held by nobody at ``now``."""
    return (
        (unindexed(Delivery.status) == "pending")
        & (unindexed(Delivery.next_attempt_at) <= soon)
        & ((Delivery.lease_until.is_(None)) | (Delivery.lease_until < now))
    )


def _lease_statement(ids: list[str], now: datetime, seconds: float) -> Any:
    """The lease with its values in (``tests/test_db.py`` checks its plan)."""
    return _leasing(ids, now, now + CLOCK_SLACK, now + timedelta(seconds=seconds))


def _leasing(ids: Any, now: Any, soon: Any, until: Any) -> Any:
    """The lease, with parameters (built once: ``_LEASE``) or values."""
    sibling = aliased(Delivery)
    running_sibling = exists().where(
        sibling.record_id == Delivery.record_id,
        sibling.output == Delivery.output,
        sibling.id != Delivery.id,
        unindexed(sibling.status) == "pending",
        sibling.lease_until > now,
    )
    return (
        update(Delivery)
        .where(Delivery.id.in_(ids), _free(now, soon), ~running_sibling)
        .values(lease_until=until, receives=Delivery.receives + 1, updated_at=now)
        .returning(Delivery.id)
    )


_NOW, _SOON = bindparam("now"), bindparam("soon")
_IDS = bindparam("ids", expanding=True)
_ROWS = select(Delivery.id, Delivery.record_id, Delivery.output, Delivery.created_at).where(
    Delivery.id.in_(bindparam("ids", expanding=True))
)
_LOCK = (
    select(Placement.record_id)
    .where(
        Placement.record_id.in_(bindparam("records", expanding=True)),
        Placement.output.in_(bindparam("outputs", expanding=True)),
    )
    .order_by(Placement.record_id, Placement.output)
    .with_for_update()
)
_LEASE = _leasing(_IDS, _NOW, _SOON, bindparam("until"))
_WAITING = select(Delivery.id).where(Delivery.id.in_(_IDS), _free(_NOW, _SOON))


def renew(
    sessions: sessionmaker[Session], ids: Sequence[str], now: datetime, seconds: float
) -> None:
    """Extend the lease of deliveries this worker still holds (a long batch of slow calls).

    Only rows still pending and leased are touched: one that another worker took over
    after an expiry keeps that worker's lease.
    """
    with transaction(sessions) as session:
        session.connection().execute(
            update(Delivery)
            .where(
                Delivery.id.in_(list(ids)),
                unindexed(Delivery.status) == "pending",
                Delivery.lease_until.is_not(None),
            )
            .values(lease_until=now + timedelta(seconds=seconds), updated_at=now)
        )
