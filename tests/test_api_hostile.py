"""Hostile input answers 4xx quickly, in the one error shape, and the service stays up."""

from __future__ import annotations

import time

import pytest

BOMB = (
    b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + b"".join(
        f"l{i}: &l{i} [{','.join(['*' + ('a' if i == 0 else f'l{i - 1}')] * 9)}]\n".encode()
        for i in range(9)
    )
    + b"title: boom\n"
)

CASES = [
    ("malformed JSON", b'{"title": "x",', "application/json", 400),
    ("malformed YAML", b"title: [unclosed\n  - x: :", "application/yaml", 400),
    ("YAML alias bomb", BOMB, "application/yaml", 400),
    ("deep JSON", b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    ("invalid UTF-8", b'{"title": "\xff\xfe"}', "application/json", 400),
    ("wrong content type", b"<xml/>", "application/xml", 415),
    ("no content type", b"{}", "", 415),
    ("python tag", b"title: !!python/object/apply:os.system ['true']\n", "application/yaml", 400),
    ("empty body", b"", "application/json", 400),
    ("a JSON scalar", b"42", "application/json", 422),
]


@pytest.mark.parametrize("name,body,content_type,status", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_refused(client, auth, name, body, content_type, status):
    headers = dict(auth)
    if content_type:
        headers["Content-Type"] = content_type
    started = time.monotonic()
    answer = client.post("/api/v1/records", data=body, headers=headers)
    elapsed = time.monotonic() - started
    assert answer.status_code == status, (name, answer.json)
    assert set(answer.json) == {"code", "status", "message", "errors"}
    assert answer.json["status"] == status
    assert "Traceback" not in answer.get_data(as_text=True)
    assert elapsed < 5, f"{name} took {elapsed:.1f}s"
    assert client.get("/healthz").status_code == 200


def test_body_over_the_limit_answers_413(make_app, token):
    app = make_app(limits={"max_body_bytes": 1000})
    client = app.test_client()
    from publisher.db import transaction
    from publisher.tokens import create_token

    with transaction(app.extensions["publisher"].sessions) as session:
        bearer = create_token(session, ["submit"])[1]
    answer = client.post(
        "/api/v1/records",
        data=b"{" + b" " * 5000 + b"}",
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json["status"] == 413


def test_unknown_route_and_method_use_the_error_shape(client):
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json["status"] == 404
    wrong = client.put("/api/v1/records")
    assert wrong.status_code == 405 and wrong.json["status"] == 405
