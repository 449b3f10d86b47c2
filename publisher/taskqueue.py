"""The huey instance behind background work, chosen by ``PUBLISHER_QUEUE_URL``.

A plain path or ``sqlite:///path`` is huey's SQLite storage (nothing to install);
``redis://...`` is huey on Redis, for many worker hosts; ``memory://`` is for tests.

On Redis the queue's keys are ``huey.redis.<name>``, ``huey.schedule.<name>`` and
``huey.results.<name>``, with ``<name>`` ``publisher`` unless the URL says otherwise:
``redis://host:6379/0?name=staging`` lets several deployments (or test runs) share one
Redis without seeing each other's tasks. Every web and worker process of one deployment
must use the same URL.

On SQLite the queue commits without an fsync (WAL, ``synchronous=NORMAL``): a message is
only a hint to look at a row of the record store, which is durable; a message lost to a
power cut is sent again by the sweeper (``Dispatcher.sweep``, the inbox's sweep). A process
crash loses nothing, and the file stays consistent either way. An enqueue then costs a
fraction of what it did with an fsync (``docs/performance.md``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def split_queue_name(queue_url: str, default: str = "publisher") -> tuple[str, str]:
    """``redis://h/0?name=x&socket_timeout=5`` -> (``redis://h/0?socket_timeout=5``, ``x``).

    ``name`` is publisher's; every other query parameter is redis-py's and is kept.
    """
    parts = urlsplit(queue_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [value for key, value in query if key == "name" and value]
    rest = [(key, value) for key, value in query if key != "name"]
    url = urlunsplit(parts._replace(query=urlencode(rest)))
    return url, names[-1] if names else default


class QueueStorage(SqliteStorage):
    """huey's SQLite storage, committing without an fsync (see the module's docstring)."""

    def _create_connection(self) -> sqlite3.Connection:
        connection = super()._create_connection()
        connection.execute("pragma synchronous=NORMAL")
        return connection


def make_huey(queue_url: str, *, name: str = "publisher") -> Huey:
    """Build the huey instance (once per app or worker, never at import).

    ``results=False``: no task of publisher's returns anything anyone reads (the state is in
    the record store), and huey would otherwise keep every return value for ever (Redis
    ``huey.results.<name>`` keys without expiry, the ``kv`` table of the SQLite queue).
    """
    if queue_url.startswith(REDIS_SCHEMES):
        url, name = split_queue_name(queue_url, name)
        return RedisHuey(name, url=url, utc=True, results=False)
    if queue_url.startswith("memory://"):
        return MemoryHuey(name, utc=True, results=False)
    path = queue_url.removeprefix("sqlite:///").removeprefix("sqlite://")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(
        name,
        filename=path,
        utc=True,
        timeout=30,
        storage_class=QueueStorage,
        results=False,
    )


def queue_depth(huey: Huey) -> int:
    """Tasks waiting in the queue (not counting scheduled retries)."""
    try:
        return int(huey.pending_count())
    except Exception:  # noqa: BLE001 - a metric must not fail a scrape
        return -1
