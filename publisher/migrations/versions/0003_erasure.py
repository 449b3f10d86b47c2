"""erasure: tombstones of purged records

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import publisher.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("record_id", sa.String(length=255), nullable=False),
        sa.Column("requested_at", publisher.models.UTCDateTime(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("purged_at", publisher.models.UTCDateTime(), nullable=True),
        sa.Column("unconfirmed", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_tombstones")),
    )


def downgrade() -> None:
    op.drop_table("tombstones")
