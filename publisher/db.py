"""The record store's engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from publisher.fileio import FileLock

MIGRATIONS = Path(__file__).parent / "migrations"
#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
IMMEDIATE = "publisher_begin_immediate"
WRITER_WAIT = 30.0  # seconds a writer waits for SQLite's writer slot, as busy_timeout does
_writer_queues: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 (the driver publisher installs).

    SQLAlchemy would pick psycopg2 for a bare ``postgresql://``, which is not installed; an
    explicit driver (``postgresql+psycopg2://``, ``postgresql+asyncpg://``) is kept as given.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(
    url: str, *, synchronous: str = "FULL", pool_size: int = 5, max_overflow: int = 10
) -> Engine:
    """Create the engine; on SQLite, WAL and a durable ``synchronous`` setting.

    ``synchronous=FULL`` (the default) makes every commit survive a power loss, which is what
    a ``202`` promises; ``NORMAL`` is faster and survives a process crash but not a power loss.

    On PostgreSQL each process keeps at most ``pool_size + max_overflow`` connections (15 by
    default): a sync gunicorn worker uses one, a ``publisher worker`` one per thread plus the
    sweeper. Size ``max_connections`` (or a PgBouncer in front) for every process of every
    host; ``docs/deploy.md`` has the arithmetic. Connections are checked before use and
    recycled after 30 minutes, so a database restart or a load balancer's idle timeout
    costs a retry, not an error.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_pragmas(engine, synchronous)
        database = engine.url.database
        if database and database != ":memory:":
            _writer_queues[engine] = WriterQueue(Path(f"{database}.write-lock"))
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        pool_timeout=30,
    )


def _ensure_sqlite_folder(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA"}:
        raise ValueError(f"sqlite_synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; take it over so that a write
        # transaction starts with BEGIN IMMEDIATE and never fails half way on a lock upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # writers (``transaction()``) take the write lock up front, so they queue on
        # busy_timeout instead of failing half way on a lock upgrade. Everything else runs in
        # autocommit: reads see the last commit (WAL), never wait for a writer nor make one
        # wait, and cost no BEGIN/ROLLBACK round trip.
        if connection.get_execution_options().get(IMMEDIATE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class WriterQueue:
    """The queue for SQLite's one writer: threads on a lock, processes on a ``flock``.

    SQLite makes a writer that finds the database locked poll, in its busy handler, with
    sleeps of 1 to 100 ms: far longer than the commit it waits for, and unfair, so under
    threaded web workers a writer could wait for seconds while others went ahead. Here a
    waiting writer blocks in the kernel and wakes as soon as the slot is free; by the time
    it has it, it meets no lock in SQLite. Per process (made again after a fork).
    """

    def __init__(self, path: Path) -> None:
        self.file = FileLock(path)
        self._threads_of: tuple[int, threading.Lock] | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        threads = self._threads()
        if not threads.acquire(timeout=WRITER_WAIT):
            raise TimeoutError(f"no turn to write in {WRITER_WAIT:g} s")
        try:
            with self.file.hold():  # the flock's holder is the process: one thread at a time
                yield
        finally:
            threads.release()

    def _threads(self) -> threading.Lock:
        pid = os.getpid()
        if self._threads_of is None or self._threads_of[0] != pid:
            self._threads_of = (pid, threading.Lock())
        return self._threads_of[1]


def writer_turn(engine: Engine) -> AbstractContextManager[None]:
    """Wait for the turn to write on ``engine`` (SQLite files; elsewhere at once)."""
    queue = _writer_queues.get(engine)
    return queue.hold() if queue is not None else nullcontext()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work that writes: commit on success, roll back on any error.

    On a SQLite file it first waits for its turn (:class:`WriterQueue`); a transaction
    must not open another one inside it (it would wait for itself).
    """
    with writer_turn(factory.kw["bind"]), factory() as session, session.begin():
        session.connection(execution_options={IMMEDIATE: True})
        yield session


@contextmanager
def raw_write(engine: Engine) -> Iterator[Any]:
    """A write transaction on a pooled driver connection; yields a DBAPI cursor.

    For the one hot path that runs a single prebuilt statement (the webhook inbox): no
    SQLAlchemy connection, events or result objects, which cost more than the insert. Like
    :func:`transaction` it begins IMMEDIATE on SQLite (the pool's connections run in
    autocommit, see ``_sqlite_pragmas``), commits on success and rolls back on any error.
    Errors are the driver's own (``engine.dialect.dbapi.IntegrityError``, ...).
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            connection.commit()
        except BaseException:
            with suppress(Exception):  # a broken connection: the pool finds out on checkout
                connection.rollback()
            raise
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic); safe to run on every start."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
