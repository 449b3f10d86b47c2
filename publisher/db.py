"""The record store's engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Engine,
    String,
    Table,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.functions import FunctionElement

from publisher import forksafe
from publisher.migrations import HEAD

MIGRATIONS = Path(__file__).parent / "migrations"
#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
IMMEDIATE = "publisher_begin_immediate"


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
    host; ``docs/deploy.md`` has the arithmetic. A connection that sat idle is checked before
    use (:func:`_ping_when_idle`) and every one is recycled after 30 minutes, so a database
    restart or a load balancer's idle timeout costs a retry, not an error.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_pragmas(engine, synchronous)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        pool_timeout=30,
    )
    _ping_when_idle(engine, PING_AFTER_IDLE)
    return engine


#: seconds a pooled connection may sit unused before it is pinged at its next checkout
PING_AFTER_IDLE = 5.0


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a connection at checkout only if it sat in the pool for ``seconds`` or more.

    Why not ``pool_pre_ping``: it pings at every checkout, a round trip more for each
    transaction (a third of a webhook's). A connection that was in use a moment ago was
    alive then; one that sat idle is where a database restart or a firewall's idle timeout
    shows, and that one is pinged. A failed ping raises ``DisconnectionError``, which makes
    the pool drop that connection and hand out a new one (SQLAlchemy's "pessimistic"
    disconnect handling). A connection that breaks while in use is invalidated by SQLAlchemy
    as before, with every older connection of its pool.
    """

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection did not answer a ping") from exc


_LAST_USED = "publisher_last_used"


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
            # on the driver's connection: this runs for every write transaction, and an
            # execution through SQLAlchemy costs several times the statement itself
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE")


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
    costs more per transaction than their statements, for a unit of work they never use.
    """
    with writer_lock(engine), engine.connect() as connection:
        connection.execution_options(**{IMMEDIATE: True})
        with connection.begin():
            yield connection


class KeptConnection:
    """A write connection kept between the transactions of one writer at a time.

    Why: checking a connection out of SQLAlchemy's pool and back in (its events, the reset's
    rollback, the proxy objects) costs as much as the webhook's insert, and the group
    committers (inbox and API intake) run one transaction per batch. Their leaders take
    turns, so one connection serves them; a writer that finds it in use gets one from the
    pool (:func:`write_connection`). The pool's promises are kept: a kept connection that sat
    unused for ``PING_AFTER_IDLE`` seconds is pinged before use (as the pool would,
    :func:`_ping_when_idle`), one held for ``KEEP_FOR`` seconds goes back to the pool, whose
    ``pool_recycle`` then applies, and a transaction that fails gives it back, for the pool
    to keep or drop.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reset()
        forksafe.after_fork(self._forget)

    def _reset(self) -> None:
        self._turn = threading.Lock()
        self._connection: Connection | None = None
        self._taken = self._used = 0.0

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, as :func:`write_connection`, on the kept connection."""
        if not self._turn.acquire(blocking=False):
            with write_connection(self.engine) as connection:
                yield connection
            return
        try:
            with writer_lock(self.engine):
                connection = self._take()
                try:
                    with connection.begin():
                        yield connection
                except BaseException:
                    self._give_back()
                    raise
                self._used = time.monotonic()
        finally:
            self._turn.release()

    def _take(self) -> Connection:
        now = time.monotonic()
        if self._connection is not None and now - self._taken >= KEEP_FOR:
            self._give_back()
        elif self._connection is not None and now - self._used >= PING_AFTER_IDLE:
            try:
                self.engine.dialect.do_ping(self._connection.connection.dbapi_connection)
            except Exception:  # noqa: BLE001 - dead: the pool drops it, a new one is taken
                self._connection.invalidate()
                self._give_back()
        if self._connection is None:
            self._connection = self.engine.connect()
            self._connection.execution_options(**{IMMEDIATE: True})
            self._taken = now
        return self._connection

    def _give_back(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(SQLAlchemyError):
                connection.close()

    def close(self) -> None:
        """Give the kept connection back to the pool (before the engine is disposed)."""
        with self._turn:
            self._give_back()

    def _forget(self) -> None:
        # in a forked child: the parent's connection is neither used nor given back (the
        # pool's reset would roll back on the parent's socket), so it is kept, unused
        if self._connection is not None:
            _inherited.append(self._connection)
        self._reset()


#: seconds a kept connection serves before it goes back to the pool (see KeptConnection)
KEEP_FOR = 60.0
_inherited: list[Connection] = []  # a forked child's copies of its parent's kept connections


@dataclass(frozen=True)
class DriverInsert:
    """An ``INSERT`` built once for a dialect and run on the driver's own cursor.

    Why: for a one-row statement, SQLAlchemy's execution (events, an execution context,
    parameter and result processing) costs several times the driver's call, and the
    webhook's inbox row is written for every request. The values still go through each
    column's own bind processor, and a driver error is raised as SQLAlchemy's exception for
    it (``IntegrityError``, ``OperationalError``), so callers see the values and the
    exceptions that ``Connection.execute`` would give them.
    """

    sql: str
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    qmark: bool

    @classmethod
    def build(
        cls, table: Table, columns: Sequence[str], dialect: Dialect, tail: str = ""
    ) -> DriverInsert:
        """``INSERT INTO table (columns) VALUES (...)`` then ``tail`` (e.g. ``RETURNING``)."""
        quote = dialect.identifier_preparer.quote
        qmark = dialect.paramstyle == "qmark"
        names = ", ".join(quote(column) for column in columns)
        marks = ", ".join("?" if qmark else "%s" for _ in columns)
        # names from the table's metadata, never from input: values are bound parameters
        sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks}){tail}"  # noqa: S608
        processors = tuple(
            table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns
        )
        return cls(sql, tuple(columns), processors, qmark)

    def run(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert ``rows`` in ``connection``'s transaction; the rows its ``RETURNING`` gave."""
        values = [self._values(row) for row in rows]
        with driver_cursor(connection, self.sql, values) as cursor:
            return self._execute(cursor, values)

    def _values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            row[column] if process is None else process(row[column])
            for column, process in zip(self.columns, self.processors, strict=True)
        )

    def _execute(self, cursor: Any, values: list[tuple[Any, ...]]) -> list[Any]:
        returned: list[Any] = []
        if self.qmark:  # sqlite3: no rows from executemany, and a statement costs no round trip
            for one in values:
                cursor.execute(self.sql, one)
                returned += cursor.fetchall()
            return returned
        cursor.executemany(self.sql, values, returning=True)  # psycopg: one pipeline
        while True:
            returned += cursor.fetchall()
            if not cursor.nextset():
                return returned


