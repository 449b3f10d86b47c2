"""``/metrics``: Prometheus text that parses, and counters that move as records flow."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from publisher import metrics
from publisher.models import Delivery, utcnow
from tests.conftest import drain


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def app(make_app, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(plugins={"recording": {"fail_flag": str(flag)}})
    metrics.register(app)  # idempotent: create_app may already have done it
    return app


def post(client, auth, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/api/v1/records", data=data, headers={**auth, "Content-Type": content_type})


def test_counters_move_as_records_flow(app, client, auth, seed_json):
    before = scrape(client)
    assert value(before, "publisher_records_received_total", source="api") == 0

    assert post(client, auth, dict(seed_json, published=True)).status_code == 202
    assert post(client, auth, dict(seed_json, title="")).status_code == 422
    assert post(client, auth, b"{nope", "application/json").status_code == 400
    assert post(client, auth, b"x", "text/csv").status_code == 415
    pending = scrape(client)
    assert value(pending, "publisher_deliveries_current", status="pending") >= 3
    assert value(pending, "publisher_queue_depth") >= 1
    drain(app)

    after = scrape(client)
    assert value(after, "publisher_records_received_total", source="api") == 2
    assert value(after, "publisher_records_accepted_total", event="published") == 1
    assert value(after, "publisher_records_rejected_total", reason="invalid") == 1
    assert value(after, "publisher_records_rejected_total", reason="malformed") == 1
    assert value(after, "publisher_records_rejected_total", reason="unsupported_media_type") == 1
    ok = value(after, "publisher_deliveries_total", output="recorder", outcome="succeeded")
    assert ok == 1
    assert value(after, "publisher_deliveries_total", output="flaky", outcome="failed") == 1
    assert value(after, "publisher_queue_depth") == 0
    route = {"method": "POST", "route": "/api/v1/records"}
    assert value(after, "publisher_http_responses_total", status="202", **route) == 1
    assert value(after, "publisher_http_responses_total", status="422", **route) == 1
    assert value(after, "publisher_http_request_duration_seconds_count", **route) == 4


def test_dead_deliveries_are_counted_from_the_store(app, client, auth, seed_json):
    post(client, auth, dict(seed_json, published=True))
    for _ in range(5):  # retry schedule [0, 1, 2]: three attempts, then dead
        drain(app)
        with app.extensions["publisher"].sessions() as session:
            session.execute(update(Delivery).values(next_attempt_at=utcnow()))
            session.commit()
        app.extensions["publisher"].dispatcher.sweep(grace=0)
    samples = scrape(client)
    assert value(samples, "publisher_deliveries_current", status="dead") == 1
    assert value(samples, "publisher_deliveries_total", output="flaky", outcome="dead") == 1


def test_unmatched_routes_do_not_make_a_label_per_path(app, client):
    client.get("/no/such/thing/1")
    client.get("/no/such/thing/2")
    samples = scrape(client)
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(samples, "publisher_http_responses_total", **unmatched) == 2
    assert not any("/no/such" in str(labels) for _, labels in samples)


def test_each_app_has_its_own_registry(make_app, app, client):
    other = make_app()
    metrics.register(other)
    client.get("/healthz")
    route = {"method": "GET", "route": "/healthz", "status": "200"}
    assert metrics.sample(app, "publisher_http_responses_total", route) == 1
    assert metrics.sample(other, "publisher_http_responses_total", route) is None


def test_register_is_idempotent(app):
    assert metrics.register(app) is metrics.register(app)
