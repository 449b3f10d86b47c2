"""``POST /webhooks/<source>``: signed deliveries (Standard Webhooks) into the inbox."""

from __future__ import annotations

import threading

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from publisher.api.requests import read_body
from publisher.inbox import InboxProcessor
from publisher.ratelimit import check_source_rate

bp = Blueprint("webhooks", __name__)

EXTENSION = "publisher.inbox"
_lock = threading.Lock()


def inbox_processor(app: Flask) -> InboxProcessor:
    """The app's inbox processor, built on first use (building it registers the huey task).

    A worker must build it before it consumes, or it will not know the ``publisher.inbox``
    task: ``create_app`` calls this once for that reason.
    """
    processor = app.extensions.get(EXTENSION)
    if processor is not None:  # every request but the first: no lock
        return processor
    with _lock:
        processor = app.extensions.get(EXTENSION)
        if processor is None:
            processor = InboxProcessor(
                app.extensions["publisher"], app.extensions["publisher.intake"]
            )
            app.extensions[EXTENSION] = processor
        return processor


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
