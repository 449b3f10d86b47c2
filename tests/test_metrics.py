"""``/metrics``: Prometheus text that parses, and counters that move as records flow."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import update

from publisher.api import metrics
from publisher.models import Delivery, utcnow
from publisher.testing import drain
from tests.helpers import bearer, scrape


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def app(make_app, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(
        plugins={"recording": {"fail_flag": str(flag)}},
        metrics={"state_refresh_seconds": 0},  # count on every scrape: exact gauges
    )
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


def test_process_and_platform_collectors_and_no_created_series(app, client):
    client.get("/healthz")
    samples = scrape(client)
    names = {name for name, _ in samples}
    assert "process_cpu_seconds_total" in names
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names
    assert "python_gc_collections_total" in names
    assert not [name for name in names if name.endswith("_created")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_gauges_are_counted_at_most_once_per_interval_in_the_background(make_app, seed_json):
    app = make_app(metrics={"state_refresh_seconds": 60})
    client = app.test_client()
    auth = bearer(app)
    state = app.extensions[metrics.EXTENSION].state
    state.clock = clock = Clock()
    counted = []
    count = state._counts
    state._counts = lambda: counted.append(1) or count()

    first = scrape(client)  # the first scrape counts: there is no snapshot yet
    assert value(first, "publisher_deliveries_current", status="pending") == 0
    assert post(client, auth, dict(seed_json, published=True)).status_code == 202
    for _ in range(20):
        again = scrape(client)
    assert len(counted) == 1  # twenty scrapes, no count: the snapshot is fresh
    assert value(again, "publisher_deliveries_current", status="pending") == 0
    clock.now += 30
    assert value(scrape(client), "publisher_state_age_seconds") == 30

    clock.now += 31  # stale: the next scrape answers at once and starts one recount
    stale = scrape(client)
    assert value(stale, "publisher_deliveries_current", status="pending") == 0
    deadline = time.monotonic() + 10
    while len(counted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    while state._counting.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    fresh = scrape(client)
    assert len(counted) == 2
    assert value(fresh, "publisher_deliveries_current", status="pending") >= 3
    assert value(fresh, "publisher_state_age_seconds") == 0
