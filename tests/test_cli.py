"""The ``publisher`` command line, as scripts and operators use it."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from publisher.cli.records import default_jobs
from publisher.models import Record
from publisher.secured.envelopes import seal
from publisher.secured.keyring import Keyring, generate_key
from tests.helpers import DATA

PUBLISHER = str(Path(sys.executable).parent / "publisher")


def test_validate_accepts_the_example(invoke):
    result = invoke("validate", str(DATA / "seed-record.md"))
    assert result.exit_code == 0, result.output
    assert "1 records checked, 0 invalid" in result.output


def test_validate_names_each_bad_field_path_and_fails(invoke):
    result = invoke("validate", str(DATA / "invalid"))
    assert result.exit_code == 1
    for expected in (
        "no-title.md: title:",
        "bad-url.md: webUrl:",
        "quality-high.md: quality:",
        "related-missing-weburl.md: related.1.webUrl:",
    ):
        assert expected in result.output, result.output
    assert "4 records checked, 4 invalid" in result.output


def test_ingest_a_folder_of_1000_records_with_progress(app, invoke, tmp_path, seed_json):
    folder = tmp_path / "records"
    folder.mkdir()
    for n in range(1000):
        record = dict(seed_json, originalUrl=f"https://example.com/{n}", title=f"Record {n}")
        (folder / f"{n:04}.json").write_text(json.dumps(record))
    result = invoke("ingest", str(folder))
    assert result.exit_code == 0, result.output
    assert "1000 files: 1000 created" in result.output
    assert "ingest" in result.stderr and "1000/1000" in result.stderr  # the progress bar
    with app.extensions["publisher"].sessions() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == 1000


def test_ingest_reports_bad_files_and_exits_non_zero(invoke, tmp_path):
    (tmp_path / "broken.json").write_text('{"title": ')
    result = invoke("ingest", str(tmp_path / "broken.json"), str(DATA / "invalid" / "no-title.md"))
    assert result.exit_code == 1
    assert "broken.json" in result.stderr and "no-title.md: title" in result.stderr


@pytest.mark.parametrize("jobs", ["0", "1", "3"])
def test_ingest_answers_the_same_whatever_the_worker_processes(invoke, tmp_path, seed_json, jobs):
    """Files are checked in worker processes and stored in order: same counts, same lines."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n in range(12):
        (folder / f"{n:02}-ok.json").write_text(json.dumps(dict(seed_json, title=f"Record {n}")))
    (folder / "05-broken.json").write_text('{"title": ')
    (folder / "07-untitled.json").write_text(json.dumps({"body": "no title"}))
    batch = [dict(seed_json, title="Same id twice"), dict(seed_json, title="Same id, again")]
    (folder / "09-batch.ndjson").write_text("".join(json.dumps(r) + "\n" for r in batch))
    result = invoke("ingest", "--jobs", jobs, str(folder))
    assert result.exit_code == 1  # a broken and an invalid file
    assert "15 files: 1 created, 1 invalid, 13 revised, 1 unreadable" in result.stdout
    problems = [line.split(":", 1)[0].rsplit("/", 1)[-1] for line in result.stderr.splitlines()
                if line.startswith(str(folder))]  # fmt: skip
    assert problems == ["05-broken.json", "07-untitled.json"]


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_ingest_stores_a_later_files_revision_last_and_reports_problems_in_file_order(
    app, invoke, tmp_path, seed_json, jobs
):
    """500 records a transaction, and across transactions the files' order holds."""
    many = [dict(seed_json, id=f"many-{n}", title=f"Many {n}") for n in range(500)]
    many[0]["title"], many[3] = "First", {"body": "no title"}
    (tmp_path / "01-many.ndjson").write_text("".join(json.dumps(r) + "\n" for r in many))
    (tmp_path / "02-broken.json").write_text('{"title": ')
    again = dict(seed_json, id="many-0", title="Second")
    (tmp_path / "03-again.json").write_text(json.dumps(again))
    result = invoke("ingest", "--jobs", jobs, str(tmp_path))
    assert "3 files: 499 created, 1 invalid, 1 revised, 1 unreadable" in result.stdout
    lines = [line.rsplit("/", 1)[-1].split(":")[0] for line in result.stderr.splitlines()
             if line.startswith(str(tmp_path))]  # fmt: skip
    assert lines == ["01-many.ndjson[3]", "02-broken.json"]
    with app.extensions["publisher"].sessions() as session:
        stored = session.scalars(select(Record).where(Record.id == "many-0")).one()
        assert (stored.revision, stored.fields["title"]) == (2, "Second")


