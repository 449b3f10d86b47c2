"""Every output converges on what should be live, whoever runs a delivery and whenever.

Each test here is one of the findings of the delivery redesign: before it, a delivery carried
a frozen event, and whatever replayed, skipped or re-timed that event could leave an output
holding the wrong thing while the ledger said otherwise.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text, update

from publisher.models import Delivery, Placement
from publisher.secured.envelopes import seal
from publisher.secured.keyring import Keyring, generate_key, write_key
from publisher.testing import drain
from tests.helpers import bearer, submit

SEED_ID = "01ee6836a697b68869a9c9060713dc45"


def events(recorded, output="recorder"):
    return [(e["event"], e["revision"]) for e in recorded() if e["output"] == output]


def deliveries(client, auth, record_id, output="recorder"):
    items = client.get(f"/api/v1/records/{record_id}/deliveries", headers=auth).json["items"]
    return [d for d in items if d["output"] == output]


def ledger(client, auth, record_id):
    return client.get(f"/api/v1/records/{record_id}", headers=auth).json["outputs"]


def iso(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_redelivering_a_publish_after_a_retraction_is_refused_and_sends_nothing(
    app, client, auth, seed_json, recorded, invoke
):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    (published,) = deliveries(client, auth, record_id)
    assert client.delete(f"/api/v1/records/{record_id}", headers=auth).status_code == 202
    drain(app)
    assert published["can_redeliver"] is True  # it was, while it was the latest
    stale = next(d for d in deliveries(client, auth, record_id) if d["id"] == published["id"])
    assert stale["can_redeliver"] is False

    answer = client.post(f"/api/v1/deliveries/{published['id']}/redeliver", headers=auth)
    assert answer.status_code == 409 and answer.json["code"] == "conflict"
    result = invoke("redeliver", published["id"])
    assert result.exit_code == 1 and "moved past" in result.output
    drain(app)
    assert events(recorded) == [("published", 1), ("retracted", 1)]
    assert ledger(client, auth, record_id)["recorder"] == "retracted"
    retract = invoke("retract", record_id)
    assert retract.exit_code == 0


def test_a_stale_delivery_that_runs_anyway_is_retired_not_sent(
    app, client, auth, seed_json, recorded
):
    """Defence in depth: even if an old delivery is made pending behind the API's back."""
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    (published,) = deliveries(client, auth, record_id)
    client.delete(f"/api/v1/records/{record_id}", headers=auth)
    drain(app)
    services = app.extensions["publisher"]
    with services.sessions.begin() as session:
        session.execute(
            update(Delivery).where(Delivery.id == published["id"]).values(status="pending")
        )
    services.dispatcher.run_delivery([published["id"]], "recorder")
    assert events(recorded) == [("published", 1), ("retracted", 1)]
    with services.sessions() as session:
        again = session.get(Delivery, published["id"])
        (described,) = services.dispatcher.describe(session, [again])
    assert described["status"] == "superseded" and described["can_redeliver"] is False
    assert described["history"][-1]["outcome"] == "superseded"


def test_a_disabled_output_catches_up_on_enable_with_what_changed_only(
    app, client, auth, seed_json, recorded, invoke
):
    seed_json["published"] = True
    first = submit(client, auth, seed_json)["id"]
    drain(app)
    assert invoke("outputs", "disable", "recorder").exit_code == 0
    seed_json["title"] = "Edited while the output was off"
    submit(client, auth, seed_json)
    other = dict(seed_json, id="published-meanwhile", title="New while off")
    submit(client, auth, other)
    drain(app)
    assert events(recorded) == [("published", 1)]  # nothing while it is off
    waiting = [d["status"] for d in deliveries(client, auth, first)]
    assert waiting == ["done", "pending"]  # kept, not dead

    result = invoke("outputs", "enable", "recorder")
    assert result.exit_code == 0 and "2 deliveries" in result.output
    drain(app)
    got = sorted(
        (e["id"], e["event"], e["revision"]) for e in recorded() if e["output"] == "recorder"
    )
    assert got == [
        (first, "published", 1),
        (first, "updated", 2),
        ("published-meanwhile", "published", 1),
    ]


