"""erasure, live subscribers, endpoint health: tombstones, stored subscribers, kept counts

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
    op.create_table(
        "subscribers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("allow_private", sa.Boolean(), nullable=True),
        sa.Column("created_at", publisher.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", publisher.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_subscribers")),
    )
    op.create_table(
        "output_health",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", publisher.models.UTCDateTime(), nullable=True),
        sa.Column("last_success_at", publisher.models.UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", publisher.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_output_health")),
    )


def downgrade() -> None:
    op.drop_table("output_health")
    op.drop_table("subscribers")
    op.drop_table("tombstones")
