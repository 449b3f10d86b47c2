"""Fixtures as in Flask's tutorial: ``app``, ``client``, ``runner``, plus tokens and a
``drain`` that runs due deliveries the way a worker would."""

from __future__ import annotations

import copy
import gc
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from publisher.app import create_app
from publisher.config import merge_into
from publisher.db import transaction
from publisher.tokens import create_token
from tests.helpers import DATA, LOCAL_PLUGINS, VECTORS

os.environ.setdefault("PUBLISHER_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def seed_md() -> bytes:
    return (DATA / "seed-record.md").read_bytes()


@pytest.fixture
def seed_json() -> dict[str, Any]:
    return json.loads((DATA / "seed-record.json").read_text())


@pytest.fixture
def base_settings(tmp_path: Path) -> dict[str, Any]:
    """Embedded defaults in a temporary folder, plus the recording plugin."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    return {
        "data_dir": str(tmp_path / "data"),
        "keys_dir": str(keys),
        "queue_url": str(tmp_path / "data" / "queue.db"),
        "plugins_dir": str(LOCAL_PLUGINS),
        "sqlite_synchronous": "NORMAL",
        "dev_key": False,
        "plugins": {"recording": {"log": str(tmp_path / "recorded.jsonl")}},
        "delivery": {"jitter": 0.0, "retry_schedule": [0, 1, 2]},
    }


@pytest.fixture
def make_app(base_settings: dict[str, Any]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        settings = copy.deepcopy(base_settings)
        merge_into(settings, overrides)
        app = create_app(overrides=settings, environ={})
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["publisher"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):  # noqa: ANN201
    return app.test_cli_runner()


@pytest.fixture
def invoke(runner) -> Iterator[Callable[..., Any]]:  # noqa: ANN001
    """Run a ``publisher`` command against this test's app."""
    from publisher.cli import cli

    def run(*args: str, **kwargs: Any) -> Any:
        return runner.invoke(cli, list(args), **kwargs)

    yield run
    gc.unfreeze()  # ``ingest`` freezes its process's heap: here, the test session's


@pytest.fixture
def token(app: Flask) -> Callable[..., str]:
    """``token("submit", "read")`` -> a bearer token with those scopes."""

    def make(*scopes: str) -> str:
        with transaction(app.extensions["publisher"].sessions) as session:
            return create_token(session, scopes or ("admin",))[1]

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin')}"}


@pytest.fixture
def recorded(base_settings: dict[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    path = Path(base_settings["plugins"]["recording"]["log"])

    def read() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    return read


@pytest.fixture
def vectors() -> Path:
    """The public vectors copied into the repository, so a fresh clone tests alone."""
    return VECTORS


def copy_seed(tmp_path: Path) -> Path:
    target = tmp_path / "seed-record.md"
    shutil.copy(DATA / "seed-record.md", target)
    return target
