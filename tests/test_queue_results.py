"""huey keeps no task results: nobody reads them, and kept they would grow for ever."""

from __future__ import annotations

import json

from tests.backends import Backend, backend_fixture, drain  # noqa: F401 - the fixture
from tests.helpers import SECRET, bearer, send


def test_processed_webhooks_and_deliveries_leave_no_results(backend: Backend, make_app) -> None:  # noqa: ANN001
    app = make_app(**backend.overrides(), sources={"cms": {"secrets": [SECRET]}})
    client = app.test_client()
    for n in range(5):
        record = {"id": f"r-{n}", "title": f"T {n}", "published": True}
        assert send(client, json.dumps(record).encode()).status_code == 202
    headers = {**bearer(app, "submit"), "Content-Type": "application/json"}
    body = json.dumps({"id": "api", "title": "T", "published": True})
    assert client.post("/api/v1/records", data=body, headers=headers).status_code == 202
    assert drain(app) > 0  # inbox tasks and delivery tasks ran
    huey = app.extensions["publisher"].huey
    assert huey.storage.result_store_size() == 0
    if backend.scaleout:
        assert list(huey.storage.conn.scan_iter(huey.storage.result_key + "*")) == []
