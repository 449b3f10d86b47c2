"""``/api/v1/subscribers``: webhook subscribers added, removed and rotated without a restart.

YAML-configured subscribers are listed too, read-only. A secret is shown only in the answer
that made it (add, rotate-secret).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from publisher import subscribers
from publisher.api.auth import requires
from publisher.api.requests import read_body
from publisher.errors import MalformedInput

bp = Blueprint("subscribers", __name__, url_prefix="/api/v1")


def _services() -> Any:
    return current_app.extensions["publisher"]


def _json_object(empty_ok: bool = False) -> dict[str, Any]:
    body = read_body()
    if not body.strip() and empty_ok:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedInput(
            "the body must be a JSON object", errors={"_body": ["not JSON"]}
        ) from None
    if not isinstance(value, dict):
        raise MalformedInput("the body must be a JSON object", errors={"_body": ["not an object"]})
    return value


@bp.get("/subscribers")
@requires("read")
def list_subscribers() -> Response:
    services = _services()
    return jsonify({"items": subscribers.listing(services.sessions, services.settings)})


@bp.post("/subscribers")
@requires("admin")
def add_subscriber() -> Response:
    """Add one (``name``, ``url``, ``secret`` or a new one, ``events``, ``protected``,
    ``allow_private``); ``backfill: true`` also sends it what is live now."""
    services = _services()
    given = _json_object()
    backfill = given.pop("backfill", False) is True
    answer = subscribers.add(services.sessions, services.settings, given)
    services.dispatcher.refresh(force=True)  # this process at once; the others within seconds
    if backfill:
        answer["backfill"] = services.dispatcher.reconcile(answer["output"])
    response = jsonify(answer)
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/subscribers/{answer['name']}"
    return response


@bp.delete("/subscribers/<name>")
@requires("admin")
def remove_subscriber(name: str) -> Response:
    services = _services()
    subscribers.remove(services.sessions, services.settings, name)
    services.dispatcher.refresh(force=True)
    return Response(status=204)


@bp.post("/subscribers/<name>/rotate-secret")
@requires("admin")
def rotate_secret(name: str) -> Response:
    """A new secret (or the one given); the old one keeps signing beside it for the grace
    (``grace_seconds``, default ``subscribers.rotation_grace_seconds``)."""
    services = _services()
    given = _json_object(empty_ok=True)
    grace = given.get("grace_seconds")
    if grace is not None and (not isinstance(grace, int | float) or isinstance(grace, bool)):
        raise MalformedInput(
            "grace_seconds must be a number", errors={"grace_seconds": ["not a number"]}
        )
    answer = subscribers.rotate(
        services.sessions, services.settings, name, grace, given.get("secret") or None
    )
    services.dispatcher.refresh(force=True)
    return jsonify(answer)
