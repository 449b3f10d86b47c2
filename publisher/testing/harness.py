"""A real publisher app around the plugin under test, as Datasette's test client is.

Records go in over the HTTP API (Flask's test client, a bearer token made for you),
deliveries run as a worker runs them (:func:`drain`), and broadcast hooks can be fired
through the plugin manager. Everything lives in one folder the test gives (``tmp_path``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from publisher.plugins import BUILTIN_PLUGINS, Broadcast, PluginInfo, describe_plugins
from publisher.testing.builders import plugin_name


def drain(app: Flask, rounds: int = 50) -> int:
    """Run every task that is due now, as a worker would; returns how many ran.

    Works on every huey storage: it looks at the queue's length before taking a task, so it
    never waits on Redis's blocking pop when the queue is empty.
    """
    huey = app.extensions["publisher"].huey
    ran = 0
    for _ in range(rounds):
        for task in huey.read_schedule(huey._get_timestamp()):  # noqa: SLF001 - huey's own
            huey.enqueue(task)
        if huey.pending_count() == 0:
            break
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        lanes = app.extensions["publisher"].dispatcher.lanes
        if lanes is not None:  # the task handed its deliveries to their output's lane
            lanes.wait_idle(timeout=60)
        ran += 1
    return ran


class PluginApp:
    """One app holding the plugins under test (and nothing installed beside them).

    ``PluginApp(tmp_path, my_plugin, plugins={"my_plugin": {...}})``: ``builtins=True``
    adds ``files``, ``feeds`` and ``webhook``; ``autoload=True`` adds installed packages.
    Any other keyword is a setting. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        folder: Path | str,
        *plugins: ModuleType,
        builtins: bool = False,
        autoload: bool = False,
        **settings: Any,
    ) -> None:
        from publisher.app import create_app

        folder = Path(folder)
        keys = folder / "keys"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        own = dict(settings.pop("plugins", None) or {})
        own.setdefault("load", {}).update({plugin_name(p): _importable(p) for p in plugins})
        if not builtins:
            own["disabled"] = [*own.get("disabled", []), *_builtin_names()]
        own["autoload"] = autoload
        defaults = {
            "data_dir": str(folder / "data"),
            "keys_dir": str(keys),
            "queue_url": str(folder / "data" / "queue.db"),
            "dev_key": False,
            "sqlite_synchronous": "NORMAL",
            "delivery": {"jitter": 0.0},
        }
        self.app = create_app(overrides={**defaults, **settings, "plugins": own}, environ={})
        self.app.config["TESTING"] = True
        self.services = self.app.extensions["publisher"]
        self.client: FlaskClient = self.app.test_client()
        self.headers = {"Authorization": f"Bearer {self.token('admin')}"}

    def __enter__(self) -> PluginApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.services.close()

    def token(self, *scopes: str) -> str:
        """A new API token with ``scopes`` (``admin`` by default)."""
        from publisher.db import transaction
        from publisher.tokens import create_token

        with transaction(self.services.sessions) as session:
            return create_token(session, scopes or ("admin",))[1]

    def submit(self, records: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        """POST one record (or a batch) to ``/api/v1/records``; the answer's JSON (a 202)."""
        answer = self.client.post("/api/v1/records", json=records, headers=self.headers)
        assert answer.status_code == 202, f"{answer.status_code}: {answer.get_data(True)}"
        return answer.json

    def retract(self, record_id: str) -> Any:
        """DELETE the record over the API (a retraction that keeps its revision)."""
        answer = self.client.delete(f"/api/v1/records/{record_id}", headers=self.headers)
        assert answer.status_code < 300, f"{answer.status_code}: {answer.get_data(True)}"
        return answer.json

    def run_deliveries(self) -> int:
        """Run every delivery that is due, as the worker would; returns the tasks run."""
        self.services.dispatcher.sweep()
        return drain(self.app)

    def deliveries(self, record_id: str) -> list[dict[str, Any]]:
        """The record's deliveries as the API lists them (output, event, status, error)."""
        answer = self.client.get(f"/api/v1/records/{record_id}/deliveries", headers=self.headers)
        assert answer.status_code == 200, answer.get_data(True)
        return answer.json["items"]

    def output(self, name: str) -> Any:
        """The output object the app built under ``name``."""
        return self.services.outputs[name][1]

    @property
    def hooks(self) -> Broadcast:
        """Fire a broadcast hook as the core does: ``app.hooks.record_stored(record=...)``."""
        return Broadcast(self.services.pm, self.services.settings)

    def plugins(self) -> list[PluginInfo]:
        """What is loaded, as ``publisher plugins`` lists it."""
        return describe_plugins(self.services.pm, self.services.outputs)


@contextmanager
def plugin_app(folder: Path | str, *plugins: ModuleType, **options: Any) -> Iterator[PluginApp]:
    """``with plugin_app(tmp_path, my_plugin) as app: ...``, closed afterwards."""
    app = PluginApp(folder, *plugins, **options)
    try:
        yield app
    finally:
        app.close()


def _builtin_names() -> list[str]:
    return [module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS]


def _importable(plugin: ModuleType) -> str:
    """The module's import name; a module made in a test is made importable under it."""
    if not isinstance(plugin, ModuleType):
        raise TypeError(f"PluginApp loads plugin modules, not {type(plugin).__name__} objects")
    if sys.modules.get(plugin.__name__) is plugin:
        return plugin.__name__
    try:
        found = importlib.import_module(plugin.__name__)
    except ImportError:
        sys.modules[plugin.__name__] = plugin
        return plugin.__name__
    if found is not plugin:
        raise TypeError(f"another module is importable as {plugin.__name__}: rename the plugin")
    return plugin.__name__