def test_ingest_validates_beside_the_storing_process_on_all_cpus_but_one():
    """The storing process keeps a CPU busy itself; a worker more would only take turns."""
    assert [default_jobs(cpus) for cpus in (None, 1, 2, 8)] == [0, 0, 1, 7]


def test_ingest_stores_with_the_heap_it_built_frozen(invoke, tmp_path, seed_json):
    """Storing allocates at every record: the collections that sets off skip the app."""
    gc.unfreeze()
    path = tmp_path / "one.json"
    path.write_text(json.dumps(seed_json))
    assert invoke("ingest", str(path)).exit_code == 0
    assert gc.get_freeze_count() > 10_000


def test_ingest_from_stdin(invoke, seed_md):
    result = invoke("ingest", "-", input=seed_md)
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output


def test_tokens_create_prints_the_token_alone_and_revoke_stops_it(app, invoke, client):
    result = invoke("tokens", "create", "--scope", "read")
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("pub_") and "\n" not in token
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    listed = invoke("tokens", "list").stdout
    token_id = listed.split("\t", 1)[0]
    assert token not in listed
    assert invoke("tokens", "revoke", token_id).exit_code == 0
    assert client.get("/api/v1/records", headers=headers).status_code == 401


def test_sources_add_prints_the_secret_alone(invoke):
    result = invoke("sources", "add", "cms")
    assert result.exit_code == 0
    secret = result.stdout.strip()
    assert secret.startswith("whsec_") and "\n" not in secret
    assert "cms\t1 secret(s)" in invoke("sources", "list").stdout


def test_keys_commands_are_part_of_the_cli(invoke, tmp_path):
    keys = tmp_path / "cli-keys"
    keys.mkdir(mode=0o700)
    made = invoke("keys", "generate", "--kind", "dir", "--keys-dir", str(keys))
    assert made.exit_code == 0, made.output
    listed = invoke("keys", "list", "--keys-dir", str(keys))
    assert listed.exit_code == 0 and "dir" in listed.output
    assert '"k"' not in listed.output  # never secret material


def test_deliveries_and_retract_commands(app, invoke, seed_json):
    from publisher.testing import drain

    seed_json["published"] = True
    (result,) = app.extensions["publisher.intake"].take([seed_json])
    drain(app)
    shown = invoke("deliveries", "--record", result.id)
    assert shown.exit_code == 0 and '"status": "done"' in shown.output
    retracted = invoke("retract", result.id)
    assert retracted.exit_code == 0 and '"status": "retracted"' in retracted.output
    assert invoke("deliveries", "--failed").output == ""


def test_db_upgrade_runs_migrations(tmp_path):
    env = {"PUBLISHER_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([PUBLISHER, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "publisher.db").exists()


def test_ingest_leaves_enqueueing_to_the_sweeper(app, invoke, tmp_path, seed_json, recorded):
    from publisher.testing import drain

    seed_json["published"] = True
    path = tmp_path / "one.json"
    path.write_text(json.dumps(seed_json))
    assert invoke("ingest", str(path)).exit_code == 0
    assert drain(app) == 0  # nothing written to the queue by the ingesting process
    assert app.extensions["publisher"].dispatcher.sweep() == 5
    drain(app)
    assert [e["event"] for e in recorded() if e["output"] == "recorder"] == ["published"]


def test_deliveries_prints_one_json_object_per_line(app, invoke, seed_json):
    from publisher.testing import drain

    taken = app.extensions["publisher.intake"].take(
        [dict(seed_json, published=True, originalUrl=f"https://example.com/{n}") for n in (1, 2)]
    )
    drain(app)
    shown = invoke("deliveries")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) >= 6  # three outputs, two records
    rows = [json.loads(line) for line in lines]
    assert {row["status"] for row in rows} <= {"done", "pending", "dead"}
    retracted = invoke("retract", *(result.id for result in taken))
    answers = [json.loads(line) for line in retracted.output.splitlines()]
    assert [answer["status"] for answer in answers] == ["retracted", "retracted"]


def test_sources_remove_secret_ends_a_rotation(app, invoke, seed_md):
    from tests.helpers import send

    client = app.test_client()
    old = invoke("sources", "add", "cms").stdout.strip()
    new = invoke("sources", "add", "cms").stdout.strip()
    assert send(client, seed_md, secret=old).status_code == 202

    assert invoke("sources", "remove-secret", "cms", "whsec_").exit_code == 2  # too short
    removed = invoke("sources", "remove-secret", "cms", old[:16])
    assert removed.exit_code == 0, removed.output
    assert "1 left" in removed.stdout
    assert send(client, seed_md, secret=old).status_code == 401
    assert send(client, seed_md, secret=new).status_code == 202
    again = invoke("sources", "remove-secret", "cms", old)
    assert again.exit_code == 1 and "no secret of source 'cms' matches" in again.output

    last = invoke("sources", "remove-secret", "cms", new)
    assert last.exit_code == 0 and "has no secret" in last.stderr
    assert send(client, seed_md, secret=new).status_code == 401


