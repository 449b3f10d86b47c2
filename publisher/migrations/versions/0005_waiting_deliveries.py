"""ix_deliveries_due holds only the waiting deliveries (pending, dead): a partial index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00

SQLite keeps no histograms: after an operator's ``ANALYZE`` (or ``PRAGMA optimize``) it
knows that ``status`` has few values, not that ``pending`` and ``dead`` are rare, and the
overview's counts scanned the whole table for them. An index holding only those rows is the
cheapest path whatever the statistics say, and a delivery that ends leaves it. ``output``
joins the columns so that the counts read the index alone.

A query finds the index only if its WHERE implies the predicate: ``status = :s``, or the
same two terms ORed (SQLite proves no ``IN``), see ``publisher.queries.WAITING``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WAITING = sa.text("status = 'pending' OR status = 'dead'")


def upgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["status", "next_attempt_at", "output"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
