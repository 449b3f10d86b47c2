"""Endpoint health: per output, consecutive failures and the last success, kept as counts.

Updated in the transaction that settles deliveries (``publisher.dispatch``), so reading them
(``/api/v1/outputs``, ``/metrics``) is one small table, never a scan of the deliveries. A
subscriber (``webhook:*``) failing without a success for ``delivery.pause_after_seconds``
is paused: turned off with a reason starting ``paused:``; its deliveries wait, pending, and
enabling it sends what changed meanwhile, once (the convergence model).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from publisher.models import OutputHealth, OutputState
from publisher.records import instant_text

PAUSED = "paused: "
#: outputs that may be paused for failing; local outputs (files, feeds) are not
PAUSABLE_PREFIX = "webhook:"


def record_success(connection: Connection, output: str, now: datetime) -> None:
    values = {"consecutive_failures": 0, "failing_since": None, "last_success_at": now}
    if not _update(connection, output, values):
        _ensure(connection, output)
        _update(connection, output, values)


def record_failure(connection: Connection, output: str, now: datetime) -> OutputHealth | Any:
    """Count one failed attempt; returns the row as it stands now."""
    _ensure(connection, output)
    connection.execute(
        update(OutputHealth)
        .where(OutputHealth.name == output)
        .values(
            consecutive_failures=OutputHealth.consecutive_failures + 1,
            last_failure_at=now,
        )
    )
    connection.execute(
        update(OutputHealth)
        .where(OutputHealth.name == output, OutputHealth.failing_since.is_(None))
        .values(failing_since=now)
    )
    return connection.execute(select(OutputHealth).where(OutputHealth.name == output)).one()


def pause_reason(row: Any, output: str, after_seconds: float, now: datetime) -> str | None:
    """Why to pause ``output`` now, if its failing has lasted ``after_seconds`` (0: never)."""
    if not after_seconds or not output.startswith(PAUSABLE_PREFIX) or row.failing_since is None:
        return None
    if now - row.failing_since < timedelta(seconds=after_seconds):
        return None
    since = row.failing_since.isoformat().replace("+00:00", "Z")
    return f"{PAUSED}failing since {since} ({row.consecutive_failures} failures in a row)"


def is_paused(state: OutputState | None) -> bool:
    return state is not None and not state.enabled and (state.reason or "").startswith(PAUSED)


def health_of(connection: Connection) -> dict[str, Any]:
    """Every output's kept counts, by name."""
    return {row.name: row for row in connection.execute(select(OutputHealth))}


def health_dict(row: Any) -> dict[str, Any]:
    if row is None:
        return {
            "consecutive_failures": 0,
            "failing_since": None,
            "last_success_at": None,
            "last_failure_at": None,
        }
    return {
        "consecutive_failures": row.consecutive_failures,
        "failing_since": instant_text(row.failing_since),
        "last_success_at": instant_text(row.last_success_at),
        "last_failure_at": instant_text(row.last_failure_at),
    }


def _update(connection: Connection, output: str, values: dict[str, Any]) -> bool:
    result = connection.execute(
        update(OutputHealth).where(OutputHealth.name == output).values(**values)
    )
    return bool(result.rowcount)


def _ensure(connection: Connection, output: str) -> None:
    """The output's row, made if missing; two workers making it at once do not collide."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(OutputHealth).values(name=output, consecutive_failures=0)
    connection.execute(statement.on_conflict_do_nothing(index_elements=["name"]))
