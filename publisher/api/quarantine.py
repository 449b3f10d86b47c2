"""``/api/v1/quarantine``: what could not be taken in, why, and replaying it after a fix."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from publisher.api.auth import requires
from publisher.api.requests import flag_arg, limit_arg
from publisher.api.webhooks import inbox_processor
from publisher.db import transaction
from publisher.quarantine import get_quarantined, list_quarantined, quarantine_dict

bp = Blueprint("quarantine", __name__, url_prefix="/api/v1")


@bp.get("/quarantine")
@requires("read")
def list_items() -> Response:
    """Newest first; filters ``source`` and ``replayed``; cursor pagination."""
    args = request.args
    with current_app.extensions["publisher"].sessions() as session:
        rows, cursor = list_quarantined(
            session,
            source=args.get("source") or None,
            replayed=flag_arg("replayed"),
            cursor=args.get("cursor") or None,
            limit=limit_arg(),
        )
        items = [quarantine_dict(r) for r in rows]
    return jsonify({"items": items, "next_cursor": cursor})


@bp.get("/quarantine/<int:item_id>")
@requires("read")
def show(item_id: int) -> Response:
    with current_app.extensions["publisher"].sessions() as session:
        row = get_quarantined(session, item_id)
    return jsonify(quarantine_dict(row, detail=True))


@bp.post("/quarantine/<int:item_id>/replay")
@requires("admin")
def replay(item_id: int) -> Response:
    """Run the payload through intake again; 422 with field errors if it still fails."""
    outcome = inbox_processor(current_app).replay(item_id)
    return jsonify({"id": outcome.id, "status": outcome.status, "items": outcome.items})


@bp.delete("/quarantine/<int:item_id>")
@requires("admin")
def delete(item_id: int) -> Response:
    """Drop an item for good (a payload nobody will fix); the record store is untouched."""
    with transaction(current_app.extensions["publisher"].sessions) as session:
        session.delete(get_quarantined(session, item_id))
    return Response(status=204)
