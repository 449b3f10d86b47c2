"""Hostile and careless content: every data error is a ``422`` (or a quarantine item), never
a ``500``, a retry loop or a lost batch, on the embedded defaults and on PostgreSQL + Redis.

Each input below reached the store on the old main and failed there (``UnicodeEncodeError``,
``OverflowError`` converting to UTC, PostgreSQL refusing ``\\u0000``). The bodies are raw JSON
bytes, so ``\\ud800`` reaches the parser as a sender wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from publisher.api.webhooks import inbox_processor
from publisher.cli import cli
from publisher.hookspecs import hookimpl
from publisher.intake import is_data_problem, is_outage
from publisher.models import InboxItem
from tests.backends import Backend, backend_fixture, drain  # noqa: F401 - the fixture
from tests.helpers import SECRET, bearer, send

#: name -> (the JSON members that replace the good record's, the error path expected)
HOSTILE: dict[str, tuple[str, str]] = {
    "title-lone-surrogate": ('"title": "a\\ud800b"', "title"),
    "body-lone-surrogate": ('"body": "text \\udfff"', "body"),
    "topic-lone-surrogate": ('"topics": ["ok", "\\ud800"]', "topics.1"),
    "unknown-lone-surrogate": ('"extra": "\\ud800"', "extra"),
    "nested-unknown-lone-surrogate": ('"extra": {"deep": [1, "\\ud83d"]}', "extra.deep.1"),
    "unknown-key-lone-surrogate": ('"\\ud800": 1', "\\ud800"),
    "title-upper-case-surrogate": ('"title": "a\\uD83Db"', "title"),
    "title-nul": ('"title": "a\\u0000b"', "title"),
    "body-nul": ('"body": "x\\u0000y"', "body"),
    "topic-nul": ('"topics": ["\\u0000"]', "topics.0"),
    "unknown-nul": ('"extra": ["\\u0000"]', "extra.0"),
    "unknown-key-nul": ('"a\\u0000b": 1', "a\\u0000b"),
    "provider-nul": ('"provider": {"name": "\\u0000"}', "provider.name"),
    "date-over-the-top": ('"publishedDateTime": "9999-12-31T23:59:59-23:59"', "publishedDateTime"),
    "date-before-year-one": (
        '"publishedDateTime": "0001-01-01T00:00:00+23:59"',
        "publishedDateTime",
    ),
    "expiry-over-the-top": ('"expiresAt": "9999-12-31T23:59:59-23:59"', "expiresAt"),
    "related-date-over-the-top": (
        '"related": [{"webUrl": "https://e.example/r", '
        '"publishedDateTime": "9999-12-31T23:59:59-23:59"}]',
        "related.0.publishedDateTime",
    ),
    "unknown-string-over-max-string": ('"extra": {"big": "' + "x" * 1_000_001 + '"}', "extra.big"),
}


def hostile_body(name: str, record_id: str = "hostile") -> bytes:
    members, _ = HOSTILE[name]
    good = f'"id": "{record_id}", "published": true'
    if not members.startswith('"title"'):
        good += ', "title": "A title"'
    return ("{" + good + ", " + members + "}").encode()


def good_body(record_id: str) -> bytes:
    return json.dumps({"id": record_id, "title": f"Good {record_id}", "published": True}).encode()


def error_path(name: str) -> str:
    """The path as errors name it: a field name that cannot be stored is escaped (\\ud800)."""
    return HOSTILE[name][1]


@pytest.fixture
def app(backend: Backend, make_app):  # noqa: ANN001, ANN201
    return make_app(**backend.overrides(), sources={"cms": {"secrets": [SECRET]}})


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()


def stored_ids(client, headers: dict[str, str]) -> set[str]:  # noqa: ANN001
    answer = client.get("/api/v1/records?limit=200", headers=headers)
    assert answer.status_code == 200, answer.json
    return {item["id"] for item in answer.json["items"]}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_api_answers_422_at_the_field(app, client, name):  # noqa: ANN001
    headers = {**bearer(app, "submit", "read"), "Content-Type": "application/json"}
    answer = client.post("/api/v1/records", data=hostile_body(name), headers=headers)
    assert answer.status_code == 422, answer.get_data(as_text=True)[:300]
    assert answer.json["code"] == "invalid"
    assert error_path(name) in answer.json["errors"], answer.json["errors"]
    assert stored_ids(client, headers) == set()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_batch_answers_per_item_and_stores_the_good_ones(app, client, name):  # noqa: ANN001
    headers = {**bearer(app, "submit", "read"), "Content-Type": "application/json"}
    body = b"[" + good_body("before") + b"," + hostile_body(name) + b"," + good_body("after") + b"]"
    answer = client.post("/api/v1/records", data=body, headers=headers)
    assert answer.status_code == 202, answer.get_data(as_text=True)[:300]
    statuses = [item["status"] for item in answer.json["items"]]
    assert statuses == ["created", "invalid", "created"]
    assert error_path(name) in answer.json["items"][1]["errors"]
    assert stored_ids(client, headers) == {"before", "after"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_webhook_goes_to_the_quarantine_with_its_reason(app, client, name):  # noqa: ANN001
    assert send(client, hostile_body(name)).status_code == 202
    drain(app)
    with app.extensions["publisher"].sessions() as session:
        assert list(session.scalars(select(InboxItem.status))) == ["quarantined"]
    headers = bearer(app, "admin")
    (item,) = client.get("/api/v1/quarantine", headers=headers).json["items"]
    assert item["reason"] == "invalid"
    assert error_path(name) in item["errors"], item["errors"]
    assert drain(app) == 0  # nothing left to retry
    assert inbox_processor(app).sweep(grace=0) == 0


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2024-01-01T00:00:00\x00"]
)
def test_since_out_of_range_is_422(app, client, since):  # noqa: ANN001
    answer = client.get(
        "/api/v1/records", query_string={"since": since}, headers=bearer(app, "read")
    )
    assert answer.status_code == 422, answer.get_data(as_text=True)[:300]
    assert list(answer.json["errors"]) == ["since"]


def test_ingest_reports_the_bad_item_and_stores_the_rest(app, client, tmp_path: Path):  # noqa: ANN001
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.json").write_bytes(good_body("good-1"))
    for index, name in enumerate(sorted(HOSTILE)):
        (folder / f"b-hostile-{index}.json").write_bytes(hostile_body(name, f"bad-{index}"))
    batch = b"[" + good_body("good-2") + b"," + hostile_body("body-nul", "bad-in-batch") + b"]"
    (folder / "c-batch.json").write_bytes(batch)
    result = CliRunner().invoke(cli, ["ingest", str(folder)], obj=_script_info(app))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr
    assert f"{len(HOSTILE) + 1} invalid" in result.stdout and "2 created" in result.stdout
    assert "c-batch.json[1]: body:" in result.stderr
    assert stored_ids(client, bearer(app, "read")) == {"good-1", "good-2"}


def _script_info(app: Any) -> Any:
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


# -- past validation: what the store itself refuses fails one item, never a batch or a loop --


class Corrupting:
    """A plugin that changes a validated record into something the store cannot hold."""

    def __init__(self, scaleout: bool) -> None:
        # PostgreSQL refuses NUL; both refuse a lone surrogate (it cannot be encoded)
        self.bad = "a\x00b" if scaleout else "a\ud800b"

    @hookimpl
    def record_validated(self, record: dict[str, Any], warnings: list[str]) -> None:
        if record["id"].startswith("corrupt"):
            record["body"] = self.bad  # a text column on PostgreSQL


@pytest.fixture
def corrupting(app, backend: Backend):  # noqa: ANN001, ANN201
    app.extensions["publisher"].pm.register(Corrupting(backend.scaleout))
    return app


def test_a_record_the_store_refuses_fails_alone_in_its_batch(corrupting, client):  # noqa: ANN001
    headers = {**bearer(corrupting, "submit", "read"), "Content-Type": "application/json"}
    body = b"[" + good_body("one") + b"," + good_body("corrupt") + b"," + good_body("two") + b"]"
    answer = client.post("/api/v1/records", data=body, headers=headers)
    assert answer.status_code == 202, answer.get_data(as_text=True)[:300]
    assert [item["status"] for item in answer.json["items"]] == ["created", "invalid", "created"]
    assert list(answer.json["items"][1]["errors"]) == ["_record"]
    assert stored_ids(client, headers) == {"one", "two"}
    single = client.post("/api/v1/records", data=good_body("corrupt-2"), headers=headers)
    assert single.status_code == 422, single.get_data(as_text=True)[:300]


def test_a_webhook_the_store_refuses_is_quarantined_not_retried(corrupting, client):  # noqa: ANN001
    assert send(client, good_body("corrupt")).status_code == 202
    drain(corrupting)
    with corrupting.extensions["publisher"].sessions() as session:
        assert list(session.scalars(select(InboxItem.status))) == ["quarantined"]
    (item,) = client.get("/api/v1/quarantine", headers=bearer(corrupting)).json["items"]
    assert (item["reason"], list(item["errors"])) == ("invalid", ["_record"])
    assert inbox_processor(corrupting).sweep(grace=0) == 0


def test_a_webhook_the_store_refuses_is_quarantined_alone_in_its_batch(corrupting, client):  # noqa: ANN001
    for name in ("one", "corrupt", "two"):
        assert send(client, good_body(name)).status_code == 202
    with corrupting.extensions["publisher"].sessions() as session:
        ids = list(session.scalars(select(InboxItem.id).order_by(InboxItem.id)))
    statuses = inbox_processor(corrupting).process_batch(ids)
    assert statuses == ["done", "quarantined", "done"]
    assert stored_ids(client, bearer(corrupting, "read")) == {"one", "two"}


def test_only_an_outage_is_retried(backend: Backend) -> None:
    """The classification, on real errors from the real databases."""
    refused_url = backend.database_url if backend.scaleout else "sqlite://"
    down_url = "postgresql+psycopg://nobody@127.0.0.1:1/none" if backend.scaleout else "sqlite:////"
    engine = create_engine(refused_url)
    with pytest.raises(DBAPIError) as refused, engine.begin() as connection:
        connection.execute(text("CREATE TEMPORARY TABLE t (x INTEGER NOT NULL)"))
        connection.execute(text("INSERT INTO t VALUES (NULL)"))
    engine.dispose()
    assert is_data_problem(refused.value) and not is_outage(refused.value)
    with pytest.raises(DBAPIError) as outage, create_engine(down_url).connect():
        pass
    assert is_outage(outage.value) and not is_data_problem(outage.value)
