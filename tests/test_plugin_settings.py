"""A plugin's section is checked at start by the schema it declares; errors are one line each.

The start-up failures are run as an operator meets them: ``publisher serve``, ``publisher
worker`` and ``gunicorn wsgi:app`` in a real process, reading a real file and environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from publisher.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

SITEMAP = """
import json
from marshmallow import Schema, fields, validate
from publisher.hookspecs import hookimpl
from publisher.outputs import BaseOutput


class SitemapSettings(Schema):
    folder = fields.String(load_default="sitemap")
    max_urls = fields.Integer(load_default=50000, validate=validate.Range(min=1))
    title = fields.String(load_default="")


@hookimpl
def register_config_schema():
    return SitemapSettings


@hookimpl
def register_outputs(config):
    section = config["plugins"]["sitemap"]
    with open(config["data_dir"] + "/sitemap-section.json", "w") as seen:
        json.dump(section, seen)
    return []
"""


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "sitemap.py").write_text(SITEMAP)
    return folder


def test_a_plugin_section_comes_out_typed_with_its_defaults(make_app, plugins_dir, base_settings):
    import json

    app = make_app(plugins_dir=str(plugins_dir), plugins={"sitemap": {"max_urls": "10"}})
    seen = json.loads((Path(base_settings["data_dir"]) / "sitemap-section.json").read_text())
    assert seen == {"folder": "sitemap", "max_urls": 10, "title": ""}
    assert app.config["PUBLISHER"]["plugins"]["sitemap"]["max_urls"] == 10


def test_an_environment_override_reaches_a_plugin_section(make_app, plugins_dir):
    from publisher.app import create_app

    settings = {"data_dir": str(plugins_dir.parent / "data"), "dev_key": False}
    environ = {
        "PUBLISHER_PLUGINS_DIR": str(plugins_dir),
        "PUBLISHER_KEYS_DIR": str(plugins_dir.parent / "keys"),
        "PUBLISHER_PLUGINS__SITEMAP__MAX_URLS": "0",
    }
    with pytest.raises(ConfigError) as caught:
        create_app(overrides=settings, environ=environ)
    assert caught.value.errors == {
        "plugin sitemap: plugins.sitemap.max_urls (from PUBLISHER_PLUGINS__SITEMAP__MAX_URLS)": [
            "Must be greater than or equal to 1."
        ]
    }
    environ["PUBLISHER_PLUGINS__SITEMAP__MAX_URLS"] = "7"
    environ["PUBLISHER_PLUGINS__SITEMAP__TITLE"] = "2026"  # a text field keeps the text
    app = create_app(overrides=settings, environ=environ)
    section = app.config["PUBLISHER"]["plugins"]["sitemap"]
    assert section["max_urls"] == 7 and section["title"] == "2026"
    app.extensions["publisher"].close()


def test_a_bad_plugin_section_names_the_plugin_the_key_and_the_problem(make_app, plugins_dir):
    with pytest.raises(ConfigError) as caught:
        make_app(
            plugins_dir=str(plugins_dir),
            plugins={"sitemap": {"max_urls": "many", "colour": "red"}},
        )
    assert caught.value.errors == {
        "plugin sitemap: plugins.sitemap.max_urls (from overrides)": ["Not a valid integer."],
        "plugin sitemap: plugins.sitemap.colour (from overrides)": ["Unknown field."],
    }


def test_the_built_in_plugins_check_their_sections_with_the_same_hook(make_app):
    with pytest.raises(ConfigError) as caught:
        make_app(
            plugins={
                "files": {"layout": "jekyll"},
                "feeds": {"max_entries": 0, "websub_hub": "ftp://hub"},
                "webhook": {
                    "timeout": "slow",
                    "subscribers": [{"name": "a b", "url": "https://u:p@example.org/"}],
                },
            }
        )
    errors = caught.value.errors
    assert errors["plugin files: plugins.files.layout (from overrides)"] == [
        "must be one of category, type, flat"
    ]
    assert "plugin feeds: plugins.feeds.max_entries (from overrides)" in errors
    assert "plugin feeds: plugins.feeds.websub_hub (from overrides)" in errors
    assert errors["plugin webhook: plugins.webhook.timeout (from overrides)"] == [
        "Not a valid number."
    ]
    where = "plugin webhook: plugins.webhook.subscribers[0]"
    assert errors[f"{where}.url (from overrides)"] == ["must not carry credentials"]
    assert errors[f"{where}.secret (from overrides)"] == ["Missing data for required field."]
    assert f"{where}.name (from overrides)" in errors


def test_a_misspelt_hook_argument_is_one_line_naming_the_plugin(make_app, tmp_path):
    folder = tmp_path / "typo"
    folder.mkdir()
    (folder / "typo.py").write_text(
        "from publisher.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef register_outputs(confg):\n    return []\n"
    )
    with pytest.raises(ConfigError) as caught:
        make_app(plugins_dir=str(folder))
    message = caught.value.message
    assert message.startswith("plugin typo: ") and "\n" not in message
    assert "register_outputs" in message and "confg" in message


# -- as an operator meets it ----------------------------------------------------------------
@pytest.fixture
def broken_env(tmp_path: Path, plugins_dir: Path) -> dict[str, str]:
    config = tmp_path / "publisher.yaml"
    config.write_text(
        textwrap.dedent(
            """
            plugins:
              sitemap: {max_urls: 0}
            outputs:
              feeds: {when: "quality >= "}
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_")}
    env.update(
        PUBLISHER_CONFIG=str(config),
        PUBLISHER_DATA_DIR=str(tmp_path / "data"),
        PUBLISHER_KEYS_DIR=str(tmp_path / "keys"),
        PUBLISHER_PLUGINS_DIR=str(plugins_dir),
        PUBLISHER_DISABLE_PLUGIN_AUTOLOAD="1",
        PUBLISHER_DEV_KEY="false",
        PUBLISHER_DELIVERY__TIMEOUT="soon",
    )
    return env


def assert_one_line_per_problem(stderr: str, config: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "publisher: configuration:" in line]
    assert len(lines) == 2, stderr
    assert f"outputs.feeds.when (from {config}): routing rule 'quality >= ' is not valid" in stderr
    assert "delivery.timeout (from PUBLISHER_DELIVERY__TIMEOUT): Not a valid number." in stderr


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_serve_and_worker_stop_at_start_with_one_line_per_problem(broken_env, command):
    done = subprocess.run(
        [str(BIN / "publisher"), *command],
        env=broken_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert_one_line_per_problem(done.stderr, broken_env["PUBLISHER_CONFIG"])


def test_a_plugin_section_error_stops_serve_with_one_line(broken_env):
    broken_env.pop("PUBLISHER_DELIVERY__TIMEOUT")
    Path(broken_env["PUBLISHER_CONFIG"]).write_text("plugins:\n  sitemap: {max_urls: 0}\n")
    done = subprocess.run(
        [str(BIN / "publisher"), "serve", "--port", "0"],
        env=broken_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert done.stderr.strip() == (
        f"publisher: configuration: plugin sitemap: plugins.sitemap.max_urls "
        f"(from {broken_env['PUBLISHER_CONFIG']}): Must be greater than or equal to 1."
    )


def test_gunicorn_stops_instead_of_restarting_workers(broken_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1", "wsgi:app"],
        env=broken_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stderr  # gunicorn: "App failed to load", no restart loop
    assert "App failed to load" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "delivery.timeout (from PUBLISHER_DELIVERY__TIMEOUT): Not a valid number." in done.stderr
