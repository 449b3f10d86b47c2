"""The huey instance behind background work, chosen by ``PUBLISHER_QUEUE_URL``.

A plain path or ``sqlite:///path`` is huey's SQLite storage (nothing to install);
``redis://...`` is huey on Redis, for many worker hosts; ``memory://`` is for tests.
"""

from __future__ import annotations

from pathlib import Path

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey


def make_huey(queue_url: str, *, name: str = "publisher") -> Huey:
    """Build the huey instance (once per app or worker, never at import)."""
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name, url=queue_url, utc=True)
    if queue_url.startswith("memory://"):
        return MemoryHuey(name, utc=True)
    path = queue_url.removeprefix("sqlite:///").removeprefix("sqlite://")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=path, utc=True, timeout=30)


def queue_depth(huey: Huey) -> int:
    """Tasks waiting in the queue (not counting scheduled retries)."""
    try:
        return int(huey.pending_count())
    except Exception:  # noqa: BLE001 - a metric must not fail a scrape
        return -1
