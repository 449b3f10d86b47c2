"""What the operator's page reads: ``/api/v1/overview/...``, ``/api/v1/whoami``, revisions,
and deleting a quarantined payload, through the Flask test client on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Select

from publisher import overview
from publisher.db import transaction
from publisher.models import QuarantineItem, utcnow
from tests.backends import (  # noqa: F401 - fixtures: backend
    Backend,
    backend_fixture,
    drain,
)
from tests.helpers import bearer

FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def fail_flag(tmp_path: Path) -> Path:
    flag = tmp_path / "flaky.fail"
    flag.write_text("failing\n")
    return flag


@pytest.fixture
def app(
    backend: Backend,
    make_app: Callable[..., Flask],
    base_settings: dict[str, Any],
    fail_flag: Path,
) -> Flask:
    """One attempt per delivery; ``flaky`` fails while the flag exists."""
    log = base_settings["plugins"]["recording"]["log"]
    return make_app(
        **backend.overrides(),
        delivery={"retry_schedule": [0], "jitter": 0.0},
        plugins={"recording": {"log": log, "fail_flag": str(fail_flag)}},
    )


def submit(client: FlaskClient, headers: dict[str, str], **fields: Any) -> str:
    answer = client.post("/api/v1/records", json={"published": True, **fields}, headers=headers)
    assert answer.status_code == 202, answer.json
    return answer.json["id"]


def page(client: FlaskClient, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    answer = client.get(f"/api/v1/overview/records{query}", headers=headers)
    assert answer.status_code == 200, answer.json
    return answer.json


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["id"] for item in answer["items"]]


@pytest.fixture
def store(app: Flask) -> dict[str, Any]:
    """Three published records (one embargoed, one with topics), drained: flaky failed."""
    client = app.test_client()
    admin = bearer(app, "admin")
    made = {
        "apple": submit(
            client, admin, title="Apple harvest begins", originalUrl="https://e.com/apple"
        ),
        "pear": submit(
            client,
            admin,
            title="Pear prices fall",
            originalUrl="https://e.com/pear?utm_source=x",
            topics=["markets"],
        ),
        "later": submit(
            client,
            admin,
            title="Embargoed apple news",
            id="embargoed-1",
            publishedDateTime=FUTURE,
        ),
    }
    drain(app)
    return {"client": client, "admin": admin, "read": bearer(app, "read"), **made}


def test_a_page_of_records_holds_each_outputs_standing(store: dict[str, Any]) -> None:
    answer = page(store["client"], store["read"])
    assert answer["next_cursor"] is None
    assert ids(answer) == [store["later"], store["pear"], store["apple"]]
    assert {"recorder", "flaky", "protected-sink"} <= set(answer["outputs"])
    apple = answer["items"][2]
    assert apple["title"] == "Apple harvest begins" and apple["state"] == "published"
    assert apple["outputs"]["recorder"]["placement"] == "live"
    assert apple["outputs"]["recorder"]["status"] == "done"
    flaky = apple["outputs"]["flaky"]
    assert (flaky["placement"], flaky["status"], flaky["attempts"]) == ("failed", "dead", 1)
    assert "failing on purpose" in flaky["error"]
    assert flaky["can_redeliver"] is True and flaky["delivery_id"].startswith("dlv_")
    # an embargoed record's deliveries wait for their time, and say when it is
    later = answer["items"][0]
    assert later["state"] == "embargoed" and later["published_at"] == FUTURE
    cell = later["outputs"]["recorder"]
    assert (cell["status"], cell["due_at"], cell["can_redeliver"]) == ("pending", FUTURE, False)


def test_search_by_title_words_id_or_url(store: dict[str, Any]) -> None:
    client, read = store["client"], store["read"]
    assert ids(page(client, read, "?q=apple")) == [store["later"], store["apple"]]
    assert ids(page(client, read, "?q=APPLE+harvest")) == [store["apple"]]
    assert ids(page(client, read, "?q=embargoed-1")) == [store["later"]]
    assert ids(page(client, read, f"?q={store['pear']}")) == [store["pear"]]
    # the URL as sent, or any form that normalises to the same id
    assert ids(page(client, read, "?q=https://E.com/pear/")) == [store["pear"]]
    assert ids(page(client, read, "?q=https://e.com/apple")) == [store["apple"]]
    # LIKE's wildcards are plain characters in a search
    assert ids(page(client, read, "?q=%25")) == []
    assert ids(page(client, read, "?q=_")) == []


def test_a_title_search_reads_a_bounded_window_per_call(
    store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However large the store, one call looks at most SEARCH_WINDOW records; a page that
    is not full but has a cursor says the window ended, and the next page goes on."""
    client, read = store["client"], store["read"]
    monkeypatch.setattr(overview, "SEARCH_WINDOW", 2)
    first = page(client, read, "?q=apple")
    assert ids(first) == [store["later"]] and first["next_cursor"]
    rest = page(client, read, f"?q=apple&cursor={first['next_cursor']}")
    assert ids(rest) == [store["apple"]] and rest["next_cursor"] is None
    oldest = page(client, read, "?q=apple&order=oldest")
    assert ids(oldest) == [store["apple"]] and oldest["next_cursor"]
    tail = page(client, read, f"?q=apple&order=oldest&cursor={oldest['next_cursor']}")
    assert ids(tail) == [store["later"]] and tail["next_cursor"] is None
    # an exact id is found wherever it is, in one call
    assert ids(page(client, read, f"?q={store['apple']}")) == [store["apple"]]


