"""``/metrics``: Prometheus text exposition of this process (see ``publisher/metrics.py``).

Public, like ``/healthz``: it holds counts, never record content or secrets. Keep it off
the public internet at the proxy if counts are sensitive for you.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST

from publisher.errors import NotFound
from publisher.metrics import EXTENSION

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    collected = current_app.extensions.get(EXTENSION)
    if collected is None:  # ``publisher.metrics.register(app)`` was not called
        raise NotFound("metrics are not enabled")
    return Response(collected.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
