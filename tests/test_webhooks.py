"""``POST /webhooks/<source>``: Standard Webhooks verification, as a sender meets it."""

from __future__ import annotations

import json
import logging
import secrets
import time
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from publisher import signatures
from publisher.api.webhooks import inbox_processor
from publisher.cli.admin import sources_add
from publisher.db import transaction
from publisher.models import Source, utcnow
from publisher.signatures import Refused, Signed, secret_key, sign, verify_signature
from publisher.testing import drain
from tests.helpers import OTHER, SECRET, send, signed_headers

# the signing example of the Standard Webhooks specification (tests/data/vectors/README.md)
_SPEC = json.loads(
    (Path(__file__).parent / "data/vectors/standard-webhooks/signing-example.json").read_text()
)
SPEC_SECRET = _SPEC["secret"]
SPEC_ID = _SPEC["id"]
SPEC_TIMESTAMP = _SPEC["timestamp"]
SPEC_BODY = _SPEC["body"].encode()
SPEC_SIGNATURE = _SPEC["signature"]


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    return make_app(sources={"cms": {"secrets": [SECRET]}})


def test_the_specification_signing_vector_verifies_with_the_clock_pinned():
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    keys = [secret_key(SPEC_SECRET)]
    signed = verify_signature(SPEC_BODY, headers, keys, tolerance=300, now=SPEC_TIMESTAMP)
    assert signed == Signed(SPEC_ID, SPEC_TIMESTAMP)
    with pytest.raises(Refused):  # the same vector today is far too old
        verify_signature(SPEC_BODY, headers, keys, tolerance=300, now=time.time())
    with pytest.raises(Refused):  # one byte more, and it no longer matches
        verify_signature(SPEC_BODY + b" ", headers, keys, tolerance=300, now=SPEC_TIMESTAMP)


def test_the_vector_through_the_app_verifier_with_its_clock_pinned(make_app):
    app = make_app(sources={"spec": {"secrets": [SPEC_SECRET]}})
    verifier = inbox_processor(app).verifier
    headers = {
        "Webhook-Id": SPEC_ID,
        "Webhook-Timestamp": str(SPEC_TIMESTAMP),
        "Webhook-Signature": SPEC_SIGNATURE,
    }
    verifier.clock = lambda: SPEC_TIMESTAMP + 299
    assert verifier.verify("spec", SPEC_BODY, headers).webhook_id == SPEC_ID
    verifier.clock = lambda: SPEC_TIMESTAMP - 299
    assert verifier.verify("spec", SPEC_BODY, headers).webhook_id == SPEC_ID


def test_our_signature_is_the_librarys_byte_for_byte():
    for _ in range(20):
        secret = "whsec_" + b64encode(secrets.token_bytes(32)).decode()
        body = json.dumps({"title": secrets.token_hex(8), "heat": -1, "t": "£€"}).encode()
        when = datetime.fromtimestamp(1_700_000_000, tz=UTC)
        theirs = Webhook(secret).sign("msg_1", when, body.decode()).split(",", 1)[1]
        ours = b64encode(sign(secret_key(secret), "msg_1", 1_700_000_000, body)).decode()
        assert ours == theirs


def test_seed_record_as_markdown_is_accepted_then_stored(app, client, auth, seed_md):
    answer = send(client, seed_md, content_type="text/markdown")
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "accepted"
    assert client.get("/api/v1/records", headers=auth).json["items"] == []  # not parsed yet
    drain(app)
    items = client.get("/api/v1/records", headers=auth).json["items"]
    assert len(items) == 1
    record = client.get(f"/api/v1/records/{items[0]['id']}", headers=auth).json
    assert record["record"]["title"] == "UK fines US AI firm £7.5m over mass image collection"
    assert record["source"] == "cms"
    assert record["record"]["heat"] == -1


def test_seed_record_as_json_is_accepted_then_stored(app, client, auth, seed_json):
    answer = send(client, json.dumps(seed_json).encode())
    assert answer.status_code == 202
    drain(app)
    items = client.get("/api/v1/records", headers=auth).json["items"]
    assert [i["title"] for i in items] == [seed_json["title"]]


def _assert_refused(answer) -> None:  # noqa: ANN001
    assert answer.status_code == 401
    assert answer.json == {
        "code": "unauthenticated",
        "status": 401,
        "message": "Unauthenticated",
        "errors": {},
    }


def test_an_altered_body_is_refused(client, seed_md):
    headers = signed_headers(seed_md)
    _assert_refused(client.post("/webhooks/cms", data=seed_md + b"\n", headers=headers))


def test_a_wrong_secret_is_refused(client, seed_md):
    _assert_refused(send(client, seed_md, secret=OTHER))


@pytest.mark.parametrize("offset", [-600, 600])
def test_a_timestamp_ten_minutes_off_is_refused(client, seed_md, offset):
    _assert_refused(send(client, seed_md, timestamp=int(time.time()) + offset))


def test_the_tolerance_is_configurable(make_app, seed_md):
    app = make_app(sources={"cms": {"secrets": [SECRET]}}, webhooks={"tolerance_seconds": 900})
    answer = send(app.test_client(), seed_md, timestamp=int(time.time()) - 600)
    assert answer.status_code == 202


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(client, seed_md, missing):
    headers = signed_headers(seed_md)
    del headers[missing]
    _assert_refused(client.post("/webhooks/cms", data=seed_md, headers=headers))


