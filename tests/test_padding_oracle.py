"""Legacy AES-CBC without an oracle: a client holding only ``submit`` and ``read`` tokens sees
the same answers whether a ciphertext's padding checks out or not, so it recovers nothing.

The attack this runs is the classic one: take one ciphertext block, vary the last byte of
the IV over all 256 values and watch for the one answer that differs (valid padding). Before
this change, ``secured.status`` (``decrypted-unauthenticated`` versus ``invalid``) told it.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from publisher.api.metrics import sample
from publisher.app import create_app
from publisher.errors import ConfigError
from publisher.secured.envelopes import seal
from publisher.secured.keyring import Keyring, generate_key, write_key
from tests.helpers import bearer


@pytest.fixture
def legacy_app(make_app, base_settings):  # noqa: ANN001, ANN201
    write_key(Path(base_settings["keys_dir"]), generate_key("legacy-cbc", kid="legacy-1"))
    return make_app(secured_alarm={"invalid": 50, "seconds": 3600})


def _envelopes(keys_dir: Path) -> list[str]:
    """A genuine envelope, then the same block under 256 IVs: about one pads validly."""
    genuine = seal({"contact": "desk@example.com"}, Keyring.load(keys_dir), "legacy")
    ciphertext, iv = (base64.b64decode(part) for part in genuine.split(";"))
    block = base64.b64encode(ciphertext[:16]).decode()
    probes = [
        block + ";" + base64.b64encode(iv[:15] + bytes([guess])).decode() for guess in range(256)
    ]
    return [genuine, *probes]


def _observe(client, submit: dict[str, str], read: dict[str, str], n: int, envelope: str):  # noqa: ANN001, ANN202
    record = {"id": f"probe-{n}", "title": "Probe", "secured": envelope}
    answer = client.post("/api/v1/records", json=record, headers=submit)
    shown = client.get(f"/api/v1/records/probe-{n}", headers=read)
    listed = client.get("/api/v1/records?limit=1", headers=read).json["items"][0]
    page = client.get("/api/v1/overview/records?limit=1", headers=read).json["items"][0]
    body: dict[str, Any] = dict(answer.json)
    body.pop("id", None)
    detail = {k: v for k, v in shown.json.items() if k not in ("id", "record")}
    detail.pop("created_at"), detail.pop("updated_at")
    return json.dumps(
        [answer.status_code, body, shown.status_code, detail, listed["secured"], page["secured"]],
        sort_keys=True,
    )


def test_submit_and_read_tokens_cannot_tell_padding_from_success(legacy_app, base_settings):  # noqa: ANN001
    client = legacy_app.test_client()
    submit, read = bearer(legacy_app, "submit"), bearer(legacy_app, "read")
    envelopes = _envelopes(Path(base_settings["keys_dir"]))
    seen = {_observe(client, submit, read, n, env) for n, env in enumerate(envelopes)}
    assert len(seen) == 1, seen  # one answer for all: nothing to learn
    (only,) = seen
    assert '"status": "sealed"' in only  # what `read` sees of any legacy envelope

    # the server did tell them apart: read-protected sees the truth for the same records
    truth = bearer(legacy_app, "read-protected", "read")
    statuses = {
        client.get(f"/api/v1/records/probe-{n}", headers=truth).json["secured"]["status"]
        for n in range(len(envelopes))
    }
    assert statuses == {"decrypted-unauthenticated", "invalid"}


def test_a_policy_that_would_be_an_oracle_stops_start_up(base_settings: dict[str, Any]) -> None:
    for overrides, where in (
        ({"secured": {"on_failure": "reject"}}, "secured"),
        ({"sources": {"cms": {"secured": {"on_failure": "quarantine"}}}}, "sources.cms.secured"),
    ):
        with pytest.raises(ConfigError) as info:
            create_app(overrides={**base_settings, **overrides}, environ={})
        assert str(info.value).startswith(where) and "padding oracle" in str(info.value)
    refused = {"secured": {"on_failure": "reject", "legacy": "refuse"}}
    create_app(overrides={**base_settings, **refused}, environ={}).extensions["publisher"].close()


def test_legacy_refuse_never_decrypts(make_app, base_settings, seed_json):  # noqa: ANN001
    write_key(Path(base_settings["keys_dir"]), generate_key("legacy-cbc", kid="legacy-1"))
    app = make_app(secured={"on_failure": "reject", "legacy": "refuse"})
    keyring = Keyring.load(Path(base_settings["keys_dir"]))
    good = dict(seed_json, secured=seal({"a": 1}, keyring, "legacy"))
    answer = app.test_client().post("/api/v1/records", json=good, headers=bearer(app, "submit"))
    assert (answer.status_code, answer.json["code"]) == (422, "secured_invalid")


def test_a_burst_of_invalid_envelopes_raises_an_alarm(make_app, base_settings, caplog):  # noqa: ANN001
    write_key(Path(base_settings["keys_dir"]), generate_key("legacy-cbc", kid="legacy-1"))
    app = make_app(secured_alarm={"invalid": 5, "seconds": 3600})
    client, submit = app.test_client(), bearer(app, "submit")
    caplog.set_level(logging.WARNING, "publisher.secured.policy")
    for n in range(12):
        record = {
            "id": f"bad-{n}",
            "title": "t",
            "secured": "AAAAAAAAAAAAAAAAAAAAAA==;" + "A" * 22 + "==",
        }
        assert client.post("/api/v1/records", json=record, headers=submit).status_code == 202
    assert sample(app, "publisher_secured_invalid_total", {"source": "api"}) == 12
    assert sample(app, "publisher_secured_invalid_bursts_total", {"source": "api"}) == 1
    alarms = [r for r in caplog.records if "invalid secured envelopes" in r.getMessage()]
    assert len(alarms) == 1 and "'api'" in alarms[0].getMessage()
    scraped = client.get("/metrics", headers=bearer(app, "admin")).get_data(as_text=True)
    assert 'publisher_secured_invalid_bursts_total{source="api"} 1.0' in scraped
