"""``/openapi.json``: a valid OpenAPI 3 document that describes every route, truthfully.

The last test runs schemathesis against the app served by a real WSGI server: generated
requests (valid and invalid) must never get a 5xx, and every answer must match the
document (status code, content type, body schema).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server

from publisher.api.openapi import openapi_path
from publisher.testing import drain

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


@schemathesis.serializer("application/x-ndjson", "application/jsonl")
def _ndjson(ctx, value):  # noqa: ANN001, ANN202 - schemathesis' serializer signature
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.serializer("text/markdown")
def _markdown(ctx, value):  # noqa: ANN001, ANN202
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""


def test_document_is_valid_openapi(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    validate(answer.json)
    assert answer.json["openapi"].startswith("3.")
    assert answer.json["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_route_is_documented(app: Flask, client):
    doc = client.get("/openapi.json").json
    missing, undescribed = [], []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in {"static", "openapi.document"}:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = doc["paths"].get(openapi_path(rule.rule), {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {rule.rule}")
            elif operation.get("x-undocumented"):
                undescribed.append(f"{method} {rule.rule}")
    assert not missing, f"routes missing from /openapi.json: {missing}"
    assert not undescribed, f"routes nobody described: {undescribed}"


def test_management_routes_declare_auth_and_errors(client):
    doc = client.get("/openapi.json").json
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if path.startswith("/api/v1/"):
                assert operation.get("security") == [{"bearer": []}], (method, path)
                assert {"401", "403", "429"} <= codes, (method, path)
            if path in PUBLIC:
                assert operation.get("security") == [], (method, path)
    submit = doc["paths"]["/api/v1/records"]["post"]
    assert {"400", "413", "415", "422"} <= set(submit["responses"])
    types = set(submit["requestBody"]["content"])
    assert {
        "application/json",
        "application/x-ndjson",
        "application/yaml",
        "text/markdown",
    } <= types
    listing = {p["name"]: p for p in doc["paths"]["/api/v1/records"]["get"]["parameters"]}
    assert set(listing) == {"cursor", "limit", "published", "topic", "since", "state"}
    assert (listing["limit"]["schema"]["minimum"], listing["limit"]["schema"]["maximum"]) == (
        1,
        500,
    )


def test_a_plugin_route_nobody_described_is_still_listed(make_app):
    app = make_app()
    app.add_url_rule("/plugin-thing", "plugin_thing", lambda: "x")
    doc = app.test_client().get("/openapi.json").json
    assert doc["paths"]["/plugin-thing"]["get"]["x-undocumented"] is True


def test_every_json_answer_is_written_by_a_schema(app: Flask, client):
    """Each JSON answer of the API is a component generated from the view's marshmallow
    schema (the one that serialises it), never a description written beside the view."""
    doc = client.get("/openapi.json").json
    generated = set(app.extensions["publisher.api"].ma_plugin.converter.refs.values())
    checked = 0
    for path, operations in doc["paths"].items():
        if not path.startswith(("/api/v1/", "/webhooks/", "/healthz", "/readyz")):
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or "$ref" not in schema:
                    assert "$ref" in response or status == "204", (method, path, status)
                    continue
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert name in generated, (method, path, status, name)
                checked += 1
    assert checked >= 25


def test_a_key_a_view_adds_does_not_reach_the_client(app, client, auth, seed_json, monkeypatch):
    """Answers are serialised through their schema: what it does not declare is dropped,
    whether the view built the dict or the core did (a delivery, as the CLI shows it too)."""
    import publisher.api.records as records_api

    dispatcher = app.extensions["publisher"].dispatcher
    describe = dispatcher.describe
    monkeypatch.setattr(
        dispatcher, "describe", lambda *a: [{**d, "leak": "secret"} for d in describe(*a)]
    )

    summary = records_api.record_summary
    monkeypatch.setattr(
        records_api, "record_summary", lambda record: {**summary(record), "leak": "secret"}
    )
    detail = records_api.record_detail
    monkeypatch.setattr(
        records_api, "record_detail", lambda record: {**detail(record), "leak": "secret"}
    )
    record = {**seed_json, "published": True}
    assert client.post("/api/v1/records", json=record, headers=auth).status_code == 202
    listing = client.get("/api/v1/records", headers=auth)
    (item,) = listing.json["items"]
    assert "leak" not in item and set(item) >= {"id", "revision", "updated_at"}
    one = client.get(f"/api/v1/records/{item['id']}", headers=auth).json
    assert "leak" not in one and one["id"] == item["id"]
    assert b"secret" not in listing.data
    deliveries = client.get(f"/api/v1/records/{item['id']}/deliveries", headers=auth).json
    assert deliveries["items"] and all("leak" not in d for d in deliveries["items"])


def test_paths_are_converted_from_flask_rules():
    assert openapi_path("/a/<record_id>/b") == "/a/{record_id}/b"
    assert openapi_path("/f/<path:name>") == "/f/{name}"


# -- schemathesis against a live server ----------------------------------------------------


@pytest.fixture
def live_server(app: Flask, auth, seed_json) -> Iterator[str]:  # noqa: ANN001
    """The app behind werkzeug's threaded WSGI server on a free local port.

    One record is stored and delivered first, so every listing answers with items (a
    delivery with its history) and their shape is checked, not only the empty page's.
    """
    client = app.test_client()
    record = {**seed_json, "published": True}
    assert client.post("/api/v1/records", json=record, headers=auth).status_code < 300
    drain(app)
    assert client.get("/api/v1/deliveries", headers=auth).json["items"][0]["history"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_live_api_conforms_to_its_document(live_server, auth, mode):
    """Every operation, valid then invalid requests: no 5xx, and answers as documented.

    (schemathesis' own pytest loader does not run on pytest 9, so each operation's
    strategy runs under ``hypothesis.given`` here; failures are collected, not stopped at.)
    """
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers=auth, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            continue  # no invalid request exists (no parameters, or any string is valid)
        except Exception as exc:  # noqa: BLE001 - report every operation's failure at once
            failures.append(f"{operation.label}: {_explain(exc)}")
    assert not failures, "\n\n".join(failures)


def _explain(exc: BaseException) -> str:
    """The failure with what a flaky run wraps (hypothesis reports only a count otherwise)."""
    inner = getattr(exc, "exceptions", ())
    return "\n".join([str(exc), *(f"  - {type(e).__name__}: {e}" for e in inner)])


def test_every_attempt_outcome_the_dispatcher_writes_is_documented(client):
    """A retired delivery's history says "superseded": the document must allow it."""
    import re

    from publisher import dispatch

    attempt = client.get("/openapi.json").json["components"]["schemas"]["Attempt"]
    documented = set(attempt["properties"]["outcome"]["enum"])
    source = Path(dispatch.__file__).read_text()  # the literals the code writes
    written = set(re.findall(r'_attempt_row\([^,]+, now, "(\w+)"', source))
    written |= set(re.findall(r'_close\(connection, [^,]+, "\w+", "(\w+)"', source))
    assert {"delivered", "skipped", "superseded", "redelivered"} <= written
    assert written <= documented
