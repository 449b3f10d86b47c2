"""The plugin boundary: what loads, how it is listed, and a newcomer's plugin end to end."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from publisher import hookspecs
from publisher.errors import ConfigError
from publisher.plugins import make_plugin_manager
from publisher.testing import drain

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
PUBLISHER = str(Path(sys.executable).parent / "publisher")
HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if callable(value) and hasattr(value, "publisher_spec")
)


def guide_example() -> str:
    """The example plugin exactly as docs/plugins.md shows it."""
    text = GUIDE.read_text()
    match = re.search(r"<!-- example-plugin: .*? -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/plugins.md lost its example plugin"
    return match.group(1)


def test_every_hook_has_a_docstring_and_is_in_the_guide():
    assert HOOKS, "no hook specifications found"
    guide = GUIDE.read_text()
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name
        assert f"`{name}(" in guide, f"{name} is missing from docs/plugins.md"


def test_every_hook_is_called_somewhere_in_the_core():
    core = "\n".join(p.read_text() for p in (ROOT / "publisher").rglob("*.py"))
    for name in HOOKS:
        assert re.search(rf'hook\.{name}\b|_hook\(\s*"{name}"|_notify\(\s*"{name}"', core), (
            f"nothing calls {name}"
        )


def test_builtins_and_folder_plugins_are_listed(invoke):
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    for expected in ("files 0.1.0 (builtin)", "feeds 0.1.0 (builtin)", "webhook 0.1.0 (builtin)"):
        assert expected in result.output
    assert "recording unversioned (folder)" in result.output
    assert "outputs: flaky, protected-sink, recorder" in result.output


def test_plugins_api_lists_hooks_and_outputs(client, auth):
    items = {p["name"]: p for p in client.get("/api/v1/plugins", headers=auth).json["items"]}
    assert items["files"]["origin"] == "builtin"
    assert "register_outputs" in items["files"]["hooks"]
    assert items["feeds"]["outputs"] == ["feeds"]
    assert set(items["recording"]["outputs"]) == {"recorder", "flaky", "protected-sink"}
    assert items["publisher-metrics"]["origin"] == "core"  # the core observes by hooks too


def test_a_misspelt_hook_stops_the_start(tmp_path):
    (tmp_path / "typo.py").write_text(
        "from publisher.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef register_output(config):\n    return []\n"
    )
    with pytest.raises(ConfigError, match="register_output"):
        make_plugin_manager({"plugins": {}, "plugins_dir": str(tmp_path)})


def test_a_plugin_can_be_disabled_by_name(make_app):
    app = make_app(plugins={"disabled": ["feeds"]})
    assert "feeds" not in app.extensions["publisher"].dispatcher.outputs
    assert app.extensions["publisher"].pm.get_plugin("feeds") is None


def test_the_guide_example_works_from_the_plugins_folder(make_app, tmp_path, seed_json):
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    (folder / "jsonl.py").write_text(guide_example())  # the file's stem names its section
    out = tmp_path / "events.jsonl"
    app = make_app(plugins_dir=str(folder), plugins={"jsonl": {"path": str(out)}})
    seed_json["published"] = True
    app.extensions["publisher.intake"].take([seed_json])
    drain(app)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["published"]
    assert lines[0]["title"] == seed_json["title"]


@pytest.mark.slow
def test_the_guide_example_as_an_installed_package(tmp_path, seed_json):
    """A newcomer packages the guide's plugin with an entry point and pip-installs it."""
    package = tmp_path / "publisher-jsonl"
    package.mkdir()
    (package / "publisher_jsonl.py").write_text(guide_example())
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "publisher-jsonl"
            version = "1.0.0"

            [tool.setuptools]
            py-modules = ["publisher_jsonl"]

            [project.entry-points."publisher.plugins"]
            jsonl = "publisher_jsonl"
            """
        )
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
    )
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    out = tmp_path / "events.jsonl"
    config = tmp_path / "publisher.yaml"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "keys_dir": str(keys),
                "dev_key": False,
                "plugins": {"jsonl": {"path": str(out)}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(PYTHONPATH=str(site), PUBLISHER_CONFIG=str(config))
    listed = subprocess.run([PUBLISHER, "plugins"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "jsonl 1.0.0 (entry-point)" in listed.stdout
    assert "outputs: jsonl" in listed.stdout

    seed_json["published"] = True
    record = tmp_path / "record.json"
    record.write_text(json.dumps(seed_json))
    ingest = subprocess.run(
        [PUBLISHER, "ingest", str(record)], env=env, capture_output=True, text=True
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "1 created" in ingest.stdout, ingest.stdout + ingest.stderr
    script = (
        "from publisher.app import create_app\n"
        "app = create_app()\n"
        "from publisher.testing import drain\n"
        "app.extensions['publisher'].dispatcher.sweep()  # as the worker's sweeper does\n"
        "drain(app)\n"
        "from sqlalchemy import select\n"
        "from publisher.models import Delivery\n"
        "with app.extensions['publisher'].sessions() as session:\n"
        "    done = select(Delivery.output).where(Delivery.status == 'done')\n"
        "    print(sorted(session.scalars(done)))\n"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    drained = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.strip() == "['feeds', 'files', 'jsonl']", drained.stdout
    shown = subprocess.run([PUBLISHER, "deliveries"], env=env, capture_output=True, text=True)
    assert '"status": "dead"' not in shown.stdout, shown.stdout
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["published"]


def test_plugin_test_helper_runs_a_record_through_an_output(tmp_path):
    namespace: dict = {}
    exec(compile(guide_example(), "publisher_jsonl.py", "exec"), namespace)  # noqa: S102
    module = type(sys)("publisher_jsonl")
    module.__dict__.update(namespace)
    from publisher.testing import load_outputs, publish, retract

    (output,) = load_outputs(
        module,
        name="jsonl",
        data_dir=str(tmp_path),
        plugins={"jsonl": {"path": str(tmp_path / "o.jsonl")}},
    )
    publish(output, {"title": "Hello", "webUrl": "https://example.com/a", "published": True})
    retract(output, {"title": "Hello", "webUrl": "https://example.com/a"})
    events = [json.loads(line)["event"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert events == ["published", "retracted"]


def test_guide_example_is_valid_python():
    ast.parse(guide_example())
