"""``GET /api/v1/deliveries`` pages with a cursor, as ``/api/v1/records`` does: none is lost."""

from __future__ import annotations

import json

from publisher.testing import drain
from tests.helpers import bearer


def test_every_delivery_is_reached_page_by_page(app, client) -> None:  # noqa: ANN001
    headers = {**bearer(app, "admin"), "Content-Type": "application/json"}
    batch = [{"id": f"r-{n}", "title": f"T {n}", "published": True} for n in range(7)]
    assert (
        client.post("/api/v1/records", data=json.dumps(batch), headers=headers).status_code == 202
    )
    drain(app)
    everything = client.get("/api/v1/deliveries?limit=500", headers=headers).json
    assert everything["next_cursor"] is None
    total = {item["id"] for item in everything["items"]}
    assert len(total) >= 7
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/deliveries", query_string=query, headers=headers).json
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == total
    done = client.get("/api/v1/deliveries?status=done&limit=2", headers=headers).json
    assert len(done["items"]) == 2 and done["next_cursor"]


def test_a_bad_cursor_is_400(app, client) -> None:  # noqa: ANN001
    for cursor in ("nonsense", "W10", "WyJ4IiwgMV0"):
        answer = client.get(f"/api/v1/deliveries?cursor={cursor}", headers=bearer(app, "read"))
        assert answer.status_code == 400, answer.json
        assert answer.json["errors"] == {"cursor": ["invalid cursor"]}


def test_a_page_costs_the_same_queries_however_many_deliveries_it_holds(app, client) -> None:  # noqa: ANN001
    """``can_redeliver`` is read for the page at once, not with two queries per delivery."""
    from sqlalchemy import event

    headers = {**bearer(app, "admin"), "Content-Type": "application/json"}
    batch = [{"id": f"q-{n}", "title": f"T {n}", "published": True} for n in range(12)]
    client.post("/api/v1/records", data=json.dumps(batch), headers=headers)
    drain(app)
    engine = app.extensions["publisher"].engine
    counts = []
    for limit in (2, 20):
        statements: list[str] = []

        def listener(conn, cursor, sql, *rest, seen: list[str] = statements) -> None:  # noqa: ANN001
            seen.append(sql)

        event.listen(engine, "before_cursor_execute", listener)
        try:
            page = client.get(f"/api/v1/deliveries?status=done&limit={limit}", headers=headers)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert len(page.json["items"]) == limit
        counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1], counts


def test_a_page_holds_fifty_unless_asked_for_more(app, client) -> None:  # noqa: ANN001
    """The default page of every list, records and deliveries alike (limit up to 500)."""
    headers = {**bearer(app, "admin"), "Content-Type": "application/json"}
    batch = [{"id": f"p-{n}", "title": f"T {n}", "published": True} for n in range(30)]
    assert (
        client.post("/api/v1/records", data=json.dumps(batch), headers=headers).status_code == 202
    )
    drain(app)  # 30 records, each to every output of the test app
    total = len(client.get("/api/v1/deliveries?limit=500", headers=headers).json["items"])
    assert total > 50
    first = client.get("/api/v1/deliveries", headers=headers).json
    assert len(first["items"]) == 50 and first["next_cursor"]
    more = client.get("/api/v1/deliveries?limit=200", headers=headers).json["items"]
    assert len(more) == min(200, total)


def _selects_during(engine, call) -> list[str]:  # noqa: ANN001
    from sqlalchemy import event

    statements: list[str] = []

    def listener(conn, cursor, sql, *rest) -> None:  # noqa: ANN001
        statements.append(sql)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def test_a_page_reads_no_records_fields_when_its_outputs_take_everything(app, client) -> None:  # noqa: ANN001
    """``can_redeliver`` needs a record's fields only for an output's routing rule."""
    headers = {**bearer(app, "admin"), "Content-Type": "application/json"}
    batch = [{"id": f"f-{n}", "title": f"T {n}", "published": True} for n in range(3)]
    client.post("/api/v1/records", data=json.dumps(batch), headers=headers)
    drain(app)
    pages: list = []
    selects = _selects_during(
        app.extensions["publisher"].engine,
        lambda: pages.append(client.get("/api/v1/deliveries?status=done", headers=headers)),
    )
    assert pages[0].status_code == 200 and pages[0].json["items"]
    assert all(item["can_redeliver"] for item in pages[0].json["items"])
    assert not [s for s in selects if "records.fields" in s], selects


def test_a_routed_output_still_has_its_rule_read_for_can_redeliver(make_app) -> None:  # noqa: ANN001
    app = make_app(outputs={"recorder": {"when": "quality >= 20"}})
    client = app.test_client()
    headers = {**bearer(app, "admin"), "Content-Type": "application/json"}
    record = {"id": "routed", "title": "T", "published": True, "quality": 25}
    client.post("/api/v1/records", data=json.dumps(record), headers=headers)
    drain(app)
    page = client.get("/api/v1/deliveries?output=recorder&status=done", headers=headers).json
    (published,) = page["items"]
    assert published["event"] == "published" and published["can_redeliver"] is True
    record["quality"] = 5  # the rule stops matching: the output is to let the record go
    client.post("/api/v1/records", data=json.dumps(record), headers=headers)
    drain(app)
    page = client.get("/api/v1/deliveries?output=recorder&status=done", headers=headers).json
    by_event = {item["event"]: item["can_redeliver"] for item in page["items"]}
    assert by_event == {"published": False, "retracted": True}
