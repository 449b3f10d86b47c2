"""``/metrics``: Prometheus text exposition of this process (see ``publisher/metrics.py``),
and the app's wiring of the metrics: the counting plugin and the timing of each answer.

Public, like ``/healthz``: it holds counts, never record content or secrets. Keep it off
the public internet at the proxy if counts are sensitive for you.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from flask import Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from publisher.api.openapi import Blueprint
from publisher.errors import NotFound
from publisher.metrics import EXTENSION, Metrics, MetricsPlugin

bp = Blueprint("metrics", __name__, description="Operations")
TEXT = {"text/plain": {"schema": {"type": "string"}}}


@bp.get("/metrics")
@bp.doc(responses={"200": {"description": "Metrics of this process", "content": TEXT}})
@bp.errors(404)
def metrics() -> Response:
    """Prometheus metrics (text exposition format)

    404 when metrics are not enabled (`publisher.metrics.register`).
    """
    collected = current_app.extensions.get(EXTENSION)
    if collected is None:  # ``register(app)`` (below) was not called
        raise NotFound("metrics are not enabled")
    return Response(collected.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: Flask) -> Metrics:
    """Wire metrics into ``app`` (idempotent): the counting plugin and HTTP timing."""
    if EXTENSION in app.extensions:
        return app.extensions[EXTENSION]
    services = app.extensions["publisher"]
    metrics = Metrics(services)
    app.extensions[EXTENSION] = metrics
    services.pm.register(MetricsPlugin(metrics), name="publisher-metrics")
    app.before_request(_start_timer)
    app.after_request(functools.partial(_observe, metrics))
    return metrics


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(metrics: Metrics, response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.responses.labels(request.method, route, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def sample(app: Flask, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One sample's value from the app's registry (for tests and the CLI)."""
    value = app.extensions[EXTENSION].registry.get_sample_value(name, dict(labels or {}))
    return value