def test_remove_secret_points_at_the_file_for_a_configured_secret(make_app):
    from tests.helpers import SECRET

    app = make_app(sources={"cms": {"secrets": [SECRET]}})
    from publisher.cli import cli

    done = app.test_cli_runner().invoke(cli, ["sources", "remove-secret", "cms", SECRET[:12]])
    assert done.exit_code == 1
    assert "remove it from sources.cms.secrets" in done.output


def test_validate_applies_exactly_the_checks_ingest_applies(tmp_path, seed_json):
    """Same files, same environment: validate predicts each of ingest's answers."""
    records = tmp_path / "records"
    records.mkdir()
    # sealed for a key we do not hold: accepted (a legacy envelope would be refused here)
    sealed = seal({"a": 1}, Keyring.from_jwks([generate_key("dir")]), "jwe")
    (records / "good.json").write_text(json.dumps(dict(seed_json, secured=sealed)))
    (records / "unknown-field.json").write_text(json.dumps(dict(seed_json, colour="red")))
    (records / "no-title.json").write_text(json.dumps(dict(seed_json, title="")))
    (records / "bad-envelope.json").write_text(json.dumps(dict(seed_json, secured="x;y")))
    unsecured = {k: v for k, v in seed_json.items() if k != "secured"}
    (records / "unsecured.json").write_text(json.dumps(unsecured))
    (records / "broken.json").write_text('{"title": ')
    config = tmp_path / "publisher.yaml"
    policy = "{required: true, on_failure: quarantine, legacy: refuse}"
    config.write_text(f"sources:\n  cms:\n    secured: {policy}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PUBLISHER_CONFIG": str(config),
        "PUBLISHER_DATA_DIR": str(tmp_path / "data"),
        "PUBLISHER_KEYS_DIR": str(tmp_path / "keys"),
        "PUBLISHER_STRICT": "true",
    }

    def run(command: str) -> tuple[int, set[str], str]:
        done = subprocess.run(
            [PUBLISHER, command, "--source", "cms", str(records)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        problems = {line for line in done.stderr.splitlines() if line.startswith(str(records))}
        return done.returncode, problems, done.stdout

    validated = run("validate")
    assert not (tmp_path / "data").exists()  # a dry run creates nothing
    ingested = run("ingest")
    assert validated[0] == ingested[0] == 1
    refused = {p for p in validated[1] if "would be quarantined" not in p}
    assert refused == ingested[1]  # the same items refused, for the same reasons
    assert any("unknown-field.json: colour: Unknown field." in p for p in refused)  # strict
    assert any("unsecured.json: secured:" in p for p in refused)  # the source's policy
    assert any("no-title.json: title:" in p for p in refused)
    assert any("broken.json" in p for p in refused)
    assert f"{records}/bad-envelope.json: would be quarantined (secured policy)" in validated[1]
    assert "1 quarantined" in validated[2] and "1 quarantined" in ingested[2]
    assert "6 records checked, 4 invalid, 1 quarantined" in validated[2]


def test_a_command_is_looked_up_without_importing_the_other_commands():
    """``ingest`` starts its validating workers before the store and the queue are imported."""
    script = (
        "import sys, click; from publisher.cli import cli; "
        "cli.get_command(click.Context(cli), 'ingest'); "
        "heavy = ('sqlalchemy', 'huey', 'publisher.cli.admin'); "
        "print(sorted(name for name in heavy if name in sys.modules))"
    )
    looked_up = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert looked_up.returncode == 0, looked_up.stderr
    assert looked_up.stdout.strip() == "[]"


def test_every_command_of_publisher_is_named_where_it_is_looked_up():
    import click

    from publisher.cli import COMMANDS, cli

    context = click.Context(cli)
    ours = {
        name
        for name in cli.list_commands(context)
        if cli.get_command(context, name).callback.__module__.startswith("publisher.")
    }
    assert ours == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert cli.get_command(context, name).callback.__module__ == f"publisher.cli.{module}"


def test_a_plugins_command_of_the_same_name_replaces_ours_when_listed_and_looked_up():
    import click

    from publisher.cli import PublisherGroup

    group = PublisherGroup(add_default_commands=False)
    theirs = click.Command("validate", callback=lambda: None)
    group.add_command(theirs)  # what a plugin's register_commands does, before any lookup
    context = click.Context(group)
    assert "ingest" in group.list_commands(context)
    assert group.get_command(context, "validate") is theirs