def driver_fetch(connection: Connection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """The rows of ``sql`` (``?`` for each parameter) run on the driver's cursor.

    For a read on every request whose answer is nearly always "none" (a purged id): what
    SQLAlchemy would add is parameter and result processing, which such rows do not need.
    """
    if connection.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    with driver_cursor(connection, sql, parameters) as cursor:
        cursor.execute(sql, tuple(parameters))
        return list(cursor.fetchall())


@contextmanager
def driver_cursor(connection: Connection, sql: str, parameters: Any) -> Iterator[Any]:
    """A cursor of ``connection``'s driver, in its transaction; its errors raised as SQLAlchemy's.

    The exception is the one ``Connection.execute`` would raise (``IntegrityError`` and so
    on), and a disconnect invalidates the connection as SQLAlchemy does: intake retries a
    write whose connection is gone, and a dead connection must not go back to the pool.
    SQLAlchemy's cursor events and echo do not see these statements.
    """
    dialect = connection.dialect
    dbapi = dialect.loaded_dbapi
    pooled = connection.connection
    cursor = pooled.driver_connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, pooled, cursor)
        if gone:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql, parameters, exc, dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from exc
    finally:
        cursor.close()


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """On a SQLite file, one writer at a time: the threads of every process take turns.

    Why: SQLite has one writer at a time, and a writer that finds the database locked
    sleeps in its busy handler, longer each time, before it looks again: far longer
    than the commit it waits for, and unfair, so under threaded web workers a writer could
    wait for seconds while others went ahead. Here the threads of a process queue on a lock
    of the process, and the first of each process on an exclusive ``flock`` of
    ``<database>-writer.lock``: every waiter sleeps (woken as soon as the turn is free, a
    process that dies releases it too), and each process gets its turn however many of its
    threads wait, so a worker's delivery threads do not crowd out a web process's intake.
    Every write transaction holds the turn from before ``BEGIN IMMEDIATE`` until after
    ``COMMIT``, so publisher's writers never meet SQLite's lock: ``BEGIN IMMEDIATE`` and the
    busy timeout are left for writers outside publisher (a ``sqlite3`` shell, a backup).

    A thread that holds the turn keeps it for what it nests inside (like an ``RLock``): a
    group commit's leader takes the turn *before* it takes its batch, so what queues while
    it waits joins the batch, then opens the batch's transaction inside that turn. A writer
    waits as long as the writers ahead of it take to commit, without a timeout of its own.
    Other databases need no lock.
    """
    path = _writer_lock_path(engine)
    if path is None:
        yield
        return
    turns = _turns_of_this_thread()
    if turns.get(path):
        turns[path] += 1
        try:
            yield
        finally:
            turns[path] -= 1
        return
    with _process_lock(path):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:  # e.g. a read-only folder: SQLite's busy timeout between processes
            yield
            return
        holder, held = object(), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is released while it waits
            _held[holder], held, turns[path] = fd, True, 1
            yield
        finally:
            turns.pop(path, None)
            # in a child forked meanwhile, _forget_held_locks closed the descriptor already
            if not held or _held.pop(holder, None) is not None:
                os.close(fd)  # releases the lock


