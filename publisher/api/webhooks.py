"""``POST /webhooks/<source>``: signed deliveries (Standard Webhooks) into the inbox."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, request
from marshmallow import fields, validate

from publisher.api.limits import check_source_rate
from publisher.api.openapi import Blueprint
from publisher.api.records import record_body
from publisher.api.requests import read_body
from publisher.api.schemas import Closed
from publisher.inbox import InboxProcessor

bp = Blueprint("webhooks", __name__, description="Webhooks")


class WebhookAnswerSchema(Closed):
    """A webhook delivery was verified and kept (or recognised as a repeat)."""

    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate"]))
    id = fields.String(required=True, metadata={"description": "the webhook-id"})


EXTENSION = "publisher.inbox"


def inbox_processor(app: Flask) -> InboxProcessor:
    """The app's inbox processor (``create_app`` builds it, with the services)."""
    return app.extensions[EXTENSION]


@bp.post("/webhooks/<source>")
@bp.response(
    202,
    WebhookAnswerSchema,
    description="Verified and kept, parsed and stored next (`duplicate`: a repeated "
    "webhook-id, taken in once)",
)
@bp.errors(401, 413, 429, 503)
@bp.doc(requestBody=record_body("The payload: records, as for `POST /api/v1/records`"))
def receive(source: str) -> Any:
    """Receive a Standard Webhooks delivery from a source

    Signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
    with the source's secret, over the raw body: verified over the raw bytes, committed to
    the inbox, answered 202; parsing comes later (the body is documented, never parsed here).
    """
    processor = inbox_processor(current_app)
    body = read_body()
    signed = processor.verifier.verify(source, body, request.headers)
    # counted only after verification, so forged requests cannot spend a source's budget
    check_source_rate(current_app, source)
    received = processor.receive(
        source, signed.webhook_id, body, request.headers.get("Content-Type"), g.request_id
    )
    status = "duplicate" if received.duplicate else "accepted"
    return {"status": status, "id": signed.webhook_id}