def test_reconcile_without_inventory_resends_under_the_original_ids(
    app, client, auth, seed_json, recorded, invoke
):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    (first,) = deliveries(client, auth, record_id, "flaky")
    result = invoke("reconcile", "flaky")
    assert result.exit_code == 0 and "1 resent" in result.output
    drain(app)
    sent = [e["delivery_id"] for e in recorded() if e["output"] == "flaky"]
    assert sent == [first["id"], first["id"]]  # the receiver can drop the duplicate


def test_reconcile_with_inventory_repairs_only_what_drifted(
    app, client, auth, seed_json, recorded, invoke, base_settings
):
    seed_json["published"] = True
    for name in ("a", "b", "c"):
        submit(client, auth, dict(seed_json, id=name, title=f"Story {name}"))
    drain(app)
    client.delete("/api/v1/records/c", headers=auth)
    drain(app)
    log = base_settings["plugins"]["recording"]["log"]
    with open(log, "a") as handle:  # the output lost "a" and something brought "c" back
        for action, record_id in (("retract", "a"), ("publish", "c")):
            line = {"output": "recorder", "action": action, "id": record_id, "revision": 1}
            handle.write(json.dumps(line) + "\n")
    before = len(recorded())
    result = invoke("reconcile", "recorder")
    assert result.exit_code == 0, result.output
    assert "1 missing, 0 stale, 1 gone" in result.output
    drain(app)
    repaired = [(e["id"], e["event"]) for e in recorded()[before:]]
    assert sorted(repaired) == [("a", "published"), ("c", "retracted")]  # "b" untouched
    assert app.extensions["publisher"].dispatcher.outputs["recorder"].output.inventory() == {
        "a": 1,
        "b": 1,
    }


def test_scheduled_events_carry_the_time_of_their_transition(
    app, client, auth, seed_json, recorded
):
    now = datetime.now(UTC).replace(microsecond=0)
    # far enough apart that a loaded machine still runs each at its time, not after the next
    live_at, gone_at = now + timedelta(seconds=3), now + timedelta(seconds=7)
    seed_json.update(published=True, publishedDateTime=iso(live_at), expiresAt=iso(gone_at))
    submit(client, auth, seed_json)
    drain(app)
    assert events(recorded) == []  # embargoed
    for moment in (live_at, gone_at):  # a worker's sweeper, when each time comes
        time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.3)
        app.extensions["publisher"].dispatcher.sweep(grace=0)
        drain(app)
    stamps = [(e["event"], e["occurred_at"]) for e in recorded() if e["output"] == "recorder"]
    assert stamps == [("published", iso(live_at)), ("retracted", iso(gone_at))]


def test_redeliver_keeps_the_attempts_and_adds_to_their_history(
    make_app, base_settings, tmp_path, seed_json
):
    flag = tmp_path / "fail"
    flag.touch()
    log = base_settings["plugins"]["recording"]["log"]
    app = make_app(
        delivery={"retry_schedule": [0, 0]},
        plugins={"recording": {"log": log, "fail_flag": str(flag)}},
    )
    client, auth = app.test_client(), bearer(app)
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    (dead,) = deliveries(client, auth, record_id, "flaky")
    assert dead["status"] == "dead" and dead["attempts"] == 2
    flag.unlink()
    answer = client.post(f"/api/v1/deliveries/{dead['id']}/redeliver", headers=auth)
    assert answer.status_code == 202
    drain(app)
    (done,) = deliveries(client, auth, record_id, "flaky")
    assert done["status"] == "done" and done["attempts"] == 3
    outcomes = [step["outcome"] for step in done["history"]]
    assert outcomes == ["failed", "dead", "redelivered", "delivered"]
    assert "failing on purpose" in done["history"][0]["error"]
    assert all(step["at"] for step in done["history"])


