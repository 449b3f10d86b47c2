"""``/api/v1/quarantine``: what could not be taken in, why, and replaying it after a fix."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from marshmallow import fields, validate

from publisher.api.auth import requires
from publisher.api.openapi import Blueprint
from publisher.api.schemas import (
    Closed,
    Flag,
    Instant,
    QuerySchema,
    SubmitItemSchema,
    cursor_field,
    limit_field,
    messages,
)
from publisher.api.webhooks import inbox_processor
from publisher.db import transaction
from publisher.quarantine import get_quarantined, list_quarantined, quarantine_dict

bp = Blueprint("quarantine", __name__, url_prefix="/api/v1", description="Quarantine")


class QuarantineQuerySchema(QuerySchema):
    source = fields.String(metadata={"description": "only items from this source"})
    replayed = Flag(metadata={"description": "only (not) replayed items"})
    cursor = cursor_field()
    limit = limit_field()


class QuarantineItemSchema(Closed):
    """A payload that could not be taken in, with the reason."""

    id = fields.Integer(required=True)
    source = fields.String(required=True)
    content_type = fields.String(required=True)
    reason = fields.String(required=True, metadata={"example": "secured"})
    errors = messages()
    record_id = fields.String(required=True, allow_none=True)
    created_at = Instant(required=True)
    replayed_at = Instant(required=True, allow_none=True)
    payload = fields.String(metadata={"description": "the payload as text (detail only)"})


class QuarantineListSchema(Closed):
    items = fields.List(fields.Nested(QuarantineItemSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ReplayedSchema(Closed):
    id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["replayed", "quarantined"]))
    items = fields.List(fields.Nested(SubmitItemSchema), required=True)


@bp.get("/quarantine")
@requires("read")
@bp.arguments(QuarantineQuerySchema, location="query")
@bp.response(200, QuarantineListSchema, description="Quarantined payloads")
def list_items(args: dict[str, Any]) -> Any:
    """List quarantined payloads, newest first"""
    with current_app.extensions["publisher"].sessions() as session:
        rows, cursor = list_quarantined(
            session,
            source=args.get("source"),
            replayed=args.get("replayed"),
            cursor=args.get("cursor"),
            limit=args["limit"],
        )
        items = [quarantine_dict(r) for r in rows]
    return {"items": items, "next_cursor": cursor}


@bp.get("/quarantine/<int:item_id>")
@requires("read")
@bp.response(200, QuarantineItemSchema, description="The item, with its payload as text")
@bp.errors(404)
def show(item_id: int) -> Any:
    """Read a quarantined payload"""
    with current_app.extensions["publisher"].sessions() as session:
        row = get_quarantined(session, item_id)
    return quarantine_dict(row, detail=True)


@bp.post("/quarantine/<int:item_id>/replay")
@requires("admin")
@bp.response(200, ReplayedSchema, description="Taken in again (or held again by the policy)")
@bp.errors(400, 404, 409, 413, 415, 422)
def replay(item_id: int) -> Any:
    """Take a quarantined payload in again

    409 if already replayed; a payload still refused keeps its item, with the new errors
    (422).
    """
    outcome = inbox_processor(current_app).replay(item_id)
    return {"id": outcome.id, "status": outcome.status, "items": outcome.items}


@bp.delete("/quarantine/<int:item_id>")
@requires("admin")
@bp.response(204, description="Deleted")
@bp.errors(404)
def delete(item_id: int) -> Response:
    """Delete a quarantined payload for good (the record store is untouched)"""
    with transaction(current_app.extensions["publisher"].sessions) as session:
        session.delete(get_quarantined(session, item_id))
    return Response(status=204)
