"""The backends the storage and dispatch tests run on: the embedded defaults, and
PostgreSQL + Redis.

``backend`` is parametrised over both; a test that takes it (or ``backend_app``) runs once
per backend. The PostgreSQL + Redis run gets a fresh database (``CREATE DATABASE pub_<hex>``,
dropped after) and a huey queue name of its own on Redis (``?name=pubtest_<hex>``, its keys
deleted after; never ``FLUSHALL``), so it can share both servers with other test runs.

Where the servers are: ``PUBLISHER_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``, a database we may ``CREATE DATABASE``
from) and ``PUBLISHER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Unreachable:
the test is skipped with the reason, except under ``CI=true``, where it fails.

Use from a test module with ``from tests.backends import backend_fixture, backend_app_fixture``
(the fixtures are named ``backend``, ``backend_app`` and ``scaleout_backend``), or list
``tests.backends`` in the root conftest's ``pytest_plugins``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from publisher.testing import drain as testing_drain

POSTGRES_URL = os.environ.get(
    "PUBLISHER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PUBLISHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EMBEDDED = "embedded"
SCALEOUT = "postgres+redis"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _libpq(url: str, database: str | None = None) -> str:
    """The SQLAlchemy URL as a psycopg conninfo string (for admin statements)."""
    parsed = make_url(url)
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": database or parsed.database or "postgres",
        "connect_timeout": 3,
    }
    if parsed.password:
        parts["password"] = parsed.password
    return " ".join(f"{key}={value}" for key, value in parts.items())


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@functools.cache
def postgres_problem() -> str | None:
    """None when PostgreSQL answers and lets us create databases, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as connection:
            row = connection.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if not row or not row[0]:
                return f"the PostgreSQL user of {POSTGRES_URL} may not CREATE DATABASE"
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"PostgreSQL unreachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}".strip()
    return None


@functools.cache
def redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis (the Python client) is not installed"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001
        return f"Redis unreachable at {REDIS_URL}: {type(exc).__name__}: {exc}"
    return None


def require_scaleout() -> None:
    """Skip (laptop) or fail (CI=true) when PostgreSQL or Redis is not there."""
    problems = [p for p in (postgres_problem(), redis_problem()) if p]
    if not problems:
        return
    reason = "; ".join(problems) + " (start them, or see .ci/run)"
    if in_ci():
        pytest.fail(f"CI=true and the scale-out services are missing: {reason}", pytrace=False)
    pytest.skip(f"scale-out backend not available: {reason}")


def create_database() -> str:
    """A fresh, empty PostgreSQL database; returns its SQLAlchemy URL."""
    import psycopg

    name = f"pub_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return with_database(POSTGRES_URL, name)


def drop_database(url: str) -> None:
    import psycopg

    name = make_url(url).database
    assert name and name.startswith("pub_"), name  # never drop anything we did not create
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_queue_url() -> str:
    """A Redis queue URL with a huey name nobody else uses."""
    separator = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{separator}name=pubtest_{uuid.uuid4().hex[:16]}"


def flush_queue(queue_url: str) -> None:
    """Delete the keys of this queue name only (queue, schedule, results)."""
    from publisher.taskqueue import make_huey

    huey = make_huey(queue_url)
    huey.storage.flush_all()
    huey.storage.conn.close()


@dataclass
class Backend:
    """Where one test's records and queue live."""

    name: str
    database_url: str
    queue_url: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def scaleout(self) -> bool:
        return self.name == SCALEOUT

    def overrides(self) -> dict[str, Any]:
        return {"database_url": self.database_url, "queue_url": self.queue_url}

    def close(self) -> None:
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception as exc:  # noqa: BLE001 - report, then go on cleaning
                print(f"backend cleanup failed: {exc}")  # noqa: T201


def make_backend(name: str, tmp_path: Path) -> Backend:
    if name == EMBEDDED:
        data = tmp_path / "data"
        return Backend(name, f"sqlite:///{data / 'publisher.db'}", str(data / "queue.db"))
    require_scaleout()
    database_url = create_database()
    queue_url = redis_queue_url()
    backend = Backend(name, database_url, queue_url)
    backend.cleanups.append(lambda: drop_database(database_url))
    backend.cleanups.append(lambda: flush_queue(queue_url))
    return backend


@pytest.fixture(
    name="backend",
    params=[EMBEDDED, pytest.param(SCALEOUT, marks=pytest.mark.scaleout)],
)
def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn: the embedded defaults, then PostgreSQL + Redis."""
    made = make_backend(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture(name="scaleout_backend")
def scaleout_backend_fixture(tmp_path: Path) -> Iterator[Backend]:
    """PostgreSQL + Redis only (for tests with several processes)."""
    made = make_backend(SCALEOUT, tmp_path)
    yield made
    made.close()


@pytest.fixture(name="backend_app")
def backend_app_fixture(backend: Backend, make_app: Callable[..., Flask]) -> Flask:
    """An app on ``backend`` (apps are closed by ``make_app`` before the backend is dropped)."""
    return make_app(**backend.overrides())


def drain(app: Flask, limit: int = 1000) -> int:
    """Run every task due now, as a worker would, on any huey storage (up to ``limit``)."""
    return testing_drain(app, rounds=limit)
