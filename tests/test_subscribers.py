"""Subscribers managed live: added, rotated and removed through the API and the CLI, taking
effect in every process without a restart; a receiver verifies with the standardwebhooks
library, holding either secret during a rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from publisher.testing import drain
from tests.helpers import bearer
from tests.receivers import QuietHandler, serving

YAML_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class Receiver(QuietHandler):
    """Records each delivery's body and which of the server's ``secrets`` verify it."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        verified = []
        for secret in self.server.secrets:  # type: ignore[attr-defined]
            try:
                Webhook(secret).verify(body, headers)
                verified.append(secret)
            except WebhookVerificationError:
                pass
        self.server.received.append((json.loads(body), verified))  # type: ignore[attr-defined]
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    with serving(Receiver, received=[], secrets=[]) as httpd:
        yield httpd


def url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/hook"


@pytest.fixture
def two_processes(make_app):  # noqa: ANN001, ANN201
    """Two apps on one database and queue: an API server and a worker, as deployed."""
    settings = {
        "subscribers": {"refresh_seconds": 0},
        "plugins": {
            "webhook": {
                "subscribers": [
                    {"name": "yaml-one", "url": "http://127.0.0.1:9/x", "secret": YAML_SECRET}
                ]
            }
        },
    }
    return make_app(**settings), make_app(**settings)


def add(app, receiver, **extra):  # noqa: ANN001, ANN201
    body = {"name": "search", "url": url(receiver), "allow_private": True, **extra}
    answer = app.test_client().post("/api/v1/subscribers", json=body, headers=bearer(app))
    assert answer.status_code == 201, answer.json
    receiver.secrets.append(answer.json["secret"])
    return answer.json


def submit(app, title: str) -> None:  # noqa: ANN001
    record = {"id": title.lower().replace(" ", "-"), "title": title, "published": True}
    answer = app.test_client().post("/api/v1/records", json=record, headers=bearer(app))
    assert answer.status_code == 202, answer.json


def titles(receiver) -> list[str]:  # noqa: ANN001
    return [body["data"]["record"]["title"] for body, _ in receiver.received]


def test_a_subscriber_added_through_the_api_receives_the_next_record_in_another_process(
    two_processes, receiver
):
    api, worker = two_processes
    submit(api, "Before")  # published before the subscriber existed: not sent (no backfill)
    drain(worker)

    added = add(api, receiver)
    submit(worker, "After")  # the worker process never restarted
    drain(worker)

    assert added["output"] == "webhook:search" and added["secret"].startswith("whsec_")
    assert titles(receiver) == ["After"]
    assert all(verified == [added["secret"]] for _, verified in receiver.received)


def test_listing_shows_yaml_ones_read_only_and_never_a_secret(two_processes, receiver):
    api, _ = two_processes
    add(api, receiver)
    client = api.test_client()

    listed = client.get("/api/v1/subscribers", headers=bearer(api, "read")).json["items"]

    assert [(s["name"], s["source"]) for s in listed] == [("yaml-one", "config"), ("search", "api")]
    assert "whsec_" not in json.dumps(listed)
    assert client.delete("/api/v1/subscribers/yaml-one", headers=bearer(api)).status_code == 409
    dup = client.post(
        "/api/v1/subscribers", json={"name": "yaml-one", "url": url(receiver)}, headers=bearer(api)
    )
    assert dup.status_code == 409
    bad = client.post(
        "/api/v1/subscribers", json={"name": "x", "url": "ftp://x"}, headers=bearer(api)
    )
    assert bad.status_code == 422 and "url" in bad.json["errors"]
    assert (
        client.post(
            "/api/v1/subscribers", json={"name": "y"}, headers=bearer(api, "read")
        ).status_code
        == 403
    )


def test_after_rotate_secret_a_receiver_holding_either_secret_verifies_every_delivery(
    two_processes, receiver
):
    api, worker = two_processes
    old = add(api, receiver)["secret"]
    rotated = (
        api.test_client()
        .post("/api/v1/subscribers/search/rotate-secret", json={}, headers=bearer(api))
        .json
    )
    new = rotated["secret"]
    receiver.secrets.append(new)

    for title in ("One", "Two", "Three"):
        submit(worker, title)
    drain(worker)

    assert new != old and rotated["signing_secrets"] == 2
    assert titles(receiver) == ["One", "Two", "Three"]
    assert all(sorted(verified) == sorted([old, new]) for _, verified in receiver.received)


def test_when_the_grace_ends_only_the_new_secret_signs(two_processes, receiver):
    api, worker = two_processes
    old = add(api, receiver)["secret"]
    new = (
        api.test_client()
        .post(
            "/api/v1/subscribers/search/rotate-secret",
            json={"grace_seconds": 0},
            headers=bearer(api),
        )
        .json["secret"]
    )
    receiver.secrets.append(new)

    submit(worker, "Later")
    drain(worker)

    assert [verified for _, verified in receiver.received] == [[new]]
    assert old in receiver.secrets


@pytest.mark.parametrize("grace", [-3.2e170, 1e300, -1])
def test_a_grace_out_of_range_is_refused_not_a_500(two_processes, receiver, grace):
    """Found by schemathesis: a timedelta of 1e170 seconds overflowed into a 500."""
    api, _worker = two_processes
    add(api, receiver)
    answer = api.test_client().post(
        "/api/v1/subscribers/search/rotate-secret",
        json={"grace_seconds": grace},
        headers=bearer(api),
    )
    assert (answer.status_code, answer.json["code"]) == (422, "invalid")
    assert set(answer.json["errors"]) == {"grace_seconds"}


def test_a_removed_subscriber_gets_nothing_more(two_processes, receiver):
    api, worker = two_processes
    add(api, receiver)
    assert (
        api.test_client().delete("/api/v1/subscribers/search", headers=bearer(api)).status_code
        == 204
    )

    submit(worker, "Unseen")
    drain(worker)

    assert receiver.received == []


def test_the_cli_adds_lists_rotates_and_removes(app, invoke, receiver):
    added = json.loads(
        invoke("subscribers", "add", "cli-one", "--url", url(receiver), "--allow-private").output
    )
    assert added["secret"].startswith("whsec_")
    listed = [json.loads(line) for line in invoke("subscribers", "list").output.splitlines()]
    assert [s["name"] for s in listed] == ["cli-one"]
    rotated = json.loads(invoke("subscribers", "rotate-secret", "cli-one").output)
    assert rotated["secret"] != added["secret"]
    assert invoke("subscribers", "remove", "cli-one").exit_code == 0
    assert invoke("subscribers", "list").output == ""
