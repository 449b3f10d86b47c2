"""``/healthz`` (the process answers) and ``/readyz`` (the store and the queue answer)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from publisher.queue import queue_depth

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    services = current_app.extensions["publisher"]
    checks = {"database": "ok", "queue": "ok"}
    try:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - report, do not raise
        checks["database"] = "unreachable"
    if queue_depth(services.huey) < 0:
        checks["queue"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ok" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
