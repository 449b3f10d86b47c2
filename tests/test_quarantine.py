"""The quarantine: what a webhook sent that could not be taken in, why, and the replay."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from publisher.api.webhooks import inbox_processor
from publisher.cli.quarantine import quarantine_group
from publisher.db import transaction
from publisher.models import InboxItem, QuarantineItem, utcnow
from publisher.testing import drain
from publisher.tokens import create_token
from tests.helpers import DATA, SECRET, send

BROKEN_ENVELOPE = "bm90IGFuIGVudmVsb3BlIGF0IGFsbA=="


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    return make_app(sources={"cms": {"secrets": [SECRET]}})


def held(client, auth) -> list[dict]:  # noqa: ANN001
    answer = client.get("/api/v1/quarantine", headers=auth)
    assert answer.status_code == 200, answer.json
    return answer.json["items"]


def inbox_statuses(app) -> list[str]:  # noqa: ANN001
    with app.extensions["publisher"].sessions() as session:
        return list(session.scalars(select(InboxItem.status).order_by(InboxItem.id)))


def records(client, auth) -> list[dict]:  # noqa: ANN001
    return client.get("/api/v1/records", headers=auth).json["items"]


def test_an_invalid_record_is_quarantined_with_field_paths(app, client, auth):
    body = (DATA / "invalid" / "related-missing-weburl.md").read_bytes()
    assert send(client, body, content_type="text/markdown").status_code == 202
    drain(app)
    (item,) = held(client, auth)
    assert item["source"] == "cms"
    assert item["reason"] == "invalid"
    assert any(path.endswith("related.1.webUrl") for path in item["errors"]), item["errors"]
    assert item["replayed_at"] is None
    assert inbox_statuses(app) == ["quarantined"]
    assert records(client, auth) == []
    detail = client.get(f"/api/v1/quarantine/{item['id']}", headers=auth).json
    assert detail["payload"] == body.decode()  # the raw payload, for the operator


def test_a_malformed_payload_is_quarantined(app, client, auth):
    assert send(client, b'{"title": ').status_code == 202
    drain(app)
    (item,) = held(client, auth)
    assert item["reason"] == "malformed"
    assert item["errors"]


def test_a_strict_mode_reject_is_replayed_after_strict_is_turned_off(make_app, auth_for, seed_json):
    app = make_app(sources={"cms": {"secrets": [SECRET]}}, strict=True)
    client, auth = app.test_client(), auth_for(app)
    send(client, json.dumps(dict(seed_json, colour="red")).encode())
    drain(app)
    (item,) = held(client, auth)
    assert item["errors"] == {"colour": ["Unknown field."]}
    replay = f"/api/v1/quarantine/{item['id']}/replay"

    still = client.post(replay, headers=auth)
    assert still.status_code == 422
    assert still.json["errors"] == {"colour": ["Unknown field."]}

    app.extensions["publisher"].settings["strict"] = False  # the operator's fix
    answer = client.post(replay, headers=auth)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "replayed"
    assert answer.json["items"][0]["status"] == "created"
    assert [r["title"] for r in records(client, auth)] == [seed_json["title"]]
    assert held(client, auth)[0]["replayed_at"] is not None
    assert client.post(replay, headers=auth).status_code == 409
    unreplayed = client.get("/api/v1/quarantine?replayed=false", headers=auth).json["items"]
    assert unreplayed == []


def test_an_envelope_that_cannot_be_opened_under_a_quarantine_policy(
    make_app, auth_for, seed_json, caplog
):
    caplog.set_level(logging.DEBUG)
    policy = {"on_failure": "quarantine", "legacy": "refuse"}
    app = make_app(sources={"cms": {"secrets": [SECRET], "secured": policy}})
    client, auth = app.test_client(), auth_for(app)
    send(client, json.dumps(dict(seed_json, secured=BROKEN_ENVELOPE)).encode())
    drain(app)
    (item,) = held(client, auth)
    assert item["reason"] == "secured"
    assert item["errors"] == {"secured": ["the secured field could not be opened"]}
    assert inbox_statuses(app) == ["quarantined"]
    assert records(client, auth) == []
    assert BROKEN_ENVELOPE not in caplog.text
    assert SECRET not in caplog.text

    # the operator decides such records may pass sealed, and replays
    app.extensions["publisher"].settings["sources"]["cms"]["secured"]["on_failure"] = "sealed"
    answer = client.post(f"/api/v1/quarantine/{item['id']}/replay", headers=auth)
    assert answer.status_code == 200, answer.json
    (stored,) = records(client, auth)
    assert stored["secured"]["status"] == "invalid"


def test_a_replay_still_held_by_the_secured_policy_is_422_and_the_item_stays(
    make_app, auth_for, seed_json
):
    policy = {"on_failure": "quarantine", "legacy": "refuse"}
    app = make_app(sources={"cms": {"secrets": [SECRET], "secured": policy}})
    client, auth = app.test_client(), auth_for(app)
    send(client, json.dumps(dict(seed_json, secured=BROKEN_ENVELOPE)).encode())
    drain(app)
    (item,) = held(client, auth)
    answer = client.post(f"/api/v1/quarantine/{item['id']}/replay", headers=auth)
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"] == {"secured": ["the secured field could not be opened"]}
    assert held(client, auth) == [item]  # the same item, not replayed; no new one
    assert records(client, auth) == []


def test_a_batch_keeps_its_good_records_and_quarantines_the_bad(app, client, auth, seed_json):
    bad = dict(seed_json, title="", originalUrl="https://example.com/other")
    send(client, json.dumps([seed_json, bad]).encode())
    drain(app)
    (item,) = held(client, auth)
    assert "1.title" in item["errors"]
    assert len(records(client, auth)) == 1


def test_scopes(app, client, token):
    read = {"Authorization": f"Bearer {token('read')}"}
    submit = {"Authorization": f"Bearer {token('submit')}"}
    assert client.get("/api/v1/quarantine").status_code == 401
    assert client.get("/api/v1/quarantine", headers=submit).status_code == 403
    assert client.get("/api/v1/quarantine", headers=read).status_code == 200
    assert client.get("/api/v1/quarantine/99", headers=read).status_code == 404
    assert client.post("/api/v1/quarantine/99/replay", headers=read).status_code == 403


def test_pagination(app, client, auth):
    for n in range(3):
        send(client, b"{" * (n + 1))
    drain(app)
    page = client.get("/api/v1/quarantine?limit=2", headers=auth).json
    assert len(page["items"]) == 2
    rest = client.get(f"/api/v1/quarantine?limit=2&cursor={page['next_cursor']}", headers=auth)
    assert len(rest.json["items"]) == 1
    assert rest.json["next_cursor"] is None


def test_retention_prunes_old_items(app, client, auth):
    send(client, b"{")
    send(client, b"[")
    drain(app)
    old, recent = sorted(i["id"] for i in held(client, auth))
    now = utcnow()
    processor = inbox_processor(app)
    with transaction(processor.sessions) as session:
        session.get(QuarantineItem, old).created_at = now - timedelta(days=31)
    assert processor.prune(now) == 1
    assert [i["id"] for i in held(client, auth)] == [recent]


def test_the_command_line(make_app, seed_json):
    app = make_app(sources={"cms": {"secrets": [SECRET]}}, strict=True)
    send(app.test_client(), json.dumps(dict(seed_json, colour="red")).encode())
    drain(app)
    runner = app.test_cli_runner()
    listed = runner.invoke(quarantine_group, ["list"])
    assert listed.exit_code == 0, listed.output
    item_id, source, reason, state, fields = listed.output.strip().split("\t")
    assert (source, reason, state, fields) == ("cms", "invalid", "held", "colour")

    shown = runner.invoke(quarantine_group, ["show", item_id])
    assert json.loads(shown.output)["errors"] == {"colour": ["Unknown field."]}
    assert runner.invoke(quarantine_group, ["show", "999"]).exit_code != 0

    assert runner.invoke(quarantine_group, ["replay", "--all"]).exit_code == 1
    app.extensions["publisher"].settings["strict"] = False
    replayed = runner.invoke(quarantine_group, ["replay", "--all"])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output.strip() == f"{item_id}\treplayed"
    assert runner.invoke(quarantine_group, ["list"]).output == ""

    pruned = runner.invoke(quarantine_group, ["prune", "--days", "0"])
    assert pruned.output.strip() == "1 removed"


@pytest.fixture
def auth_for():  # noqa: ANN201
    """An admin header for an app built in the test."""

    def make(app) -> dict[str, str]:  # noqa: ANN001
        with transaction(app.extensions["publisher"].sessions) as session:
            return {"Authorization": f"Bearer {create_token(session, ('admin',))[1]}"}

    return make
