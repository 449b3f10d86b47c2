"""Writing verified webhook payloads to the inbox: many requests, one durable commit.

This is the whole of a webhook's durable work, so it is built for cost:

- concurrent requests of one process share a transaction and its commit
  (:class:`~publisher.groupcommit.GroupCommitter`); each gets its row id, or None when its
  ``(source, webhook_id)`` is a repeat, only once that commit succeeded;
- ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so a repeat does not fail the rest of
  its batch: one statement per dialect, built once, run on the driver's cursor
  (:class:`~publisher.db.DriverInsert`; on PostgreSQL the batch's rows go in one pipeline);
- the leaders write on a connection kept between batches
  (:class:`~publisher.db.KeptConnection`), not one checked out of the pool per batch;
- on a SQLite file, a leader takes the writers' turn (:func:`publisher.db.writer_lock`)
  *before* it takes its batch, so what arrives while it waits joins the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.exc import IntegrityError

from publisher.db import DriverInsert, KeptConnection, writer_lock
from publisher.groupcommit import GroupCommitter
from publisher.models import InboxItem

Row = dict[str, Any]
COLUMNS = ("source", "webhook_id", "content_type", "payload", "status", "request_id", "received_at")


class InboxWriter:
    """Commits inbox rows for the request threads of this process (see the module)."""

    def __init__(
        self, kept: KeptConnection, max_batch: int, after_commit: Callable[[list[int]], None]
    ) -> None:
        self.kept = kept
        self.after_commit = after_commit  # the new ids, once committed: enqueue them
        self.committer: GroupCommitter[Row, int | None] = GroupCommitter(
            self._write, max_batch, gate=lambda: writer_lock(kept.engine)
        )

    def write(self, row: Row) -> int | None:
        """Commit ``row``: its id, or None for a repeat; raises ``CommitFailed``."""
        return self.committer.submit(row)

    def _write(self, rows: list[Row]) -> list[int | None]:
        ids = self._insert(rows)
        new = [item_id for item_id in ids if item_id is not None]
        if new:
            self.after_commit(new)
        return ids

    def _insert(self, rows: list[Row]) -> list[int | None]:
        try:
            with self.kept.transaction() as connection:
                return insert_new(connection, rows)
        except IntegrityError:
            if len(rows) == 1:
                return [None]
            # a constraint other than the unique id failed: alone, one row cannot fail others
            return [self._insert([row])[0] for row in rows]


def insert_new(connection: Any, rows: list[Row]) -> list[int | None]:
    """Insert inbox rows in one statement; each row's new id, or None for a repeat.

    A repeat is a ``(source, webhook_id)`` already stored, or met earlier in ``rows``.
    ``RETURNING`` names the rows that went in; they are matched by key, since the order of
    returned rows is not guaranteed.
    """
    keys = [(row["source"], row["webhook_id"]) for row in rows]
    first: dict[tuple[str, str], int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    statement = _insert_new(connection.dialect)
    returned = statement.run(connection, [rows[index] for index in first.values()])
    inserted = {(source, hook): item_id for item_id, source, hook in returned}
    return [inserted.get(key) if first[key] == i else None for i, key in enumerate(keys)]


def _insert_new(dialect: Dialect) -> DriverInsert:
    """``INSERT ... ON CONFLICT (source, webhook_id) DO NOTHING RETURNING`` for ``dialect``."""
    statement = _INSERTS.get(dialect.name)
    if statement is None:
        if dialect.name not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"the inbox takes SQLite and PostgreSQL, not {dialect.name}")
        tail = " ON CONFLICT (source, webhook_id) DO NOTHING RETURNING id, source, webhook_id"
        statement = DriverInsert.build(InboxItem.__table__, COLUMNS, dialect, tail)
        _INSERTS[dialect.name] = statement
    return statement


_INSERTS: dict[str, DriverInsert] = {}  # by dialect name: built once per process
