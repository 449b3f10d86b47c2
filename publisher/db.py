"""The record store's engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, create_engine, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.functions import FunctionElement

MIGRATIONS = Path(__file__).parent / "migrations"
#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
IMMEDIATE = "publisher_begin_immediate"
WRITER_WAIT = 30.0  # seconds a writer waits for the writer lock, as SQLite's busy_timeout
_held = threading.local()


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


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work that writes: commit on success, roll back on any error."""
    with writer_lock(factory.kw["bind"]), factory() as session, session.begin():
        session.connection(execution_options={IMMEDIATE: True})
        yield session


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """One write transaction on a plain connection: commit on success, roll back on error.

    For write paths that run only Core statements (intake): an ORM session around them
    costs ~0.1 ms per transaction for a unit of work they never use.
    """
    with writer_lock(engine), engine.connect() as connection:
        connection.execution_options(**{IMMEDIATE: True})
        with connection.begin():
            yield connection


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """On SQLite, writers take turns: threads on a lock of this process, processes on a file.

    Why: SQLite has one writer at a time, and a writer that finds the database locked
    sleeps in its busy handler (1, 2, 5, 10 ... 100 ms) before it looks again: far longer
    than the commit it waits for, and unfair, so under threaded web workers a writer could
    wait for seconds while others went ahead. Here the threads of a process block on a lock
    (woken as soon as it is free, no CPU spent waiting), and the one thread holding it polls
    the lock file (``<database>-writer.lock``, ``flock``) every 50-200 µs against the other
    processes; both are held from before ``BEGIN IMMEDIATE`` until after ``COMMIT``, so the
    writer meets no lock inside SQLite. Nothing else changes: after ``WRITER_WAIT`` seconds a
    writer goes on and SQLite's busy timeout decides, as before; a writer already inside a
    write transaction in this thread does not wait for itself. Other databases need no lock.
    """
    path = _writer_lock_path(engine)
    if path is None or getattr(_held, "depth", 0):
        yield
        return
    deadline = time.monotonic() + WRITER_WAIT
    threads = _threads_lock(path)
    if not threads.acquire(timeout=WRITER_WAIT):
        yield  # SQLite's busy timeout decides
        return
    try:
        with _file_lock(path, deadline):
            _held.depth = 1
            try:
                yield
            finally:
                _held.depth = 0
    finally:
        threads.release()


@contextmanager
def _file_lock(path: str, deadline: float) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # one per use: fork-safe
    except OSError:  # e.g. a read-only folder: SQLite's busy timeout alone, as before
        yield
        return
    try:
        _acquire(fd, deadline)
        yield
    finally:
        os.close(fd)  # releases the lock


_threads_locks: dict[str, tuple[int, threading.Lock]] = {}
_threads_locks_guard = threading.Lock()


def _threads_lock(path: str) -> threading.Lock:
    """This process's lock for ``path`` (made anew in a forked child)."""
    pid = os.getpid()
    with _threads_locks_guard:
        owner, lock = _threads_locks.get(path, (None, None))
        if owner != pid or lock is None:
            lock = threading.Lock()
            _threads_locks[path] = (pid, lock)
        return lock


def _acquire(fd: int, deadline: float) -> bool:
    pause = 0.00005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.0002)


def _writer_lock_path(engine: Engine) -> str | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{database}-writer.lock"


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


class unindexed(FunctionElement[Any]):  # noqa: N801 - reads as SQL: unindexed(column)
    """A column the query planner must not pick an index for (renders ``+column`` on SQLite).

    Without statistics SQLite prefers ``ix_deliveries_due (status, ...)`` for any condition
    on ``status``, so "the pending deliveries of this record" and "these ids, if pending"
    walked every pending delivery. Wrapped in ``unindexed`` the condition is checked on the
    rows the selective index (record, or primary key) found. Other databases plan with
    statistics; there it is the bare column.
    """

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)
