"""``/api/v1/records``: what a sender and a reader see."""

from __future__ import annotations

import json

from tests.helpers import DATA


def post(client, auth, body, content_type="text/markdown"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/api/v1/records", data=data, headers={**auth, "Content-Type": content_type})


def test_seed_record_as_markdown_is_accepted_and_reads_back_intact(client, auth, seed_md):
    answer = post(client, auth, seed_md)
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "created"
    assert answer.json["revision"] == 1
    record_id = answer.json["id"]

    read = client.get(f"/api/v1/records/{record_id}", headers=auth)
    assert read.status_code == 200
    fields = read.json["record"]
    assert fields["publishedDateTime"] in ("2022-05-23T13:36:00Z", "2022-05-23T13:36:00+00:00")
    assert fields["heat"] == -1
    assert fields["published"] is False
    assert fields["title"] == "UK fines US AI firm £7.5m over mass image collection"
    assert len(fields["related"]) == 4
    assert fields["related"][0]["images"][0]["width"] == 620
    assert read.json["secured"]["status"] == "sealed"
    assert read.json["state"] == "draft"


def test_same_record_as_json_gets_the_same_id_and_no_new_revision(client, auth, seed_md, seed_json):
    first = post(client, auth, seed_md)
    second = post(client, auth, seed_json, "application/json")
    assert second.status_code == 202
    assert second.json["id"] == first.json["id"]
    assert second.json["status"] == "unchanged"
    assert second.json["revision"] == 1


def test_changed_content_makes_a_new_revision(client, auth, seed_json):
    post(client, auth, seed_json, "application/json")
    seed_json["title"] = "A new title"
    answer = post(client, auth, seed_json, "application/json")
    assert answer.json["status"] == "revised"
    assert answer.json["revision"] == 2


def test_batch_answers_per_item(client, auth, seed_json):
    bad = dict(seed_json, title="", originalUrl="https://example.com/other")
    answer = post(client, auth, [seed_json, bad], "application/json")
    assert answer.status_code == 202
    items = answer.json["items"]
    assert [i["status"] for i in items] == ["created", "invalid"]
    assert "title" in items[1]["errors"]


def test_invalid_records_answer_422_with_field_paths(client, auth):
    expected = {
        "no-title.md": "title",
        "bad-url.md": "webUrl",
        "quality-high.md": "quality",
        "related-missing-weburl.md": "related.1.webUrl",
    }
    for name, path in expected.items():
        answer = post(client, auth, (DATA / "invalid" / name).read_bytes())
        assert answer.status_code == 422, name
        assert answer.json["code"] == "invalid"
        assert answer.json["status"] == 422
        assert any(key.endswith(path) or key == path for key in answer.json["errors"]), (
            name,
            answer.json,
        )


def test_list_records_with_cursor_pagination_and_filters(client, auth, seed_json):
    for n in range(5):
        record = dict(seed_json, originalUrl=f"https://example.com/{n}", published=n % 2 == 0)
        record["topics"] = ["AI"] if n < 3 else ["Other"]
        assert post(client, auth, record, "application/json").status_code == 202
    page = client.get("/api/v1/records?limit=2", headers=auth).json
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(f"/api/v1/records?limit=10&cursor={page['next_cursor']}", headers=auth).json
    assert len(rest["items"]) == 3 and rest["next_cursor"] is None
    ids = [i["id"] for i in page["items"] + rest["items"]]
    assert len(set(ids)) == 5
    published = client.get("/api/v1/records?published=true", headers=auth).json["items"]
    assert len(published) == 3
    ai = client.get("/api/v1/records?topic=AI", headers=auth).json["items"]
    assert len(ai) == 3


def test_unknown_record_is_404_in_the_error_shape(client, auth):
    answer = client.get("/api/v1/records/nope", headers=auth)
    assert answer.status_code == 404
    assert set(answer.json) == {"code", "status", "message", "errors"}


def test_tokens_are_required_and_scoped(client, token, seed_md):
    assert post(client, {}, seed_md).status_code == 401
    reader = {"Authorization": f"Bearer {token('read')}"}
    answer = post(client, reader, seed_md)
    assert answer.status_code == 403
    assert answer.json["code"] == "forbidden"
    assert post(client, {"Authorization": "Bearer pub_wrong"}, seed_md).status_code == 401


def test_unknown_fields_are_kept_with_a_warning(client, auth, seed_json):
    seed_json["editorNote"] = "keep me"
    answer = post(client, auth, seed_json, "application/json")
    assert answer.status_code == 202
    assert any("editorNote" in w for w in answer.json["warnings"])
    read = client.get(f"/api/v1/records/{answer.json['id']}", headers=auth).json
    assert read["record"]["editorNote"] == "keep me"


def test_strict_mode_rejects_unknown_fields(make_app, seed_json):
    app = make_app(strict=True)
    from publisher.db import transaction
    from publisher.tokens import create_token

    with transaction(app.extensions["publisher"].sessions) as session:
        bearer = create_token(session, ["submit"])[1]
    seed_json["editorNote"] = "x"
    answer = app.test_client().post(
        "/api/v1/records",
        data=json.dumps(seed_json),
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert "editorNote" in answer.json["errors"]


def test_a_forged_cursor_is_a_400_not_a_500(client, auth):
    import base64

    for raw in (b"99999999999999999999999", b"-1", b"abc"):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = client.get(f"/api/v1/records?cursor={cursor}", headers=auth)
        assert answer.status_code == 400, raw
        assert answer.json["errors"] == {"cursor": ["invalid cursor"]}


def test_a_store_that_is_down_answers_503_and_a_refused_record_422(
    app, client, auth, seed_json, monkeypatch
):
    from sqlalchemy.exc import IntegrityError, OperationalError

    intake = app.extensions["publisher.intake"]
    failure = [OperationalError("INSERT ...", {}, Exception("server closed the connection"))]

    def failing(*args, **kwargs):  # the group's write, then the write alone: both fail
        raise failure[0]

    monkeypatch.setattr(intake, "_write", failing)
    body, headers = json.dumps(seed_json), {**auth, "Content-Type": "application/json"}
    down = client.post("/api/v1/records", data=body, headers=headers)
    assert (down.status_code, down.json["code"], down.headers["Retry-After"]) == (
        503,
        "unavailable",
        "5",
    )
    assert "server closed" not in down.get_data(as_text=True)  # no driver detail leaks
    # the store refusing this record's content is the record's problem, not an outage:
    # a 422 the sender can act on (not a 500, and not a 503 to retry for ever)
    failure[0] = IntegrityError("INSERT ...", {}, Exception("a constraint the code missed"))
    refused = client.post("/api/v1/records", data=body, headers=headers)
    assert (refused.status_code, refused.json["code"]) == (422, "invalid")
    assert list(refused.json["errors"]) == ["_record"]
    assert "constraint" not in refused.get_data(as_text=True)
