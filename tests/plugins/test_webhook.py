"""The webhook outputs against a real HTTP receiver on 127.0.0.1 that verifies signatures."""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from publisher.errors import ConfigError
from publisher.outputs import DeliveryError, Event, OutputRecord
from publisher_plugins import webhook
from tests.receivers import QuietHandler, serving

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver(QuietHandler):
    """Answers by path: /ok verifies the signature; /gone, /busy, ... answer as named."""

    received: list[tuple[dict[str, str], bytes, bool]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        self.server.received.append((headers, body, verified))  # type: ignore[attr-defined]
        status, extra = {
            "/ok": (204 if verified else 400, {}),
            "/gone": (410, {}),
            "/busy": (429, {"Retry-After": "120"}),
            "/busy-date": (
                503,
                {"Retry-After": email.utils.formatdate(time.time() + 60, usegmt=True)},
            ),
            "/busy-bare": (503, {}),
            "/broken": (500, {}),
            "/moved": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}),
        }.get(self.path, (404, {}))
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    with serving(Receiver, received=[]) as httpd:
        yield httpd


def base_url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def outputs(**options: Any) -> list[webhook.WebhookOutput]:
    return webhook.register_outputs(config={"plugins": {"webhook": options}})


def one(url: str, **sub: Any) -> webhook.WebhookOutput:
    (output,) = outputs(subscribers=[{"name": "down", "url": url, "secret": SECRET, **sub}])
    return output


RECORD = OutputRecord(
    id="rec-1",
    revision=3,
    fields={"title": 'Caf\u00e9 <b> & "quotes" \U0001f600', "topics": ["AI"]},
    body="Body",
    protected={"salary": 1},
)


def event(kind: str = "published", delivery_id: str = "dlv-1") -> Event:
    return Event(
        kind=kind,  # type: ignore[arg-type]
        delivery_id=delivery_id,
        record_id="rec-1",
        revision=3,
        occurred_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )


def test_every_event_is_signed_and_verified_downstream(server: ThreadingHTTPServer) -> None:
    output = one(base_url(server) + "/ok", allow_private=True)
    assert output.name == "webhook:down" and output.accepts_protected is False
    for number, kind in enumerate(("published", "updated", "retracted")):
        ev = event(kind, f"dlv-{number}")
        if kind == "retracted":
            output.retract(RECORD, ev)
        else:
            output.publish(RECORD, ev)
    assert [verified for _, _, verified in server.received] == [True, True, True]  # type: ignore[attr-defined]
    headers, body, _ = server.received[0]  # type: ignore[attr-defined]
    assert headers["webhook-id"] == "dlv-0"
    payload = json.loads(body)
    assert payload["type"] == "record.published"
    assert payload["timestamp"] == "2024-05-01T12:00:00Z"
    assert payload["data"]["id"] == "rec-1" and payload["data"]["revision"] == 3
    assert payload["data"]["record"]["title"] == RECORD.fields["title"]
    assert "protected" not in payload["data"]
    assert json.loads(server.received[2][1])["type"] == "record.retracted"  # type: ignore[attr-defined]
    # The same signature does not cover an altered body.
    altered = body.replace(b"rec-1", b"rec-2")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(altered, headers)


def test_protected_fields_only_for_cleared_subscribers(server: ThreadingHTTPServer) -> None:
    output = one(base_url(server) + "/ok", allow_private=True, protected=True)
    assert output.accepts_protected is True
    output.publish(RECORD, event())
    payload = json.loads(server.received[0][1])  # type: ignore[attr-defined]
    assert payload["data"]["protected"] == {"salary": 1}


