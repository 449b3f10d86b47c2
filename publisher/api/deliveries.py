"""``/api/v1/deliveries``: what must still happen, what failed, and redelivery."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, jsonify, request

from publisher import queries
from publisher.api.auth import requires
from publisher.api.records import delivery_dicts
from publisher.api.requests import limit_arg
from publisher.errors import MalformedInput
from publisher.models import Delivery

bp = Blueprint("deliveries", __name__, url_prefix="/api/v1")
STATUSES = ("pending", "done", "dead", "superseded")


@bp.get("/deliveries")
@requires("read")
def list_deliveries() -> Response:
    status = request.args.get("status")
    if status and status not in STATUSES:
        raise MalformedInput(
            f"status must be one of {', '.join(STATUSES)}", errors={"status": ["unknown"]}
        )
    limit = limit_arg(default=200)
    cursor = request.args.get("cursor")
    with current_app.extensions["publisher"].sessions() as session:
        rows, more = queries.list_deliveries(
            session,
            status=status or None,
            output=request.args.get("output") or None,
            after=_decode(cursor) if cursor else None,
            limit=limit,
        )
        items = delivery_dicts(session, rows)
    cursor = _encode(rows[-1]) if more and rows else None
    return jsonify({"items": items, "next_cursor": cursor})


# -- the cursor: the last item's (updated_at, id), newest first, as /api/v1/records pages ----


def _encode(delivery: Delivery) -> str:
    text = json.dumps([delivery.updated_at.isoformat(), delivery.id])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, delivery_id = json.loads(raw)
        instant = datetime.fromisoformat(when)
        if not isinstance(delivery_id, str) or instant.tzinfo is None:
            raise ValueError("not a cursor of this listing")
        instant.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise MalformedInput("invalid cursor", errors={"cursor": ["invalid cursor"]}) from exc
    return instant, delivery_id


@bp.post("/deliveries/<delivery_id>/redeliver")
@requires("admin")
def redeliver(delivery_id: str) -> Response:
    services = current_app.extensions["publisher"]
    delivery = services.dispatcher.redeliver(delivery_id)
    with services.sessions() as session:
        (answer,) = delivery_dicts(session, [session.get(Delivery, delivery.id)])
    response = jsonify(answer)
    response.status_code = 202
    return response
