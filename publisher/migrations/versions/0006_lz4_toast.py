"""PostgreSQL: the columns that hold whole records compress with lz4, not pglz

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 19:00:00

A record's fields and body are a few kilobytes: past PostgreSQL's 2 kB threshold each value
is compressed as it is written, twice per new revision (``records`` and ``revisions``), and
once more as a webhook's raw payload in ``inbox``. With pglz those two inserts were most of
the server's time per stored record; lz4 compresses and reads back faster
(docs/performance.md, "Session 12"). Values already stored keep their pglz form and read
as before. A server built without lz4 (or older than 14) keeps pglz: the migration then
changes nothing. SQLite has no such setting.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: (table, column) of every value that holds a whole record or payload
COLUMNS = (
    ("records", "fields"),
    ("records", "body"),
    ("revisions", "fields"),
    ("revisions", "body"),
    ("inbox", "payload"),
    ("quarantine", "payload"),
)
_HAS_LZ4 = sa.text(
    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
)


def _compress_with(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(_HAS_LZ4).scalar():
        return
    for table, column in COLUMNS:  # names from this file, never from input
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')


def upgrade() -> None:
    _compress_with("lz4")


def downgrade() -> None:
    _compress_with("DEFAULT")