def test_filters_by_state_delivery_output_topic_source_and_time(
    store: dict[str, Any], app: Flask
) -> None:
    client, read = store["client"], store["read"]
    assert ids(page(client, read, "?state=embargoed")) == [store["later"]]
    failing = ids(page(client, read, "?delivery=dead"))
    assert failing == [store["pear"], store["apple"]]
    assert ids(page(client, read, "?delivery=dead&output=flaky")) == failing
    assert ids(page(client, read, "?delivery=dead&output=recorder")) == []
    assert ids(page(client, read, "?delivery=scheduled")) == [store["later"]]
    assert ids(page(client, read, "?delivery=due")) == []
    assert ids(page(client, read, "?topic=markets")) == [store["pear"]]
    assert len(ids(page(client, read, "?source=api"))) == 3
    assert ids(page(client, read, "?source=cms")) == []
    assert ids(page(client, read, f"?since={FUTURE}")) == []
    assert len(ids(page(client, read, f"?until={FUTURE}"))) == 3
    assert ids(page(client, read, "?until=2000-01-01T00:00:00Z")) == []


def test_keyset_pages_both_ways(store: dict[str, Any]) -> None:
    client, read = store["client"], store["read"]
    first = page(client, read, "?limit=2")
    assert ids(first) == [store["later"], store["pear"]]
    rest = page(client, read, f"?limit=2&cursor={first['next_cursor']}")
    assert ids(rest) == [store["apple"]] and rest["next_cursor"] is None
    oldest = page(client, read, "?limit=2&order=oldest")
    assert ids(oldest) == [store["apple"], store["pear"]]
    tail = page(client, read, f"?limit=2&order=oldest&cursor={oldest['next_cursor']}")
    assert ids(tail) == [store["later"]]


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("?state=lost", 400, "state"),
        ("?delivery=bogus", 400, "delivery"),
        ("?order=sideways", 400, "order"),
        ("?cursor=!!", 400, "cursor"),
        ("?limit=0", 400, "limit"),
        ("?q=" + "x" * 201, 400, "q"),
        ("?output=" + "x" * 201, 400, "output"),
        ("?since=yesterday", 422, "since"),
        ("?until=2020-13-01", 422, "until"),
    ],
)
def test_bad_parameters_get_the_error_shape(
    store: dict[str, Any], query: str, status: int, field: str
) -> None:
    answer = store["client"].get(f"/api/v1/overview/records{query}", headers=store["read"])
    assert answer.status_code == status
    assert set(answer.json) == {"code", "status", "message", "errors"}
    assert field in answer.json["errors"]


def test_the_counts_say_what_is_wrong(store: dict[str, Any], app: Flask) -> None:
    client, read, admin = store["client"], store["read"], store["admin"]
    with transaction(app.extensions["publisher"].sessions) as session:
        session.add(_held("one"))
        session.add(_held("two", replayed=True))
    assert client.post("/api/v1/outputs/recorder/disable", headers=admin).status_code == 200
    counts = client.get("/api/v1/overview/counts", headers=read).json
    waiting = page(client, read, "?state=embargoed")["items"][0]["outputs"]
    assert counts["totals"] == {"dead": 2, "due": 0, "scheduled": len(waiting)}
    assert counts["capped"] is False and counts["oldest_due_at"] is None
    by_output = {row["output"]: row for row in counts["outputs"]}
    assert by_output["flaky"]["dead"] == 2
    assert by_output["recorder"]["scheduled"] == 1
    assert by_output["recorder"]["next_scheduled_at"] == FUTURE
    assert counts["quarantine"] == {"held": 1, "capped": False}
    assert [d["name"] for d in counts["disabled"]] == ["recorder"]
    assert counts["disabled"][0]["reason"] == "disabled by an operator"
    # redelivered: no longer failing, due now instead
    flaky = page(client, read, f"?q={store['apple']}")["items"][0]["outputs"]["flaky"]
    answer = client.post(f"/api/v1/deliveries/{flaky['delivery_id']}/redeliver", headers=admin)
    assert answer.status_code == 202
    counts = client.get("/api/v1/overview/counts", headers=read).json
    assert (counts["totals"]["dead"], counts["totals"]["due"]) == (1, 1)
    assert counts["oldest_due_at"] is not None


