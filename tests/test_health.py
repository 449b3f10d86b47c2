"""``/readyz``: ready means "can accept and durably store", nothing more and nothing less."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.backends import SCALEOUT, drop_database, make_backend
from tests.helpers import bearer


def test_ready_on_the_embedded_defaults(client) -> None:  # noqa: ANN001
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        "status": "ok",
        "checks": {"database": "ok", "disk": "ok", "queue": "ok"},
    }


def test_a_full_disk_is_not_ready(make_app, tmp_path: Path) -> None:  # noqa: ANN001
    free = shutil.disk_usage(tmp_path).free
    app = make_app(readiness={"min_free_bytes": free + 2**40})  # more than there is: "full"
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json["status"] == "unavailable" and answer.json["checks"]["disk"] == "full"


def test_a_queue_that_is_down_does_not_make_a_host_unready(make_app) -> None:  # noqa: ANN001
    app = make_app(queue_url="redis://127.0.0.1:1/0?socket_connect_timeout=0.5")
    client = app.test_client()
    headers = {**bearer(app, "submit"), "Content-Type": "application/json"}
    body = json.dumps({"id": "still-taken", "title": "Taken in", "published": True})
    assert client.post("/api/v1/records", data=body, headers=headers).status_code == 202
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.json
    assert answer.json["checks"] == {"database": "ok", "disk": "ok", "queue": "unreachable"}


def test_a_database_that_is_gone_is_not_ready(make_app, tmp_path: Path) -> None:  # noqa: ANN001
    backend = make_backend(SCALEOUT, tmp_path)  # skips (or fails under CI) without PostgreSQL
    try:
        app = make_app(**backend.overrides())
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        app.extensions["publisher"].engine.dispose()
        drop_database(backend.database_url)
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json["checks"]["database"] == "unreachable"
    finally:
        app.extensions["publisher"].close()
        backend.close()
