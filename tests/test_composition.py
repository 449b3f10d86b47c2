"""The composition root builds everything once (issue 14, finding 3).

Each process builds its plugins, services, intake and inbox once, complete, from its
settings: no part filled in afterwards, no flag flipped on an object after it was built, no
plugin file executed twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib
import urllib.request
from pathlib import Path

import pytest

from publisher import services as services_module
from publisher.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: a folder plugin that writes one line each time its module is executed
COUNTING = """
import os
from publisher.hookspecs import hookimpl

with open(os.environ["COUNT_FILE"], "a") as count:
    count.write(f"{os.getpid()}\\n")


@hookimpl
def register_outputs():
    return []


@hookimpl
def register_routes(app):
    from flask import jsonify

    @app.get("/probe")
    def probe():
        dispatcher = app.extensions["publisher"].dispatcher
        return jsonify(background=dispatcher.background_enqueue)
"""


@pytest.fixture
def counting_env(tmp_path: Path) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "counting.py").write_text(COUNTING)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_")}
    return env | {
        "PUBLISHER_DATA_DIR": str(tmp_path / "data"),
        "PUBLISHER_KEYS_DIR": str(keys),
        "PUBLISHER_PLUGINS_DIR": str(plugins),
        "PUBLISHER_DEV_KEY": "false",
        "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1",
        "COUNT_FILE": str(tmp_path / "count"),
    }


@pytest.mark.parametrize(
    "command",
    [["outputs", "list"], ["plugins"], ["config"], ["deliveries"]],
    ids=["outputs-list", "plugins", "config", "deliveries"],
)
def test_a_folder_plugin_is_executed_once_per_command_line_process(counting_env, command):
    done = subprocess.run(
        [str(BIN / "publisher"), *command],
        env=counting_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loads = Path(counting_env["COUNT_FILE"]).read_text().splitlines()
    assert len(loads) == 1, f"the plugin module ran {len(loads)} times in one process"


def test_services_are_complete_when_constructed(base_settings, monkeypatch):
    """Nothing handed to ``Services`` is ``None``, to be filled in afterwards."""
    given: list[dict[str, object]] = []

    class Checked(services_module.Services):
        def __init__(self, *args: object, **kwargs: object) -> None:
            names = [f.name for f in dataclasses.fields(services_module.Services)]
            given.append(dict(zip(names, args, strict=False)) | kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(services_module, "Services", Checked)
    built = services_module.build_services(load_settings({}, base_settings))
    try:
        assert len(given) == 1
        assert [name for name, value in given[0].items() if value is None] == []
        assert {f.name for f in dataclasses.fields(built)} == set(given[0])
    finally:
        built.close()


def _wsgi_enqueue(env: dict[str, str]) -> str:
    """Import ``wsgi.py`` as gunicorn does; what its dispatcher's enqueue is."""
    code = (
        "import wsgi; d = wsgi.app.extensions['publisher'].dispatcher; "
        "print('background' if d.background_enqueue else 'inline'); "
        "wsgi.app.extensions['publisher'].close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_wsgi_enqueues_in_the_background_by_default_and_as_its_setting_says(counting_env):
    assert _wsgi_enqueue(counting_env) == "background"
    assert _wsgi_enqueue(counting_env | {"PUBLISHER_ENQUEUE": "inline"}) == "inline"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_builds_its_app_once_with_background_enqueue(counting_env):
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "publisher"), "serve", "--port", str(port), "--no-worker"],
        env=counting_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        answer = _get_when_up(f"http://127.0.0.1:{port}/probe", server)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert answer == {"background": True}
    assert len(Path(counting_env["COUNT_FILE"]).read_text().splitlines()) == 1


def _get_when_up(url: str, server: subprocess.Popen) -> object:
    for _ in range(600):  # polls while the server starts (migrations, plugins)
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
                return json.loads(answer.read())
        except OSError:
            threading.Event().wait(0.1)
    raise AssertionError("publisher serve did not answer")


def test_an_app_enqueues_as_its_setting_says(make_app):
    assert make_app().extensions["publisher"].dispatcher.background_enqueue is False
    app = make_app(enqueue="background")
    assert app.extensions["publisher"].dispatcher.background_enqueue is True
    assert app.config["PUBLISHER"]["enqueue"] == "background"


def _lane_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("publisher-lane-")}


def test_closing_the_services_stops_their_lanes(make_app, seed_json):
    from publisher.testing import drain

    before = _lane_threads()
    app = make_app()
    services = app.extensions["publisher"]
    app.extensions["publisher.intake"].take([dict(seed_json, published=True)])
    drain(app)
    assert _lane_threads() - before, "the deliveries ran in lanes"
    services.close()
    assert {t for t in _lane_threads() - before if t.is_alive()} == set()


def test_the_core_reaches_plugins_only_through_hooks_without_exceptions():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in contracts["contracts"] if c["id"] == "core-calls-hooks"]
    assert contract.get("ignore_imports", []) == []


SINK = """
from publisher.hookspecs import hookimpl
from publisher.outputs import BaseOutput

built = []


class Sink(BaseOutput):
    def __init__(self, name):
        super().__init__(name=name)
        self.events = []

    def publish(self, record, event):
        self.events.append((record.id, event.kind))


@hookimpl
def subscriber_output(subscriber, previous, config):
    built.append((dict(subscriber), previous))
    return Sink(f"webhook:{subscriber['name']}")
"""


def test_a_plugin_delivers_to_stored_subscribers_through_the_hook(make_app, seed_json, monkeypatch):
    import types

    from publisher import subscribers
    from publisher.testing import drain

    sink = types.ModuleType("sink_plugin")
    exec(SINK, sink.__dict__)  # noqa: S102 - the plugin module of this test
    monkeypatch.setitem(sys.modules, "sink_plugin", sink)
    app = make_app(plugins={"load": {"sink": "sink_plugin"}})
    services = app.extensions["publisher"]
    url = "https://search.example/hook"
    subscribers.add(services.sessions, services.settings, {"name": "search", "url": url})
    output = services.dispatcher.refresh(force=True)["webhook:search"].output
    assert isinstance(output, sink.Sink)  # registered after the built-ins: asked first
    ((subscriber, previous),) = sink.built
    assert subscriber["url"] == url and subscriber["secret"].startswith("whsec_")
    assert previous == ()

    app.extensions["publisher.intake"].take([dict(seed_json, id="sunk-1", published=True)])
    drain(app)
    assert output.events == [("sunk-1", "published")]


def test_wsgi_freezes_the_heap_it_was_built_with(counting_env):
    """``gunicorn wsgi:app`` (any WSGI server importing it): the app's start-up objects are
    left out of full collections (``publisher.heap``)."""
    code = "import gc, wsgi; print(gc.get_freeze_count()); wsgi.app.extensions['publisher'].close()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=counting_env, cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 10_000
