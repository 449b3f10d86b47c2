"""The ``secured`` field through the whole intake: statuses, policies, and no leaks."""

from __future__ import annotations

import json
from pathlib import Path

from publisher.secured.envelopes import seal, sign_record
from publisher.secured.keyring import Keyring, generate_key, write_key
from publisher.testing import drain
from tests.helpers import bearer


def post(app, record):
    headers = {**bearer(app), "Content-Type": "application/json"}
    client = app.test_client()
    return client.post("/api/v1/records", data=json.dumps(record), headers=headers), headers


def test_seed_record_is_sealed_and_its_envelope_reaches_no_public_output(app, seed_json):
    seed_json["published"] = True
    answer, headers = post(app, seed_json)
    assert answer.status_code == 202
    drain(app)
    read = app.test_client().get(f"/api/v1/records/{answer.json['id']}", headers=headers).json
    assert read["secured"]["status"] == "sealed"
    envelope = seed_json["secured"]
    data = Path(app.config["PUBLISHER"]["data_dir"])
    published = [p for p in (data / "site").rglob("*.md")] + [
        p for p in (data / "feeds").rglob("*") if p.is_file()
    ]
    assert published
    for path in published:
        text = path.read_text()
        assert envelope[:24] not in text and envelope[-24:] not in text, path
    feed = app.test_client().get("/feeds/atom.xml")
    assert feed.status_code == 200 and envelope[:24] not in feed.get_data(as_text=True)


def test_a_signed_record_is_verified_and_a_tampered_one_is_not(make_app, base_settings, seed_json):
    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("ES256", kid="sign-1"))
    app = make_app()
    del seed_json["secured"]
    seed_json["secured"] = sign_record(seed_json, Keyring.load(keys))
    answer, headers = post(app, seed_json)
    read = app.test_client().get(f"/api/v1/records/{answer.json['id']}", headers=headers).json
    assert read["secured"]["status"] == "verified"

    seed_json["title"] = "Changed after signing"
    answer, headers = post(app, seed_json)
    assert answer.status_code == 202  # the default policy passes it through, marked
    read = app.test_client().get(f"/api/v1/records/{answer.json['id']}", headers=headers).json
    assert read["secured"]["status"] == "invalid"


def test_reject_policy_answers_the_uniform_error(make_app, base_settings, seed_json):
    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("dir", kid="k1"))
    app = make_app(secured={"on_failure": "reject", "legacy": "refuse"})
    token = seal({"a": 1}, Keyring.load(keys), "jwe")
    answers = []
    for broken in (token[:-4] + "AAAA", token.replace(".", ".x", 1), "not;base64"):
        seed_json["secured"] = broken
        answer, _ = post(app, seed_json)
        answers.append((answer.status_code, answer.json))
    assert len({json.dumps(a, sort_keys=True) for a in answers}) == 1, answers
    assert answers[0][0] == 422


def test_quarantine_policy_stores_without_publishing(make_app, base_settings, seed_json, recorded):
    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("dir", kid="k1"))
    app = make_app(secured={"on_failure": "quarantine", "legacy": "refuse"})
    seed_json["published"] = True
    seed_json["secured"] = seal({"a": 1}, Keyring.load(keys), "jwe")[:-4] + "AAAA"
    answer, _ = post(app, seed_json)
    assert answer.status_code == 202
    assert answer.json["status"] == "quarantined"
    drain(app)
    assert recorded() == []


def test_required_policy_rejects_a_record_without_envelope(make_app, seed_json):
    app = make_app(secured={"required": True})
    del seed_json["secured"]
    answer, _ = post(app, seed_json)
    assert answer.status_code == 422
    assert "secured" in answer.json["errors"]


def test_read_protected_scope_sees_the_plaintext(make_app, base_settings, seed_json):
    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("A256KW", kid="wrap-1"))
    app = make_app()
    seed_json["secured"] = seal({"contact": "desk@example.com"}, Keyring.load(keys), "jwe")
    answer, admin = post(app, seed_json)
    client = app.test_client()
    reader = bearer(app, "read")
    plain = client.get(f"/api/v1/records/{answer.json['id']}", headers=reader).json
    assert plain["secured"] == {"status": "decrypted"}
    cleared = client.get(f"/api/v1/records/{answer.json['id']}", headers=admin).json
    assert cleared["secured"]["protected"] == {"contact": "desk@example.com"}