def test_unsubscribed_events_are_skipped(server: ThreadingHTTPServer) -> None:
    output = one(base_url(server) + "/ok", allow_private=True, events=["retracted"])
    output.publish(RECORD, event())
    assert server.received == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "169.254.169.254", "[::1]", "10.1.2.3", "0.0.0.0"],  # noqa: S104
)
def test_private_addresses_are_refused(server: ThreadingHTTPServer, host: str) -> None:
    port = server.server_address[1]
    output = one(f"http://{host}:{port}/ok")
    with pytest.raises(DeliveryError) as info:
        output.publish(RECORD, event())
    assert info.value.permanent and "refused" in str(info.value)
    assert server.received == []  # type: ignore[attr-defined]


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> list[str]:
    """Make chosen names resolve to chosen addresses; record every lookup."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(str(host))
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_names_are_checked_after_resolution(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"metadata.example": "169.254.169.254", "rebind.example": "127.0.0.1"})
    for name in ("metadata.example", "rebind.example"):
        with pytest.raises(DeliveryError, match="refused"):
            one(f"http://{name}/ok").publish(RECORD, event())
    # Metadata stays refused even where private addresses are allowed.
    with pytest.raises(DeliveryError, match="metadata"):
        one("http://metadata.example/ok", allow_private=True).publish(RECORD, event())
    assert server.received == []  # type: ignore[attr-defined]


def test_connects_to_the_checked_address_with_the_original_host(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_dns(monkeypatch, {"receiver.example": "127.0.0.1"})
    port = server.server_address[1]
    one(f"http://receiver.example:{port}/ok", allow_private=True).publish(RECORD, event())
    headers, _, verified = server.received[0]  # type: ignore[attr-defined]
    assert verified and headers["host"] == f"receiver.example:{port}"
    assert lookups.count("receiver.example") == 1  # no second lookup to rebind


def test_global_allow_private(server: ThreadingHTTPServer) -> None:
    (output,) = outputs(
        allow_private=True,
        subscribers=[{"name": "a", "url": base_url(server) + "/ok", "secret": SECRET}],
    )
    output.publish(RECORD, event())
    assert server.received[0][2] is True  # type: ignore[attr-defined]


def test_gone_disables_the_output(server: ThreadingHTTPServer) -> None:
    with pytest.raises(DeliveryError) as info:
        one(base_url(server) + "/gone", allow_private=True).publish(RECORD, event())
    assert info.value.disable_output and info.value.permanent


@pytest.mark.parametrize(("path", "low", "high"), [("/busy", 120, 120), ("/busy-date", 50, 61)])
def test_retry_after_is_honoured(
    server: ThreadingHTTPServer, path: str, low: float, high: float
) -> None:
    with pytest.raises(DeliveryError) as info:
        one(base_url(server) + path, allow_private=True).publish(RECORD, event())
    assert info.value.retry_after is not None and low <= info.value.retry_after <= high
    assert not info.value.permanent


@pytest.mark.parametrize("path", ["/busy-bare", "/broken", "/moved", "/missing"])
def test_other_answers_fail_the_attempt(server: ThreadingHTTPServer, path: str) -> None:
    with pytest.raises(DeliveryError) as info:
        one(base_url(server) + path, allow_private=True).publish(RECORD, event())
    assert info.value.retry_after is None and not info.value.disable_output
    assert len(server.received) == 1  # type: ignore[attr-defined] - the redirect is not followed


def test_timeout_and_connection_failures_are_delivery_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    try:
        output = one(
            f"http://127.0.0.1:{silent.getsockname()[1]}/ok", allow_private=True, timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(DeliveryError):
            output.publish(RECORD, event())
        assert time.monotonic() - started < 3
    finally:
        silent.close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(DeliveryError):
        one(f"http://127.0.0.1:{port}/ok", allow_private=True).publish(RECORD, event())


@pytest.mark.parametrize(
    "sub",
    [
        {"name": "", "url": "https://example.com/", "secret": SECRET},
        {"name": "a/b", "url": "https://example.com/", "secret": SECRET},
        {"name": "a", "url": "ftp://example.com/", "secret": SECRET},
        {"name": "a", "url": "https://user:pw@example.com/", "secret": SECRET},
        {"name": "a", "url": "https://example.com/", "secret": "plain"},
        {"name": "a", "url": "https://example.com/", "secret": SECRET, "events": ["deleted"]},
    ],
)
def test_bad_subscribers_are_refused_at_start(sub: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        outputs(subscribers=[sub])


def test_names_are_unique_and_each_subscriber_is_an_output() -> None:
    sub = {"name": "a", "url": "https://example.com/", "secret": SECRET}
    with pytest.raises(ConfigError):
        outputs(subscribers=[sub, sub])
    names = [o.name for o in outputs(subscribers=[sub, {**sub, "name": "b"}])]
    assert names == ["webhook:a", "webhook:b"]
    assert outputs() == []


def test_refusal_rules() -> None:
    assert webhook.refusal("93.184.215.14", False) is None
    assert webhook.refusal("2606:2800:220:1::1", False) is None
    assert webhook.refusal("::ffff:127.0.0.1", False) == "a loopback address"
    assert webhook.refusal("64:ff9b::a9fe:a9fe", True) == "a cloud metadata address"
    assert webhook.refusal("fd00:ec2::254", True) == "a cloud metadata address"
    assert webhook.refusal("fe80::1%eth0", False) == "a link-local address"
    assert webhook.refusal("224.0.0.1", True) is not None
    assert webhook.refusal("100.64.0.1", False) is not None
    assert webhook.refusal("192.168.1.1", True) is None


def test_https_is_verified(server: ThreadingHTTPServer) -> None:
    # The local receiver speaks plain HTTP: a TLS handshake with it must fail the attempt.
    port = server.server_address[1]
    with pytest.raises(DeliveryError, match="failed"):
        one(f"https://127.0.0.1:{port}/ok", allow_private=True, timeout=2).publish(RECORD, event())
