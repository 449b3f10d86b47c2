"""``POST /webhooks/<source>``: signed deliveries (Standard Webhooks) into the inbox."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from publisher.api.limits import check_source_rate
from publisher.api.requests import read_body
from publisher.inbox import InboxProcessor

bp = Blueprint("webhooks", __name__)

EXTENSION = "publisher.inbox"


def inbox_processor(app: Flask) -> InboxProcessor:
    """The app's inbox processor (``create_app`` builds it, with the services)."""
    return app.extensions[EXTENSION]


@bp.post("/webhooks/<source>")
def receive(source: str) -> Response:
    """Verify over the raw bytes, commit them to the inbox, answer 202 (parsing comes later)."""
    processor = inbox_processor(current_app)
    body = read_body()
    signed = processor.verifier.verify(source, body, request.headers)
    # counted only after verification, so forged requests cannot spend a source's budget
    check_source_rate(current_app, source)
    received = processor.receive(
        source, signed.webhook_id, body, request.headers.get("Content-Type"), g.request_id
    )
    status = "duplicate" if received.duplicate else "accepted"
    response = jsonify({"status": status, "id": signed.webhook_id})
    response.status_code = 202
    return response
