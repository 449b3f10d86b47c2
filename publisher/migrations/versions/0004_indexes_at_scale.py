"""indexes at scale: topic pages by seq, the deliveries listing, published, held quarantine

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:40:00

``record_topics.record_seq`` repeats the record's ``seq`` (filled here from ``records``) so
that ``ix_record_topics_topic_seq`` serves a topic's page in order; it replaces
``ix_record_topics_topic``. ``ix_deliveries_record_id`` goes: ``ix_deliveries_record_output``
starts with the same column, and every index on ``deliveries`` is a cost on each delivery.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("record_topics") as batch:
        batch.add_column(sa.Column("record_seq", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE record_topics SET record_seq ="
        " (SELECT seq FROM records WHERE records.id = record_topics.record_id)"
    )
    with op.batch_alter_table("record_topics") as batch:
        batch.alter_column("record_seq", existing_type=sa.Integer(), nullable=False)
        batch.drop_index("ix_record_topics_topic")
        batch.create_index("ix_record_topics_topic_seq", ["topic", "record_seq"])
    with op.batch_alter_table("records") as batch:
        batch.create_index("ix_records_published_seq", ["published", "seq"])
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_record_id")
        batch.create_index("ix_deliveries_updated", ["updated_at", "id"])
        batch.create_index("ix_deliveries_status_updated", ["status", "updated_at", "id"])
    with op.batch_alter_table("quarantine") as batch:
        batch.create_index("ix_quarantine_replayed_at", ["replayed_at"])


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_index("ix_quarantine_replayed_at")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_status_updated")
        batch.drop_index("ix_deliveries_updated")
        batch.create_index("ix_deliveries_record_id", ["record_id"])
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_published_seq")
    with op.batch_alter_table("record_topics") as batch:
        batch.drop_index("ix_record_topics_topic_seq")
        batch.create_index("ix_record_topics_topic", ["topic"])
        batch.drop_column("record_seq")
