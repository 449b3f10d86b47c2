"""Writing verified webhook payloads to the inbox: many requests, one durable commit.

This is the whole of a webhook's durable work, so it is built for cost:

- concurrent requests of one process share a transaction and its commit
  (:class:`~publisher.groupcommit.GroupCommitter`); each gets its row id, or None when its
  ``(source, webhook_id)`` is a repeat, only once that commit succeeded;
- one ``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING`` per batch, so a
  repeat does not fail the rest of its batch. Its SQL is written here once per batch size
  and run on a driver cursor (:func:`publisher.db.raw_write`): SQLAlchemy compiled a
  multi-row ``INSERT`` anew on every call (a sixth of a worker's CPU under load), and its
  connection, events and result objects cost more than the insert itself. The columns'
  bind processors are still applied, so values are stored exactly as the ORM stores them;
- on a SQLite file, a leader waits for its turn to write (:func:`publisher.db.writer_lock`,
  a lock and a ``flock`` rather than SQLite's sleeping busy handler) *before* it takes its
  batch, so what arrives while it waits joins the batch. PostgreSQL needs no such thing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Dialect, Engine

from publisher.db import raw_write, writer_lock
from publisher.groupcommit import GroupCommitter
from publisher.models import InboxItem

#: the inbox columns a webhook fills, in the order of the INSERT
COLUMNS = ("source", "webhook_id", "content_type", "payload", "status", "request_id", "received_at")
UNIQUE_KEY = ("source", "webhook_id")
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}

Row = dict[str, Any]


class InboxWriter:
    """Commits inbox rows for the request threads of this process (see the module)."""

    def __init__(
        self, engine: Engine, max_batch: int, after_commit: Callable[[list[int]], None]
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.after_commit = after_commit  # the new ids, once committed: enqueue them
        self._committer_of: tuple[int, GroupCommitter[Row, int | None]] | None = None

    def write(self, row: Row) -> int | None:
        """Commit ``row``: its id, or None for a repeat; raises ``CommitFailed``."""
        return self._committer().submit(row)

    def _committer(self) -> GroupCommitter[Row, int | None]:
        """This process's committer: made after a fork, never inherited from the parent."""
        pid = os.getpid()
        if self._committer_of is None or self._committer_of[0] != pid:
            committer = GroupCommitter(self._write, self.max_batch, self._turn)
            self._committer_of = (pid, committer)
        return self._committer_of[1]

    def _turn(self) -> AbstractContextManager[None]:
        return writer_lock(self.engine)

    def _write(self, rows: list[Row]) -> list[int | None]:
        ids = self._insert(rows)
        new = [item_id for item_id in ids if item_id is not None]
        if new:
            self.after_commit(new)
        return ids

    def _insert(self, rows: list[Row]) -> list[int | None]:
        try:
            with raw_write(self.engine) as cursor:
                return insert_new(cursor, self.engine.dialect, rows)
        except self.engine.dialect.dbapi.IntegrityError:
            if len(rows) == 1:
                return [None]
            # a constraint other than the unique id failed: alone, one row cannot fail others
            return [self._insert([row])[0] for row in rows]


def insert_new(cursor: Any, dialect: Dialect, rows: list[Row]) -> list[int | None]:
    """Insert inbox rows in one statement; each row's new id, or None for a repeat.

    A repeat is a ``(source, webhook_id)`` already stored, or met earlier in ``rows``.
    ``RETURNING`` names the rows that went in; they are matched by key, since the order of
    returned rows is not guaranteed.
    """
    keys = [(row["source"], row["webhook_id"]) for row in rows]
    first: dict[tuple[str, str], int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    processors = _bind_processors(dialect)
    params: list[Any] = []
    for index in first.values():
        row = rows[index]
        params.extend(
            process(row[name]) if process else row[name]
            for name, process in zip(COLUMNS, processors, strict=True)
        )
    sql = _insert_sql(dialect.name, dialect.paramstyle, len(first))
    cursor.execute(sql, tuple(params))
    inserted = {(source, hook): item_id for item_id, source, hook in cursor.fetchall()}
    return [inserted.get(key) if first[key] == i else None for i, key in enumerate(keys)]


@functools.cache
def _insert_sql(dialect: str, paramstyle: str, count: int) -> str:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of ``count`` rows (SQLite, PostgreSQL)."""
    if dialect not in ("sqlite", "postgresql") or paramstyle not in PLACEHOLDERS:
        raise NotImplementedError(f"the inbox supports SQLite and PostgreSQL, not {dialect}")
    mark = PLACEHOLDERS[paramstyle]
    one = "(" + ", ".join([mark] * len(COLUMNS)) + ")"
    # constant names and placeholders only: every value is bound
    return (
        f"INSERT INTO {InboxItem.__tablename__} ({', '.join(COLUMNS)}) "  # noqa: S608
        f"VALUES {', '.join([one] * count)} "
        f"ON CONFLICT ({', '.join(UNIQUE_KEY)}) DO NOTHING "
        "RETURNING id, source, webhook_id"
    )


_processors: dict[str, list[Callable[[Any], Any] | None]] = {}


def _bind_processors(dialect: Dialect) -> list[Callable[[Any], Any] | None]:
    """Each column's bind processor on ``dialect``, as SQLAlchemy applies it (UTC dates)."""
    kind = f"{dialect.name}+{dialect.driver}"
    found = _processors.get(kind)
    if found is None:
        types = [InboxItem.__table__.c[name].type.dialect_impl(dialect) for name in COLUMNS]
        found = [kind_of.bind_processor(dialect) for kind_of in types]
        _processors[kind] = found
    return found