@pytest.mark.parametrize("value", ["garbage", "v1,", "v1,***", "v2,abc=", "v1 v1"])
def test_a_malformed_signature_header_is_refused_not_a_crash(client, seed_md, value):
    headers = {**signed_headers(seed_md), "webhook-signature": value}
    _assert_refused(client.post("/webhooks/cms", data=seed_md, headers=headers))


def test_an_unknown_source_looks_like_a_bad_signature(client, seed_md):
    _assert_refused(send(client, seed_md, source="nobody"))


def test_a_second_signature_in_the_header_is_tried(client, seed_md):
    headers = signed_headers(seed_md)
    decoy = "v1," + b64encode(b"x" * 32).decode()
    headers["webhook-signature"] = f"{decoy} {headers['webhook-signature']}"
    assert client.post("/webhooks/cms", data=seed_md, headers=headers).status_code == 202


def test_during_rotation_both_secrets_work(app, client, seed_md):
    result = app.test_cli_runner().invoke(sources_add, ["cms"])
    assert result.exit_code == 0, result.output
    stored = result.stdout.strip().splitlines()[-1]
    assert stored.startswith("whsec_")
    assert send(client, seed_md, secret=SECRET).status_code == 202  # from configuration
    assert send(client, seed_md, secret=stored).status_code == 202  # from the sources table
    _assert_refused(send(client, seed_md, secret=OTHER))


def test_no_secret_reaches_the_logs(app, client, seed_md, caplog):
    caplog.set_level(logging.DEBUG)
    send(client, seed_md, content_type="text/markdown")
    send(client, seed_md, secret=OTHER)
    send(client, seed_md, source="nobody")
    drain(app)
    envelope = next(line for line in seed_md.decode().splitlines() if line.startswith("secured"))
    text = caplog.text
    assert "refused" in text  # the refusals were logged, with their reason
    for secret in (SECRET, OTHER, SECRET.removeprefix("whsec_"), envelope.split('"')[1][:40]):
        assert secret not in text


# -- the per-process cache of source keys ---------------------------------------------------


def _store_secrets(app, name: str, secrets: list[str]) -> None:  # noqa: ANN001
    """Change a source's secrets in the database, as another process would (no forget)."""
    with transaction(app.extensions["publisher"].sessions) as session:
        source = session.get(Source, name)
        if source is None:
            session.add(Source(name=name, secrets=secrets, created_at=utcnow()))
        else:
            source.secrets = secrets


def _pinned_cache_clock(app) -> list[float]:  # noqa: ANN001
    now = [1000.0]
    inbox_processor(app).verifier.monotonic = lambda: now[0]
    return now


def test_a_secret_added_elsewhere_takes_effect_when_the_cache_expires(make_app, seed_md):
    app = make_app(sources={"cms": {"secrets": [SECRET]}}, webhooks={"secrets_cache_seconds": 5})
    now, client = _pinned_cache_clock(app), app.test_client()
    assert send(client, seed_md, secret=SECRET).status_code == 202  # cms's keys now cached
    _store_secrets(app, "cms", [OTHER])
    _assert_refused(send(client, seed_md, secret=OTHER))  # not read again yet
    now[0] += 4.9
    _assert_refused(send(client, seed_md, secret=OTHER))
    now[0] += 0.1
    assert send(client, seed_md, secret=OTHER).status_code == 202  # read again: it works
    assert send(client, seed_md, secret=SECRET).status_code == 202  # configuration still


def test_a_revoked_secret_stops_working_within_the_cache_time(make_app, seed_md):
    app = make_app(webhooks={"secrets_cache_seconds": 2})
    _store_secrets(app, "cms", [OTHER])
    now, client = _pinned_cache_clock(app), app.test_client()
    assert send(client, seed_md, secret=OTHER).status_code == 202
    _store_secrets(app, "cms", [])
    assert send(client, seed_md, secret=OTHER).status_code == 202  # within the cache time
    now[0] += 2
    _assert_refused(send(client, seed_md, secret=OTHER))


def test_an_unknown_source_is_cached_as_one_without_keys(make_app, seed_md):
    app = make_app(webhooks={"secrets_cache_seconds": 5})
    now, client = _pinned_cache_clock(app), app.test_client()
    _assert_refused(send(client, seed_md, source="late", secret=OTHER))
    _store_secrets(app, "late", [OTHER])
    _assert_refused(send(client, seed_md, source="late", secret=OTHER))
    now[0] += 5
    assert send(client, seed_md, source="late", secret=OTHER).status_code == 202


def test_a_cache_time_of_zero_reads_the_secrets_on_every_request(make_app, seed_md):
    app = make_app(webhooks={"secrets_cache_seconds": 0})
    client = app.test_client()
    _assert_refused(send(client, seed_md, secret=OTHER))
    _store_secrets(app, "cms", [OTHER])
    assert send(client, seed_md, secret=OTHER).status_code == 202
    assert inbox_processor(app).verifier._cached == {}


def test_the_cache_is_bounded_whatever_source_names_arrive(make_app, seed_md, monkeypatch):
    monkeypatch.setattr(signatures, "MAX_CACHED_SOURCES", 3)
    app = make_app()
    client = app.test_client()
    for n in range(10):
        _assert_refused(send(client, seed_md, source=f"nobody-{n}"))
        assert len(inbox_processor(app).verifier._cached) <= 3


def test_sources_add_takes_effect_at_once_in_its_own_process(app, client, seed_md):
    assert send(client, seed_md, secret=SECRET).status_code == 202  # cms's keys now cached
    result = app.test_cli_runner().invoke(sources_add, ["cms"])
    assert result.exit_code == 0, result.output
    added = result.stdout.strip().splitlines()[-1]
    assert send(client, seed_md, secret=added).status_code == 202