def test_whoami_lists_the_tokens_scopes_with_the_implied_ones(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/v1/whoami").status_code == 401
    wrong = {"Authorization": "Bearer pub_nope"}
    assert client.get("/api/v1/whoami", headers=wrong).status_code == 401
    assert client.get("/api/v1/whoami", headers=bearer(app, "read")).json == {"scopes": ["read"]}
    submitter = client.get("/api/v1/whoami", headers=bearer(app, "submit")).json
    assert submitter == {"scopes": ["submit"]}
    protected = client.get("/api/v1/whoami", headers=bearer(app, "read-protected")).json
    assert protected == {"scopes": ["read", "read-protected"]}
    admin = client.get("/api/v1/whoami", headers=bearer(app, "admin")).json
    assert admin == {"scopes": ["submit", "read", "read-protected", "admin"]}


def test_a_records_revisions_newest_first(store: dict[str, Any]) -> None:
    client, admin, read = store["client"], store["admin"], store["read"]
    submit(client, admin, title="Apple harvest begins early", originalUrl="https://e.com/apple")
    answer = client.get(f"/api/v1/records/{store['apple']}/revisions", headers=read)
    assert answer.status_code == 200
    items = answer.json["items"]
    assert [(r["revision"], r["title"]) for r in items] == [
        (2, "Apple harvest begins early"),
        (1, "Apple harvest begins"),
    ]
    assert items[1]["event"] == "published"
    assert client.get("/api/v1/records/nope/revisions", headers=read).status_code == 404
    assert client.get(f"/api/v1/records/{store['apple']}/revisions").status_code == 401


def test_a_quarantined_payload_can_be_deleted_by_an_admin(app: Flask) -> None:
    client = app.test_client()
    with transaction(app.extensions["publisher"].sessions) as session:
        row = _held("gone")
        session.add(row)
        session.flush()
        item = row.id
    url = f"/api/v1/quarantine/{item}"
    assert client.delete(url, headers=bearer(app, "read")).status_code == 403
    assert client.delete(url, headers=bearer(app, "admin")).status_code == 204
    assert client.get(url, headers=bearer(app, "read")).status_code == 404
    assert client.delete(url, headers=bearer(app, "admin")).status_code == 404


def _held(title: str, replayed: bool = False) -> QuarantineItem:
    now = utcnow()
    return QuarantineItem(
        source="api",
        content_type="application/json",
        payload=json.dumps({"title": title}).encode(),
        reason="invalid",
        errors={"originalUrl": ["missing"]},
        created_at=now,
        replayed_at=now if replayed else None,
    )


# -- query plans: the cost follows what is shown or wrong, not the store --------------------


def query_plan(app: Flask, statement: Select[Any]) -> str:
    engine = app.extensions["publisher"].engine
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})
    given = compiled.construct_params()
    convert = compiled._bind_processors  # how the statement's own execution binds them
    values = [
        convert[name](given[name]) if name in convert else given[name]
        for name in compiled.positiontup or ()
    ]
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", tuple(values))
        return " | ".join(row[3] for row in rows)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_pages_and_counts_read_through_indexes(app: Flask) -> None:
    """EXPLAIN on SQLite: keyset pages walk the primary key or an index, never sort the
    table; the delivery filter and the counts read ``ix_deliveries_due``."""
    from sqlalchemy import func, select

    from publisher.models import Delivery, Record

    now = utcnow()
    plain = select(Record).order_by(Record.seq.desc()).limit(51)
    assert "TEMP B-TREE" not in query_plan(app, plain)
    by_state = select(Record).where(Record.state == "published").order_by(Record.seq.desc())
    assert "ix_records_state_seq" in query_plan(app, by_state.limit(51))
    failing = (
        select(Record)
        .where(Record.id.in_(overview._with_deliveries("dead", None, now)))
        .order_by(Record.seq.desc())
    )
    assert "ix_deliveries_due" in query_plan(app, failing.limit(51))
    scheduled = select(Delivery.record_id).where(
        Record.id.in_(overview._with_deliveries("scheduled", "flaky", now))
    )
    assert "ix_deliveries_due" in query_plan(app, scheduled)
    by_id = select(Record).where(Record.id.in_(overview.exact_ids("https://e.com/a")))
    assert "SCAN records" not in query_plan(app, by_id.order_by(Record.seq.desc()).limit(51))
    words = select(Record).where(Record.seq.between(1, 25), overview.title_condition("zebra"))
    assert "SCAN records" not in query_plan(app, words.order_by(Record.seq.desc()).limit(51))
    counts = query_plan(app, overview.counts_statement(now))
    assert "ix_deliveries_due" in counts
    assert "SCAN deliveries" not in counts  # (a SEARCH through the index instead)
    count = select(func.count()).select_from(Delivery).where(Delivery.status == "dead")
    assert "ix_deliveries_due" in query_plan(app, count)
