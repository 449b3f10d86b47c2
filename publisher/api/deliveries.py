"""``/api/v1/deliveries``: what must still happen, what failed, and redelivery."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from publisher.api.auth import requires
from publisher.api.records import delivery_dicts
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
    query = select(Delivery).order_by(Delivery.updated_at.desc()).limit(200)
    if status:
        query = query.where(Delivery.status == status)
    if request.args.get("output"):
        query = query.where(Delivery.output == request.args["output"])
    with current_app.extensions["publisher"].sessions() as session:
        rows = list(session.scalars(query))
        items = delivery_dicts(session, rows)
    return jsonify({"items": items})


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
