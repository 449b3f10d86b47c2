"""``/api/v1/deliveries``: what must still happen, what failed, and redelivery."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from marshmallow import fields

from publisher import queries
from publisher.api.auth import requires
from publisher.api.openapi import Blueprint
from publisher.api.records import delivery_dicts
from publisher.api.schemas import (
    DELIVERY_STATUSES,
    DeliveryListSchema,
    DeliverySchema,
    QuerySchema,
    choice_field,
    cursor_field,
    limit_field,
)
from publisher.errors import MalformedInput
from publisher.models import Delivery

bp = Blueprint("deliveries", __name__, url_prefix="/api/v1", description="Deliveries")


class DeliveryQuerySchema(QuerySchema):
    status = choice_field(DELIVERY_STATUSES, "delivery status")
    output = fields.String(metadata={"description": "only deliveries to this output"})
    cursor = cursor_field()
    limit = limit_field()  # as every list's (docs/decisions/page-sizes.md)


class DeliveryPageSchema(DeliveryListSchema):
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "pass as `cursor`; null at the end"},
    )


@bp.get("/deliveries")
@requires("read")
@bp.arguments(DeliveryQuerySchema, location="query")
@bp.response(200, DeliveryPageSchema, description="A page of deliveries")
def list_deliveries(args: dict[str, Any]) -> Any:
    """List deliveries, most recently changed first

    `limit` 1-500 (default 50); `next_cursor` gives the next page. 400 for a bad `status`,
    `cursor` or `limit`.
    """
    cursor = args.get("cursor")
    with current_app.extensions["publisher"].sessions() as session:
        rows, more = queries.list_deliveries(
            session,
            status=args.get("status") or None,
            output=args.get("output") or None,
            after=_decode(cursor) if cursor else None,
            limit=args["limit"],
        )
        items = delivery_dicts(session, rows)
    cursor = _encode(rows[-1]) if more and rows else None
    return {"items": items, "next_cursor": cursor}


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
@bp.response(202, DeliverySchema, description="The delivery, pending again")
@bp.errors(404)
def redeliver(delivery_id: str) -> Any:
    """Make a delivery pending again (same id, fresh schedule)"""
    services = current_app.extensions["publisher"]
    delivery = services.dispatcher.redeliver(delivery_id)
    with services.sessions() as session:
        (answer,) = delivery_dicts(session, [session.get(Delivery, delivery.id)])
    return answer
