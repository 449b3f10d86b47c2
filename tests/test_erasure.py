"""Purge and retention: a purged record is gone from every table, output and subscriber, and
no late replay (a webhook sent again, the API) brings it back."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from publisher.db import transaction
from publisher.models import Base, InboxItem, Revision, utcnow
from publisher.testing import drain
from tests.helpers import SECRET, bearer, send

TITLE = "Otters seen running the harbour office"
BODY = "A confidential account of the otters' takeover."
DATA_FOLDER_EXCLUDED = {"publisher.db", "publisher.db-wal", "publisher.db-shm", "queue.db"}


@pytest.fixture
def app(make_app):  # noqa: ANN001, ANN201
    return make_app(sources={"cms": {"secrets": [SECRET]}})


@pytest.fixture
def record(seed_json) -> dict:  # noqa: ANN001
    return {**seed_json, "id": "otters-1", "title": TITLE, "body": BODY, "published": True}


def published_by_webhook(app, client, record) -> bytes:  # noqa: ANN001
    body = json.dumps(record).encode()
    assert send(client, body).status_code == 202
    drain(app)
    return body


def sweep(app) -> None:  # noqa: ANN001
    """What the worker's sweeper does every few seconds (the purge's last step is there)."""
    app.extensions["publisher"].dispatcher.sweep()
    drain(app)


def rows_mentioning(app, text: str) -> list[str]:  # noqa: ANN001
    """Every row of every table whose values hold ``text``: each table queried."""
    found = []
    with app.extensions["publisher"].engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row]
                if text in json.dumps(values, default=str, ensure_ascii=False):
                    found.append(table.name)
    return found


def files_mentioning(folder: Path, text: str) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file()
        and path.name not in DATA_FOLDER_EXCLUDED
        and text in path.read_text("utf-8", "replace")
    ]


def test_a_purge_waits_for_the_receipts_then_erases_everything(app, client, record, recorded):
    published_by_webhook(app, client, record)
    data = Path(app.config["PUBLISHER"]["data_dir"])
    assert files_mentioning(data, TITLE), "the files and feeds outputs hold the record"
    assert set(rows_mentioning(app, TITLE)) >= {"records", "revisions", "inbox"}

    answer = client.delete("/api/v1/records/otters-1?purge=true", headers=bearer(app))
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "pending"  # the retractions are not confirmed yet
    assert answer.json["requested_by"].startswith("token:")

    drain(app)  # the outputs confirm the retraction
    sweep(app)  # and the sweeper erases

    gone = client.get("/api/v1/records/otters-1", headers=bearer(app))
    assert gone.status_code == 410
    assert gone.json["code"] == "gone" and "purged (" in gone.json["message"]
    assert rows_mentioning(app, TITLE) == []
    assert rows_mentioning(app, "otters-1") == ["tombstones"]
    assert files_mentioning(data, TITLE) == []
    assert files_mentioning(data, BODY) == []
    last = [e for e in recorded() if e["output"] == "recorder" and e["id"] == "otters-1"][-1]
    assert last["event"] == "retracted"


def test_a_replayed_webhook_payload_does_not_revive_a_purged_record(app, client, record):
    body = published_by_webhook(app, client, record)
    client.delete("/api/v1/records/otters-1?purge=true", headers=bearer(app))
    drain(app)
    sweep(app)

    assert send(client, body).status_code == 202  # the sender's retry, a new webhook-id
    drain(app)

    assert client.get("/api/v1/records/otters-1", headers=bearer(app)).status_code == 410
    assert rows_mentioning(app, TITLE) == []  # not quarantined, its payload not kept


def test_the_same_record_through_the_api_answers_410(app, client, record):
    published_by_webhook(app, client, record)
    client.delete("/api/v1/records/otters-1?purge=true", headers=bearer(app))

    again = client.post("/api/v1/records", json=record, headers=bearer(app, "submit"))

    assert again.status_code == 410  # refused from the purge's request on, not only after it
    assert again.json["errors"]["id"]
    batch = client.post("/api/v1/records", json=[record], headers=bearer(app, "submit"))
    assert batch.json["items"][0]["status"] == "gone"


def test_purge_needs_the_admin_scope_and_plain_delete_still_retracts(app, client, record):
    published_by_webhook(app, client, record)
    submit = bearer(app, "submit")

    assert client.delete("/api/v1/records/otters-1?purge=true", headers=submit).status_code == 403
    retracted = client.delete("/api/v1/records/otters-1", headers=submit)

    assert retracted.json["status"] == "retracted"
    assert client.get("/api/v1/records/otters-1", headers=submit).status_code == 403
    assert client.get("/api/v1/records/otters-1", headers=bearer(app, "read")).status_code == 200


def test_a_disabled_output_holds_the_purge_until_now_is_asked(app, client, record, invoke):
    published_by_webhook(app, client, record)
    app.extensions["publisher"].dispatcher.set_enabled("recorder", False, "maintenance")
    client.delete("/api/v1/records/otters-1?purge=true", headers=bearer(app))
    drain(app)
    sweep(app)
    assert "records" in rows_mentioning(app, TITLE)  # the recorder has not confirmed

    result = invoke("purge", "--now", "otters-1")

    line = json.loads(result.output)
    assert line["status"] == "purged" and line["unconfirmed"] == ["recorder"]
    assert rows_mentioning(app, TITLE) == []


def test_retention_prunes_old_revisions_and_payloads_but_never_the_current_one(
    make_app, client, record
):
    app = make_app(
        sources={"cms": {"secrets": [SECRET]}}, retention={"revisions_days": 7, "payloads_days": 3}
    )
    client = app.test_client()
    published_by_webhook(app, client, record)
    published_by_webhook(app, client, {**record, "title": "Otters, second take"})
    sessions = app.extensions["publisher"].sessions
    with transaction(sessions) as session:
        session.execute(update(Revision).values(created_at=utcnow() - timedelta(days=8)))
        session.execute(update(InboxItem).values(received_at=utcnow() - timedelta(days=4)))

    counts = app.extensions["publisher.eraser"].prune()

    assert counts == {"revisions": 1, "payloads": 2}
    with sessions() as session:
        assert session.scalars(select(Revision.revision)).all() == [2]
        assert set(session.scalars(select(InboxItem.payload))) == {b""}
    assert client.get("/api/v1/records/otters-1", headers=bearer(app)).status_code == 200


def test_ingesting_a_purged_record_again_fails_and_names_it(app, client, record, invoke, tmp_path):
    published_by_webhook(app, client, record)
    invoke("purge", "--now", "otters-1")
    path = tmp_path / "again.json"
    path.write_text(json.dumps(record))

    result = invoke("ingest", str(path))

    assert result.exit_code == 1
    assert "1 gone" in result.output and "was purged" in result.output
