"""Every stored record reaches every output, at least once, through its life."""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from publisher.models import Delivery, Placement, Record
from publisher.testing import drain
from tests.helpers import bearer, submit


def events_at(recorded, output="recorder"):
    return [(e["event"], e["revision"]) for e in recorded() if e["output"] == output]


def deliveries(client, auth, record_id):
    return client.get(f"/api/v1/records/{record_id}/deliveries", headers=auth).json["items"]


def test_published_record_reaches_every_output(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    answer = submit(client, auth, seed_json)
    drain(app)
    outputs = client.get(f"/api/v1/records/{answer['id']}", headers=auth).json["outputs"]
    assert outputs == {name: "live" for name in app.extensions["publisher"].dispatcher.outputs}
    assert events_at(recorded) == [("published", 1)]
    items = deliveries(client, auth, answer["id"])
    assert {d["status"] for d in items} == {"done"}
    assert all(d["id"].startswith("dlv_") for d in items)


def test_draft_is_stored_but_sent_nowhere(app, client, auth, seed_json, recorded):
    answer = submit(client, auth, seed_json)  # the seed record is a draft
    drain(app)
    assert recorded() == []
    assert deliveries(client, auth, answer["id"]) == []


def test_lifecycle_unchanged_updated_volatile_retracted(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    assert submit(client, auth, seed_json)["status"] == "unchanged"
    seed_json["heat"] = 99  # volatile: a revision, no event
    assert submit(client, auth, seed_json)["revision"] == 2
    drain(app)
    assert events_at(recorded) == [("published", 1)]
    seed_json["title"] = "A corrected title"
    submit(client, auth, seed_json)
    drain(app)
    assert events_at(recorded)[-1] == ("updated", 3)
    assert recorded()[-1]["title"] == "A corrected title"
    seed_json["published"] = False
    submit(client, auth, seed_json)
    drain(app)
    assert events_at(recorded)[-1] == ("retracted", 4)
    outputs = client.get(f"/api/v1/records/{record_id}", headers=auth).json["outputs"]
    assert set(outputs.values()) == {"retracted"}


def test_delete_retracts_everywhere_it_was(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    answer = client.delete(f"/api/v1/records/{record_id}", headers=auth)
    assert answer.status_code == 202
    drain(app)
    retracted = {e["output"] for e in recorded() if e["event"] == "retracted"}
    assert retracted == {"recorder", "flaky", "protected-sink"}
    site = Path(app.config["PUBLISHER"]["data_dir"]) / "site"
    assert not [p for p in site.rglob("*.md")]


def test_failing_output_is_retried_then_dead_then_redelivered(
    make_app, base_settings, tmp_path, seed_json, recorded
):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(
        delivery={"retry_schedule": [0, 0, 0]},
        plugins={
            "recording": {
                "log": base_settings["plugins"]["recording"]["log"],
                "fail_flag": str(flag),
            }
        },
    )
    client = app.test_client()
    auth = bearer(app)
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    flaky = next(d for d in deliveries(client, auth, record_id) if d["output"] == "flaky")
    assert flaky["status"] == "dead"
    assert flaky["attempts"] == 3
    assert "failing on purpose" in flaky["error"]
    assert events_at(recorded) == [("published", 1)]  # the others were not held back
    dead = client.get("/api/v1/deliveries?status=dead", headers=auth).json["items"]
    assert [d["id"] for d in dead] == [flaky["id"]]
    outputs = client.get(f"/api/v1/records/{record_id}", headers=auth).json["outputs"]
    assert outputs["flaky"] == "failed"

    flag.unlink()
    answer = client.post(f"/api/v1/deliveries/{flaky['id']}/redeliver", headers=auth)
    assert answer.status_code == 202
    drain(app)
    again = next(d for d in deliveries(client, auth, record_id) if d["output"] == "flaky")
    assert again["status"] == "done" and again["id"] == flaky["id"]
    assert events_at(recorded, "flaky") == [("published", 1)]
    assert recorded()[-1]["delivery_id"] == flaky["id"]


def test_retry_schedule_spaces_attempts(make_app, base_settings, tmp_path, seed_json):
    flag = tmp_path / "fail"
    flag.touch()
    app = make_app(
        delivery={"retry_schedule": [0, 300, 1800]},
        plugins={
            "recording": {
                "log": base_settings["plugins"]["recording"]["log"],
                "fail_flag": str(flag),
            }
        },
    )
    services = app.extensions["publisher"]
    seed_json["published"] = True
    intake = app.extensions["publisher.intake"]
    intake.take([seed_json])
    before = datetime.now(UTC)
    drain(app)
    with services.sessions() as session:
        flaky = session.scalars(select(Delivery).where(Delivery.output == "flaky")).one()
    assert flaky.status == "pending" and flaky.attempts == 1
    wait = (flaky.next_attempt_at - before).total_seconds()
    assert 290 < wait < 310


def test_embargoed_record_waits_for_its_time(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    seed_json["publishedDateTime"] = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    assert recorded() == []
    assert client.get(f"/api/v1/records/{record_id}", headers=auth).json["state"] == "embargoed"
    services = app.extensions["publisher"]
    assert services.dispatcher.sweep() == 0  # not yet due
    with services.sessions.begin() as session:  # time passes: the schedule is in the database
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(Delivery).values(next_attempt_at=past))
        session.execute(update(Record).values(published_at=past))
    assert services.dispatcher.sweep() == 5
    drain(app)
    assert events_at(recorded) == [("published", 1)]
    assert client.get(f"/api/v1/records/{record_id}", headers=auth).json["state"] == "published"


def test_expiry_retracts_at_its_time(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    seed_json["expiresAt"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    assert events_at(recorded) == [("published", 1)]
    services = app.extensions["publisher"]
    with services.sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with services.sessions.begin() as session:  # the expiry time has come
        session.execute(update(Record).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    services.dispatcher.sweep()
    drain(app)
    assert events_at(recorded)[-1] == ("retracted", 1)
    assert client.get(f"/api/v1/records/{record_id}", headers=auth).json["state"] == "expired"


def test_a_lost_enqueue_is_repaired_by_the_sweeper(app, seed_json, recorded):
    services = app.extensions["publisher"]
    services.huey.flush()  # as if the process died between commit and enqueue
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    services.huey.flush()
    assert drain(app) == 0
    assert services.dispatcher.sweep(grace=0) == 5
    drain(app)
    assert events_at(recorded) == [("published", 1)]


def test_poison_delivery_ends_dead(app, seed_json):
    services = app.extensions["publisher"]
    services.dispatcher.max_receives = 2
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    services.huey.flush()
    with services.sessions.begin() as session:  # three receives that never finished
        session.execute(update(Delivery).values(receives=3, attempts=0))
    services.dispatcher.sweep(grace=0)
    drain(app)
    with services.sessions() as session:
        rows = list(session.scalars(select(Delivery)))
    assert {d.status for d in rows} == {"dead"}
    assert all("worker died" in d.error for d in rows)


def test_only_outputs_that_accept_protected_data_see_it(
    make_app, base_settings, seed_json, recorded
):
    from publisher.secured.envelopes import seal
    from publisher.secured.keyring import Keyring, generate_key, write_key

    keys = Path(base_settings["keys_dir"])
    write_key(keys, generate_key("dir", kid="k1"))
    app = make_app()
    seed_json["published"] = True
    seed_json["secured"] = seal({"editorPhone": "+44 1234"}, Keyring.load(keys), "jwe")
    app.extensions["publisher.intake"].take([seed_json])
    drain(app)
    seen = {e["output"]: e for e in recorded()}
    assert seen["protected-sink"]["protected"] == {"editorPhone": "+44 1234"}
    assert seen["recorder"]["protected"] is None
    assert "secured" not in seen["recorder"]["fields"]
    site = Path(app.config["PUBLISHER"]["data_dir"])
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in {".md", ".xml", ".json"}:
            text = path.read_text(errors="replace")
            assert "+44 1234" not in text and seed_json["secured"][:40] not in text, path


def test_routing_rules_choose_outputs(make_app, seed_json, recorded):
    app = make_app(outputs={"recorder": {"when": "quality >= 20"}})
    seed_json["published"] = True
    intake = app.extensions["publisher.intake"]
    intake.take([seed_json])  # quality 17
    drain(app)
    assert events_at(recorded) == []
    assert events_at(recorded, "flaky") == [("published", 1)]
    seed_json["quality"] = 25
    intake.take([seed_json])
    drain(app)
    assert events_at(recorded) == [("published", 2)]
    seed_json["quality"] = 5  # stops matching: leaves the output
    intake.take([seed_json])
    drain(app)
    assert events_at(recorded)[-1] == ("retracted", 3)


def test_reconcile_replays_a_wiped_output(app, invoke, seed_json):
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    drain(app)
    site = Path(app.config["PUBLISHER"]["data_dir"]) / "site"
    files = [p for p in site.rglob("*.md")]
    assert len(files) == 1
    files[0].unlink()
    result = invoke("reconcile", "files")
    assert result.exit_code == 0, result.output
    assert "1 resent" in result.output or "1 missing" in result.output
    drain(app)
    assert [p.name for p in site.rglob("*.md")] == [files[0].name]


def test_a_hanging_output_times_out_without_holding_back_the_others(
    make_app, base_settings, seed_json, recorded
):
    import time

    log = base_settings["plugins"]["recording"]["log"]
    app = make_app(
        plugins={"recording": {"log": log, "slow_seconds": 5}},
        outputs={"slow": {"timeout": 0.3, "retry_schedule": [0]}},
    )
    seed_json["published"] = True
    started = time.monotonic()
    app.extensions["publisher.intake"].take([seed_json])
    drain(app)
    assert time.monotonic() - started < 4
    with app.extensions["publisher"].sessions() as session:
        rows = {d.output: d for d in session.scalars(select(Delivery))}
    assert rows["slow"].status == "dead"
    assert "did not answer within 0.3 s" in rows["slow"].error
    assert {name: d.status for name, d in rows.items() if name != "slow"} == {
        "files": "done",
        "feeds": "done",
        "recorder": "done",
        "flaky": "done",
        "protected-sink": "done",
    }


def test_gone_disables_the_output_until_an_operator_enables_it(
    make_app, base_settings, tmp_path, seed_json, recorded
):
    flag = tmp_path / "gone"
    flag.touch()
    log = base_settings["plugins"]["recording"]["log"]
    app = make_app(plugins={"recording": {"log": log, "gone_flag": str(flag)}})
    client = app.test_client()
    auth = bearer(app)
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    gone = next(d for d in deliveries(client, auth, record_id) if d["output"] == "gone")
    # no retries after a 410, and the delivery waits for the output to come back
    assert gone["status"] == "pending" and gone["attempts"] == 1
    assert "410" in gone["error"] and gone["history"][0]["outcome"] == "failed"
    listed = {o["name"]: o for o in client.get("/api/v1/outputs", headers=auth).json["items"]}
    assert listed["gone"]["enabled"] is False
    assert "410" in listed["gone"]["reason"]
    seed_json["title"] = "Next revision"
    submit(client, auth, seed_json)
    drain(app)
    assert events_at(recorded, "gone") == []  # nothing is sent while it is off

    flag.unlink()
    assert client.post("/api/v1/outputs/gone/enable", headers=auth).json["enabled"] is True
    drain(app)
    # enabling catches up with what changed meanwhile, once, and nothing else
    assert events_at(recorded, "gone") == [("published", 2)]
    assert client.post("/api/v1/outputs/nope/enable", headers=auth).status_code == 404


def test_a_delivery_waits_for_its_running_sibling_then_runs(app, seed_json, recorded):
    services = app.extensions["publisher"]
    intake = app.extensions["publisher.intake"]
    seed_json["published"] = True
    intake.take([seed_json])
    services.huey.flush()
    running = datetime.now(UTC) + timedelta(minutes=1)
    with services.sessions.begin() as session:  # a worker holds every publish delivery
        session.execute(update(Delivery).values(lease_until=running))
    stored = intake.retract("01ee6836a697b68869a9c9060713dc45")
    assert stored.deliveries  # retractions planned, but their siblings are running
    drain(app)
    assert recorded() == []  # none ran beside its sibling
    huey = services.huey
    later = huey._get_timestamp() + timedelta(seconds=3)
    looks = [delivery_id for task in huey.scheduled() for delivery_id in task.args[0]]
    assert sorted(looks) == sorted(d.id for d in stored.deliveries)  # each looks again shortly
    with services.sessions.begin() as session:  # the publishes finish
        session.execute(
            update(Delivery)
            .where(Delivery.event == "published")
            .values(status="done", lease_until=None)
        )
        # as a worker settling them would: the outputs confirmed they hold revision 1
        session.execute(update(Placement).values(state="live", held_revision=1))
    for task in huey.read_schedule(later):  # two seconds on: the scheduled looks run
        services.dispatcher.run_delivery(*task.args)
    assert [e["event"] for e in recorded() if e["output"] == "recorder"] == ["retracted"]


def test_sending_a_deleted_record_again_publishes_it_again(app, client, auth, seed_json, recorded):
    seed_json["published"] = True
    record_id = submit(client, auth, seed_json)["id"]
    drain(app)
    client.delete(f"/api/v1/records/{record_id}", headers=auth)
    drain(app)
    again = submit(client, auth, seed_json)
    assert again["status"] == "revised"
    drain(app)
    assert [kind for kind, _ in events_at(recorded)] == ["published", "retracted", "published"]
    assert submit(client, auth, seed_json)["status"] == "unchanged"


def batching_app(make_app, base_settings, **delivery):
    log = base_settings["plugins"]["recording"]["log"]
    return make_app(
        plugins={"recording": {"log": log, "batching": True}},
        delivery={"retry_schedule": [0, 60], **delivery},
    )


def stories(seed_json, *titles):
    return [
        dict(seed_json, id=f"batch-{n}", title=title, published=True)
        for n, title in enumerate(titles)
    ]


def statuses(app, output):
    with app.extensions["publisher"].sessions() as session:
        query = select(Delivery.record_id, Delivery.status).where(Delivery.output == output)
        return dict(session.execute(query).all())


def test_a_message_carries_a_batch_and_each_output_takes_its_share_at_once(
    make_app, base_settings, seed_json, recorded
):
    app = batching_app(make_app, base_settings)
    app.extensions["publisher.intake"].take(stories(seed_json, "a", "b", "c", "d", "e"))
    huey = app.extensions["publisher"].huey
    # 5 records x 6 outputs = 30 deliveries, batch_size 50: one message per output (its lane)
    assert len(huey) == 6
    assert drain(app) == 6
    batches = [e["size"] for e in recorded() if e["action"] == "batch"]
    assert batches == [5]  # one deliver_many call with all five
    assert len([e for e in recorded() if e["output"] == "recorder"]) == 5  # one by one
    assert set(statuses(app, "batcher").values()) == {"done"}
    assert set(statuses(app, "feeds").values()) == {"done"}


def test_batch_size_bounds_a_message(make_app, base_settings, seed_json, recorded):
    app = batching_app(make_app, base_settings, batch_size=4)
    app.extensions["publisher.intake"].take(stories(seed_json, "a", "b", "c"))
    # 18 deliveries: 3 for each of 6 outputs, and each output's 3 fit in one message
    assert len(app.extensions["publisher"].huey) == 6
    drain(app)
    assert max(e["size"] for e in recorded() if e["action"] == "batch") <= 4
    assert set(statuses(app, "batcher").values()) == {"done"}


def test_one_refusal_in_a_batch_fails_only_its_own_delivery(
    make_app, base_settings, seed_json, recorded
):
    app = batching_app(make_app, base_settings)
    app.extensions["publisher.intake"].take(stories(seed_json, "a", "refuse", "c"))
    drain(app, rounds=6)
    assert statuses(app, "batcher") == {"batch-0": "done", "batch-1": "pending", "batch-2": "done"}
    with app.extensions["publisher"].sessions() as session:
        refused = session.scalars(select(Delivery).where(Delivery.record_id == "batch-1")).all()
    errors = {d.output: d.error for d in refused}
    assert errors["batcher"] == "refused on purpose"
    assert errors["recorder"] is None  # the record's other outputs went ahead


def test_an_output_that_answers_for_too_few_fails_the_whole_batch(
    make_app, base_settings, seed_json, recorded
):
    app = batching_app(make_app, base_settings)
    app.extensions["publisher.intake"].take(stories(seed_json, "a", "miscount"))
    drain(app, rounds=6)
    with app.extensions["publisher"].sessions() as session:
        rows = session.scalars(select(Delivery).where(Delivery.output == "batcher")).all()
    assert {d.status for d in rows} == {"pending"}  # retried later, not lost
    assert all("deliver_many gave 0 outcomes for 2" in d.error for d in rows)


def test_one_by_one_calls_of_a_batch_run_side_by_side(make_app, base_settings, seed_json):
    """An output without deliver_many (a network call, usually) is not made sequential."""
    log = Path(base_settings["plugins"]["recording"]["log"])
    app = make_app(
        plugins={"recording": {"log": str(log), "slow_seconds": 0.5}},
        delivery={"parallel_calls": 3},
    )
    records = [dict(seed_json, id=f"side-{n}", published=True) for n in range(3)]
    app.extensions["publisher.intake"].take(records)
    drain(app)
    slow = [json.loads(line) for line in log.read_text().splitlines() if '"slow"' in line]
    assert [entry["action"] for entry in slow] == ["start"] * 3 + ["publish"] * 3


def test_a_failed_delivery_is_logged_with_its_error_and_traceback(
    make_app, base_settings, tmp_path, seed_json, caplog
):
    flag = tmp_path / "fail"
    flag.touch()
    log = base_settings["plugins"]["recording"]["log"]
    app = make_app(plugins={"recording": {"log": log, "fail_flag": str(flag)}})
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    with caplog.at_level("WARNING", logger="publisher.dispatch"):
        drain(app)
    (failed,) = [r for r in caplog.records if r.getMessage() == "delivery failed"]
    assert failed.output == "flaky" and "failing on purpose" in failed.error
    assert failed.exc_info is not None  # the stack of the plugin's raise, for its author
    assert "recording.py" in "".join(traceback.format_tb(failed.exc_info[2]))