def test_settling_finds_records_by_id_not_by_state(app):
    """With many records in one state, advancing a batch's records must not walk them all."""
    with app.extensions["publisher"].engine.connect() as connection:
        plan = connection.execute(
            text(
                "EXPLAIN QUERY PLAN UPDATE records SET state = 'published' "
                "WHERE id IN ('a', 'b') AND +state = 'embargoed' AND published_at <= '2030-01-01'"
            )
        ).all()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "ix_records_state_seq" not in detail and "USING INDEX" in detail.upper()


def test_the_ledger_is_what_the_output_confirmed(app, client, auth, seed_json):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    services = app.extensions["publisher"]
    with services.sessions() as session:
        rows = session.execute(select(Placement.output, Placement.held_revision)).all()
    assert {held for _, held in rows} == {None}  # planned, not yet confirmed
    drain(app)
    with services.sessions() as session:
        rows = session.execute(select(Placement.output, Placement.held_revision)).all()
    assert {held for _, held in rows} == {1}
    assert ledger(client, auth, record_id)["recorder"] == "live"


def test_the_same_protected_content_sealed_again_is_no_edit(make_app, base_settings, seed_json):
    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("dir", kid="enc-1"))
    app = make_app()
    client, auth = app.test_client(), bearer(app)
    seed_json["published"] = True
    seed_json["secured"] = seal({"contact": "desk@example.com"}, Keyring.load(keys), "jwe")
    first = submit(client, auth, seed_json)
    seed_json["secured"] = seal({"contact": "desk@example.com"}, Keyring.load(keys), "jwe")
    assert submit(client, auth, seed_json)["status"] == "unchanged"  # a fresh IV, same content
    seed_json["secured"] = seal({"contact": "news@example.com"}, Keyring.load(keys), "jwe")
    assert submit(client, auth, seed_json) == {**first, "status": "revised", "revision": 2}


def test_a_key_added_to_the_folder_is_used_without_a_restart(make_app, base_settings, seed_json):
    keys = Path(base_settings["keys_dir"])
    elsewhere = Keyring.from_jwks([generate_key("dir", kid="late-key")])
    app = make_app(secured={"required": False, "on_sealed": "quarantine"})
    client, auth = app.test_client(), bearer(app)
    seed_json.update(published=True, id="late")
    seed_json["secured"] = seal({"contact": "desk@example.com"}, elsewhere, "jwe")
    assert submit(client, auth, seed_json)["status"] == "quarantined"
    (item,) = client.get("/api/v1/quarantine", headers=auth).json["items"]

    write_key(keys, next(iter(elsewhere)).key.as_dict(private=True) | {"kid": "late-key"})
    time.sleep(1.1)  # the folder is looked at again at most once a second
    answer = client.post(f"/api/v1/quarantine/{item['id']}/replay", headers=auth)
    assert answer.status_code == 200, answer.json
    read = client.get("/api/v1/records/late", headers=bearer(app, "read", "read-protected"))
    assert read.json["secured"]["status"] == "decrypted"
    assert read.json["secured"]["protected"] == {"contact": "desk@example.com"}


def test_protected_data_that_cannot_be_opened_fails_the_delivery_visibly(
    make_app, base_settings, seed_json, recorded
):
    keys = Path(base_settings["keys_dir"])
    path = write_key(keys, generate_key("dir", kid="going-away"))
    app = make_app()
    client, auth = app.test_client(), bearer(app)
    seed_json.update(published=True, id="protected")
    seed_json["secured"] = seal({"contact": "desk@example.com"}, Keyring.load(keys), "jwe")
    submit(client, auth, seed_json)
    path.unlink()  # the key is gone before the worker runs
    time.sleep(1.1)
    drain(app)
    (delivery,) = deliveries(client, auth, "protected", "protected-sink")
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert "cannot be opened" in delivery["error"]
    assert [e for e in recorded() if e["output"] == "protected-sink"] == []
    assert events(recorded) == [("published", 1)]  # public outputs are not held back
