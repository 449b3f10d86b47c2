"""``/healthz`` (the process answers) and ``/readyz`` (it can accept and durably store).

Readiness is what a load balancer acts on, so it means exactly "a request sent here now
would be taken in and kept": the record store answers, and the file systems it writes to
(the database's, for SQLite, and the data folder) have room. The queue is reported but is
not part of it: with the queue down, intake still commits (records and webhooks) and the
sweeper enqueues what was stored once the queue is back, so pulling the host would turn a
delay into an outage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flask import current_app
from marshmallow import fields, validate
from sqlalchemy import text
from sqlalchemy.engine import make_url

from publisher.api.openapi import Blueprint
from publisher.api.schemas import Closed
from publisher.taskqueue import queue_depth

bp = Blueprint("health", __name__, description="Operations")
#: free space below which a file system counts as full (``readiness.min_free_bytes``)
DEFAULT_MIN_FREE = 64 * 1024 * 1024


class HealthSchema(Closed):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadinessSchema(Closed):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(["ok", "unreachable", "full"])),
        required=True,
        metadata={
            "description": "`database` (ok, unreachable) and `disk` (ok, full, unreachable) "
            "decide readiness; `queue` (ok, unreachable) is reported only: intake works "
            "without it"
        },
    )


@bp.get("/healthz")
@bp.response(200, HealthSchema, description="Alive")
def healthz() -> Any:
    """Liveness: the process answers"""
    return {"status": "ok"}


@bp.get("/readyz")
@bp.response(200, ReadinessSchema, description="Ready")
@bp.alt_response(503, schema=ReadinessSchema, description="Not ready: `checks` says what failed")
def readyz() -> Any:
    """Readiness: this process can accept and durably store"""
    services = current_app.extensions["publisher"]
    checks = {"database": _database(services), "disk": _disk(services.settings)}
    ready = all(v == "ok" for v in checks.values())
    checks["queue"] = "ok" if queue_depth(services.huey) >= 0 else "unreachable"  # reported only
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def _database(services: Any) -> str:
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - report, do not raise
        return "unreachable"
    return "ok"


def _disk(settings: dict[str, Any]) -> str:
    """``full`` when a file system intake writes to has less than the threshold free."""
    least = int((settings.get("readiness") or {}).get("min_free_bytes", DEFAULT_MIN_FREE))
    for folder in _folders(settings):
        try:
            if shutil.disk_usage(folder).free < least:
                return "full"
        except OSError:
            return "unreachable"
    return "ok"


def _folders(settings: dict[str, Any]) -> list[Path]:
    """The data folder, and the SQLite database's folder (a server database has its own)."""
    folders = [Path(settings["data_dir"])]
    url = make_url(settings["database_url"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folders.append(Path(url.database).parent)
    return [_existing(folder) for folder in folders]


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
