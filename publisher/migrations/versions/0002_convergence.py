"""convergence: what each output confirmed, transition times, attempt history

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import publisher.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("meaning_revision", sa.Integer(), nullable=True))
    op.execute("UPDATE records SET meaning_revision = revision")
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("occurred_at", publisher.models.UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("resend", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("placements") as batch:
        batch.add_column(sa.Column("held_revision", sa.Integer(), nullable=True))
        batch.create_index("ix_placements_output_record", ["output", "record_id"])
    # what the old ledger said was live is what the output confirmed
    op.execute("UPDATE placements SET held_revision = revision WHERE state = 'live'")
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("at", publisher.models.UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(op.f("ix_delivery_attempts_delivery_id"), "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_attempts_delivery_id"), table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("placements") as batch:
        batch.drop_index("ix_placements_output_record")
        batch.drop_column("held_revision")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("resend")
        batch.drop_column("occurred_at")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("meaning_revision")
