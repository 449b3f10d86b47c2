"""Structured logs: JSON lines, the request id on each, and secrets never written."""

from __future__ import annotations

import io
import json
import logging

import pytest

from publisher.db import transaction
from publisher.logs import configure_logging, log_context, redact
from publisher.models import Delivery
from publisher.testing import drain
from publisher.tokens import create_token

TOKEN = "pub_" + "A1b2C3d4" * 5
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JWE = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..a2V5X2l2X2hlcmU.Y2lwaGVydGV4dA.dGFnX3RhZ19fXw"
JWS = "eyJhbGciOiJFUzI1NiJ9.eyJ0aXRsZSI6InNlY3JldCJ9.c2lnbmF0dXJlX2J5dGVz"


@pytest.fixture
def lines():
    """Logs written through publisher's handler, as parsed JSON objects."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging({"logging": {"level": "INFO"}}, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for handler in [h for h in root.handlers if getattr(h, "_publisher_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def app(make_app):
    app = make_app()

    def noisy():
        logging.getLogger("publisher.test").warning(
            "sending with Authorization: Bearer %s to %s", TOKEN, WHSEC, extra={"secured": JWE}
        )
        return "ok"

    app.add_url_rule("/noisy", view_func=noisy)
    return app


def test_each_line_is_json_with_the_standard_fields(lines):
    logging.getLogger("publisher.x").info("hello %s", "world", extra={"record_id": "r1"})
    (line,) = lines()
    assert line["message"] == "hello world"
    assert line["level"] == "info"
    assert line["logger"] == "publisher.x"
    assert line["record_id"] == "r1"
    assert line["request_id"] is None
    assert line["time"].endswith("+00:00")


def test_a_request_id_is_on_lines_logged_during_the_request(app, client, lines):
    answer = client.get("/noisy", headers={"X-Request-Id": "req-42"})
    assert answer.status_code == 200
    noisy = [line for line in lines() if line["logger"] == "publisher.test"]
    assert noisy and noisy[0]["request_id"] == "req-42"


def test_the_request_id_ends_with_its_request(app, client, lines):
    client.get("/noisy", headers={"X-Request-Id": "req-1"})
    client.get("/noisy", headers={"X-Request-Id": "req-2"})
    logging.getLogger("publisher.test").warning("between requests")
    ids = [line["request_id"] for line in lines() if line["logger"] == "publisher.test"]
    assert ids == ["req-1", "req-2", None]


def test_secrets_are_redacted_from_message_arguments_and_extra(app, client, lines):
    client.get("/noisy")
    text = "\n".join(json.dumps(line) for line in lines())
    for secret in (TOKEN, WHSEC, JWE, "A1b2C3d4"):
        assert secret not in text
    noisy = next(line for line in lines() if line["logger"] == "publisher.test")
    assert noisy["secured"] == "[redacted]"
    assert "[redacted]" in noisy["message"]


def test_tracebacks_and_nested_extra_are_redacted(lines):
    log = logging.getLogger("publisher.y")
    try:
        raise ValueError(f"bad key {WHSEC}")
    except ValueError:
        log.exception("failed", extra={"request": {"headers": {"Authorization": TOKEN}}})
    (line,) = lines()
    assert WHSEC not in line["exception"] and "ValueError" in line["exception"]
    assert line["request"] == {"headers": {"Authorization": "[redacted]"}}


def test_redact_knows_the_shapes():
    assert redact(f"token {TOKEN} end") == "token [redacted] end"
    assert redact(f"{JWS}") == "[redacted]"
    assert redact("authorization=abc123") == "authorization=[redacted]"
    assert redact('"Authorization": "Basic dXNlcjpwYXNz"') == '"Authorization": "[redacted]"'
    assert redact("a plain sentence. eyJ is not a token") == "a plain sentence. eyJ is not a token"


def test_log_context_binds_fields_outside_a_request(lines):
    with log_context(request_id="worker-1", delivery_id="d1"):
        logging.getLogger("publisher.z").info("inside")
    logging.getLogger("publisher.z").info("outside")
    inside, outside = lines()
    assert (inside["request_id"], inside["delivery_id"]) == ("worker-1", "d1")
    assert outside["request_id"] is None and "delivery_id" not in outside


def test_the_request_id_follows_a_record_into_its_deliveries(make_app, tmp_path, lines):
    """The dispatcher logs a failed delivery with the id of the request that caused it."""
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(plugins={"recording": {"fail_flag": str(flag)}})
    with transaction(app.extensions["publisher"].sessions) as session:
        bearer = create_token(session, ["submit"])[1]
    body = {"title": "traced", "published": True, "webUrl": "https://example.com/t"}
    answer = app.test_client().post(
        "/api/v1/records",
        json=body,
        headers={"Authorization": f"Bearer {bearer}", "X-Request-Id": "trace-me-7"},
    )
    assert answer.status_code == 202, answer.json
    drain(app)
    with app.extensions["publisher"].sessions() as session:
        ours = {d.id: d.request_id for d in session.query(Delivery)}
    assert set(ours.values()) == {"trace-me-7"}, "deliveries must store the request id"
    # only this app's deliveries: a slow output of an earlier test may still log from its lane
    failed = [
        line
        for line in lines()
        if line["message"] == "delivery failed" and line.get("delivery_id") in ours
    ]
    assert failed, "the dispatcher logged no failed delivery"
    assert {line["request_id"] for line in failed} == {"trace-me-7"}
    assert all(line["output"] == "flaky" and line["delivery_id"] for line in failed)


def _huey_lines(settings: dict) -> list[str]:
    """What one queue message run by huey, and its consumer starting, log under ``settings``."""
    from huey import MemoryHuey

    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(settings, stream=stream)
    try:
        huey = MemoryHuey("logs-test", utc=True, results=False)
        huey.task(name="noop")(lambda: None)()
        huey.execute(huey.dequeue())
        logging.getLogger("huey.consumer").info("Huey consumer started")  # as it says it
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_publisher_handler", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("huey").setLevel(logging.NOTSET)
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


def test_hueys_lines_per_message_are_left_out_unless_asked_for():
    """Two lines per message cost a busy worker a tenth of its CPU (docs/operations.md)."""
    quiet = _huey_lines({"logging": {"level": "INFO"}})
    assert quiet == ["Huey consumer started"]
    told = _huey_lines({"logging": {"level": "INFO", "task_level": "INFO"}})
    assert [m.split(" ")[0] for m in told[:1]] == ["Executing"]
    assert any("executed in" in m for m in told)
