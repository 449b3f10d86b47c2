"""Endpoint health: kept counts per output, a subscriber paused after failing for the window
(or at once on 410 Gone), visible in the API and /metrics, and on resume sent only what
changed meanwhile, once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer

import pytest
from sqlalchemy import update

from publisher.db import transaction
from publisher.models import OutputHealth, utcnow
from publisher.testing import drain
from tests.helpers import bearer, scrape
from tests.receivers import QuietHandler, serving

OUTPUT = "webhook:search"


class Receiver(QuietHandler):
    """Answers the server's ``status``; records every body it accepted."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        status = self.server.status  # type: ignore[attr-defined]
        if status < 300:
            self.server.received.append((self.headers["webhook-id"], json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    with serving(Receiver, received=[], status=204) as httpd:
        yield httpd


@pytest.fixture
def app(make_app, receiver):  # noqa: ANN001, ANN201
    app = make_app(
        subscribers={"refresh_seconds": 0},
        metrics={"state_refresh_seconds": 0},
        delivery={"retry_schedule": [0, 0.2, 0.2, 0.2, 0.2, 0.2]},
    )
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    body = {"name": "search", "url": url, "allow_private": True}
    assert (
        app.test_client().post("/api/v1/subscribers", json=body, headers=bearer(app)).status_code
        == 201
    )
    return app


def submit(client, auth, rid: str, title: str) -> None:  # noqa: ANN001
    record = {"id": rid, "title": title, "published": True}
    assert client.post("/api/v1/records", json=record, headers=auth).status_code == 202


def output(client, auth) -> dict:  # noqa: ANN001
    items = client.get("/api/v1/outputs", headers=auth).json["items"]
    return next(item for item in items if item["name"] == OUTPUT)


def failing_for_two_days(app) -> None:  # noqa: ANN001
    """As if the failures had started two days ago (the window is a day)."""
    with transaction(app.extensions["publisher"].sessions) as session:
        session.execute(
            update(OutputHealth)
            .where(OutputHealth.name == OUTPUT)
            .values(failing_since=utcnow() - timedelta(days=2))
        )


def test_counts_are_kept_as_deliveries_settle(app, client, auth, receiver):
    receiver.status = 500
    submit(client, auth, "a", "A")
    drain(app)
    failing = output(client, auth)["health"]
    receiver.status = 204
    time.sleep(0.3)  # the retry's time comes
    drain(app)

    healthy = output(client, auth)["health"]
    assert failing["consecutive_failures"] >= 1 and failing["failing_since"]
    assert failing["last_success_at"] is None
    assert healthy["consecutive_failures"] == 0 and healthy["failing_since"] is None
    assert healthy["last_success_at"] and not output(client, auth)["paused"]


def test_a_subscriber_failing_for_the_window_is_paused_then_catches_up_once(
    app, client, auth, receiver
):
    receiver.status = 500
    submit(client, auth, "a", "A")
    drain(app)  # the first failure
    failing_for_two_days(app)
    time.sleep(0.3)
    drain(app)  # the retry fails too: a day and more without a success

    paused = output(client, auth)
    samples = scrape(client)
    submit(client, auth, "a", "A, corrected")  # what changes while it is paused
    submit(client, auth, "c", "C")
    drain(app)
    receiver.status = 204
    enabled = client.post(f"/api/v1/outputs/{OUTPUT}/enable", headers=auth)
    drain(app)
    app.extensions["publisher"].dispatcher.sweep()
    drain(app)

    assert paused["paused"] and not paused["enabled"]
    assert paused["reason"].startswith("paused: failing since")
    failures = paused["health"]["consecutive_failures"]
    assert failures >= 2  # more if a retry came due during a slow drain
    assert samples[("publisher_output_paused", (("output", OUTPUT),))] == 1
    assert samples[("publisher_output_consecutive_failures", (("output", OUTPUT),))] == failures
    assert samples[("publisher_subscriber_pauses_total", (("output", OUTPUT),))] == 1
    assert enabled.status_code == 200 and not enabled.json["paused"]
    titles = sorted(body["data"]["record"]["title"] for _, body in receiver.received)
    assert titles == ["A, corrected", "C"]  # only the latest, each once
    assert len({delivery_id for delivery_id, _ in receiver.received}) == 2


def test_a_410_pauses_at_once(app, client, auth, receiver):
    receiver.status = 410
    submit(client, auth, "a", "A")
    drain(app)

    paused = output(client, auth)
    assert paused["paused"] and paused["reason"] == "paused: subscriber answered 410 Gone"
    assert scrape(client)[("publisher_subscriber_pauses_total", (("output", OUTPUT),))] == 1
    deliveries = client.get("/api/v1/records/a/deliveries", headers=auth).json["items"]
    assert [d["status"] for d in deliveries if d["output"] == OUTPUT] == ["pending"]


def test_local_outputs_are_counted_but_never_paused(make_app, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(
        plugins={"recording": {"fail_flag": str(flag)}}, delivery={"pause_after_seconds": 1}
    )
    client, auth = app.test_client(), bearer(app)
    submit(client, auth, "a", "A")
    drain(app)
    with transaction(app.extensions["publisher"].sessions) as session:
        session.execute(update(OutputHealth).values(failing_since=utcnow() - timedelta(days=2)))
    time.sleep(1.1)
    drain(app)

    flaky = output_named(client, auth, "flaky")
    assert flaky["health"]["consecutive_failures"] >= 2
    assert flaky["enabled"] and not flaky["paused"]


def output_named(client, auth, name: str) -> dict:  # noqa: ANN001
    items = client.get("/api/v1/outputs", headers=auth).json["items"]
    return next(item for item in items if item["name"] == name)