_process_locks: dict[str, threading.Lock] = {}


def _process_lock(path: str) -> threading.Lock:
    """This process's lock for ``path`` (``setdefault``: two threads get the same one)."""
    lock = _process_locks.get(path)
    if lock is None:
        lock = _process_locks.setdefault(path, threading.Lock())
    return lock


_held: dict[object, int] = {}  # the descriptor of every lock this process's writers hold
_threads = threading.local()


def _turns_of_this_thread() -> dict[str, int]:
    """How deep this thread is in the turn of each lock file it holds."""
    if not hasattr(_threads, "turns"):
        _threads.turns = {}
    return _threads.turns  # type: ignore[no-any-return]


def _forget_held_locks() -> None:
    """In a forked child: close the copies of descriptors the parent's writers held.

    A ``flock`` belongs to the open file, which the child's copy keeps open: left alone, the
    lock would outlive the parent's writer and stop every writer until the child exits. The
    process locks are made anew: one a parent's thread held would stay held in the child.
    """
    for fd in _held.values():
        with suppress(OSError):
            os.close(fd)
    _held.clear()
    _process_locks.clear()


forksafe.after_fork(_forget_held_locks)


def _writer_lock_path(engine: Engine) -> str | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{database}-writer.lock"


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic); safe to run on every start.

    Every process runs this as it starts. A store already at :data:`HEAD` is told so by one
    query, and Alembic is never imported: its import and its look at the scripts were a
    large part of every start (``docs/performance.md``, session 8).
    """
    if revision == "head" and schema_revision(url) == HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def schema_revision(url: str) -> str | None:
    """The store's schema revision; None with no schema yet, or none that can be read.

    A SQLite file that does not exist is not created here: a migration must create it in
    its turn (under the writers' lock), never this look.
    """
    url = normalize_url(url)
    if url.startswith("sqlite") and not _sqlite_file_exists(url):
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _sqlite_file_exists(url: str) -> bool:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return Path(database).exists()


class unindexed(FunctionElement[Any]):  # noqa: N801 - reads as SQL: unindexed(column)
    """A column the query planner must not pick an index for (``+column`` on SQLite,
    ``(column || '')`` or ``(column + interval '0')`` on PostgreSQL).

    Without statistics SQLite prefers ``ix_deliveries_due (status, ...)`` for any condition
    on ``status``, so "the pending deliveries of this record" and "these ids, if pending"
    walked every pending delivery. PostgreSQL did the same with statistics taken before a
    burst of new deliveries (they said nothing was pending): one lease of 50 ids took 1.7 s
    with 32,000 pending. Wrapped in ``unindexed`` the condition is checked on the rows the
    selective index (record, or primary key) found, whatever the statistics say.
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


@compiles(unindexed, "postgresql")
def _unindexed_postgresql(element: unindexed, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    kind = getattr(element.type, "impl", element.type)  # a TypeDecorator's own type
    if isinstance(kind, String):
        return f"({column} || '')"
    if isinstance(kind, DateTime):
        return f"({column} + interval '0')"
    raise TypeError(f"unindexed() knows text and instants on PostgreSQL, not {kind!r}")
