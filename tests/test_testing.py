"""publisher.testing, the plugin author's kit: isolation, the app around a plugin, and the
contract kit failing a broken output with the rule it broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from publisher.outputs import BaseOutput
from publisher.testing import (
    Lifecycle,
    OutputContract,
    PluginApp,
    deliver,
    load_outputs,
    make_event,
    make_record,
)

ROOT = Path(__file__).parents[1]


def _installed(site: Path, name: str, module: str, source: str) -> None:
    """Install ``module`` as a distribution with a ``publisher.plugins`` entry point, by
    writing what pip writes (a module and a .dist-info with entry_points.txt)."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module.replace('_', '-')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[publisher.plugins]\n{name} = {module}\n")


PLUGIN = """
    from publisher.hookspecs import hookimpl
    from publisher.outputs import BaseOutput

    class Out(BaseOutput):
        def publish(self, record, event):
            pass

    @hookimpl
    def register_outputs(plugin_config):
        return [Out(name=plugin_config.get("output", "{name}"))]
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Two installed plugins (entry points on): ``mine`` under test, and ``other``."""
    site = tmp_path / "site"
    site.mkdir()
    _installed(site, "mine", "publisher_mine", PLUGIN.replace("{name}", "mine"))
    _installed(site, "other", "publisher_other", PLUGIN.replace("{name}", "other"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("PUBLISHER_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    import publisher_mine

    yield publisher_mine
    for module in ("publisher_mine", "publisher_other"):
        sys.modules.pop(module, None)


def test_load_outputs_loads_only_the_plugin_under_test_even_when_it_is_installed(installed):
    outputs = load_outputs(installed, plugins={"mine": {"output": "mine-out"}})
    assert [output.name for output in outputs] == ["mine-out"]  # its section, by entry name


def test_load_outputs_adds_the_builtins_only_when_asked(installed, tmp_path):
    names = {o.name for o in load_outputs(installed, builtins=True, data_dir=str(tmp_path))}
    assert names == {"mine", "files", "feeds"}


def test_an_installed_plugin_named_in_plugins_load_is_not_registered_twice(installed, tmp_path):
    with PluginApp(tmp_path, installed, autoload=True) as app:
        listed = {info.name: info.outputs for info in app.plugins()}
    assert listed == {"mine": ("mine",), "other": ("other",), "publisher-metrics": ()}


def test_accepts_protected_set_on_the_class_is_honoured(tmp_path):
    class Vault(BaseOutput):
        name = "vault"
        accepts_protected = True

        def publish(self, record, event):
            pass

    assert Vault().accepts_protected is True
    assert Vault(accepts_protected=False).accepts_protected is False
    module = types.ModuleType("publisher_vault_plugin")
    exec(  # noqa: S102 - a plugin module made in the test
        "from publisher.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_outputs():\n    return [Vault()]\n",
        module.__dict__ | {"Vault": Vault},
        module.__dict__,
    )
    module.Vault = Vault
    with PluginApp(tmp_path, module) as app:
        answer = app.client.get("/api/v1/outputs", headers=app.headers).json
    assert [(o["name"], o["accepts_protected"]) for o in answer["items"]] == [("vault", True)]


def test_base_output_needs_a_name():
    with pytest.raises(TypeError, match="needs a name"):
        BaseOutput()


def test_lifecycle_controls_revision_delivery_id_and_time():
    life = Lifecycle("x", title="T")
    first = life.published(1)
    second = life.updated(3, title="U")
    gone = life.retracted()
    assert [event.revision for _, event in (first, second, gone)] == [1, 3, 3]
    assert first[1].occurred_at < second[1].occurred_at < gone[1].occurred_at
    assert len({event.delivery_id for _, event in (first, second, gone)}) == 3
    assert second[0].title == "U" and gone[1].kind == "retracted"
    record = first[0]
    event = make_event(record, "updated", revision=7, delivery_id="dlv_fixed")
    assert (event.revision, event.delivery_id, event.record_id) == (7, "dlv_fixed", record.id)


def test_plugin_app_runs_a_plugin_in_a_real_app(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "hook_plugins"))
    try:
        import observer_today
    finally:
        sys.path.pop(0)
    observer_today.CALLS.clear()
    log = tmp_path / "stored.jsonl"
    with PluginApp(tmp_path, observer_today, plugins={"observer_today": {"log": str(log)}}) as app:
        assert [info.name for info in app.plugins()] == ["observer_today", "publisher-metrics"]
        answer = app.submit({"title": "Hi", "webUrl": "https://example.com/hi", "published": True})
        app.run_deliveries()
        assert [(d["output"], d["status"]) for d in app.deliveries(answer["id"])] == [
            ("shelf", "done")
        ]
        app.retract(answer["id"])
        app.run_deliveries()
        record, _ = Lifecycle("fired").published()
        app.hooks.record_stored(record=record, event="published")
    names = [name for name, _ in observer_today.CALLS]
    assert names[:3] == ["record_received", "record_validated", "record_stored"]
    assert ("delivery_succeeded", {"output": "shelf", "kind": "retracted"}) in observer_today.CALLS
    # stored once over the API, then once fired by the test (a DELETE stores no revision)
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == [
        "published",
        "published",
    ]


def test_broadcast_hooks_get_their_plugin_config_and_only_shareable_settings(tmp_path):
    module = types.ModuleType("publisher_peek_plugin")
    seen: list[tuple[dict, dict]] = []

    def record_stored(plugin_config, settings):
        seen.append((dict(plugin_config), dict(settings)))

    from publisher.hookspecs import hookimpl

    module.record_stored = hookimpl(record_stored)
    options = {"publisher_peek_plugin": {"colour": "blue"}}
    with PluginApp(tmp_path, module, plugins=options, site_url="https://news.example") as app:
        app.submit({"title": "Hi", "webUrl": "https://example.com/hi", "published": True})
        with pytest.raises(TypeError):
            seen[0][1]["limits"]["max_batch"] = 1  # read-only, all the way down
    ((own, settings),) = seen
    assert own == {"colour": "blue"}
    assert settings["site_url"] == "https://news.example"
    assert not {"sources", "database_url", "queue_url", "plugins", "keys_dir"} & set(settings)


BROKEN = '''
import pytest
from publisher.outputs import BaseOutput
from publisher.testing import OutputContract


class Resurrecting(BaseOutput):
    """Forgets what it retracted: a late retry brings the record back."""

    name = "resurrecting"

    def __init__(self):
        super().__init__()
        self.held = {}

    def publish(self, record, event):
        if self.held.get(record.id, 0) <= event.revision:
            self.held[record.id] = event.revision

    def retract(self, record, event):
        self.held.pop(record.id, None)

    def inventory(self):
        return dict(self.held)


class Appending(Resurrecting):
    """Appends a copy on every publish: not idempotent."""

    name = "appending"

    def __init__(self):
        super().__init__()
        self.lines = []

    def publish(self, record, event):
        super().publish(record, event)
        self.lines.append((record.id, record.title))


class TestResurrecting(OutputContract):
    @pytest.fixture
    def output(self):
        return Resurrecting()


class TestAppending(OutputContract):
    @pytest.fixture
    def output(self):
        return Appending()

    @pytest.fixture
    def read_back(self, output):
        return lambda record_id: repr([line for line in output.lines if line[0] == record_id])
'''


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


def test_an_output_that_breaks_the_contract_fails_with_the_rule_it_broke(tmp_path):
    (tmp_path / "test_broken.py").write_text(BROKEN)
    result = _pytest(tmp_path, "test_broken.py")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = sorted(line for line in result.stdout.splitlines() if line.startswith("FAILED"))
    assert any(
        "TestResurrecting::test_rule_4_nothing_comes_back_after_a_retraction" in line
        and "rule 4 (an older event changes nothing; nothing comes back after a retraction)" in line
        for line in failed
    ), result.stdout
    assert any(
        "TestAppending::test_rule_1_the_same_publish_twice_changes_nothing" in line
        and "rule 1 (a publish makes the revision held, and is idempotent)" in line
        for line in failed
    ), result.stdout
    assert not any("test_rule_3" in line or "test_rule_5" in line for line in failed)


def test_importing_the_kit_collects_nothing_and_a_subclass_collects_cleanly(tmp_path):
    (tmp_path / "test_imports.py").write_text(
        "from publisher.testing import *  # noqa\nfrom publisher.testing import OutputContract\n"
    )
    (tmp_path / "test_sub.py").write_text(
        BROKEN.split("class TestResurrecting")[0] + "class TestGood(OutputContract):\n"
        "    @pytest.fixture\n    def output(self):\n        return Resurrecting()\n"
    )
    result = _pytest(tmp_path, "--collect-only", "-W", "error::pytest.PytestCollectionWarning")
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("test_sub.py::TestGood::test_") for line in collected)


def test_the_kit_drives_an_output_like_the_core(tmp_path):
    from publisher_plugins import feeds

    (output,) = load_outputs(feeds, data_dir=str(tmp_path))
    life = Lifecycle("driven")
    deliver(output, life.published(1), life.updated(2))
    assert output.inventory() == {life.id: 2}


class TestBatchingDoubleContract(OutputContract):
    """The suite's own recording plugin (tests/local_plugins/recording.py) as a batching
    output without inventory: the kit still checks its batches, one refused item included."""

    @pytest.fixture
    def output(self, tmp_path):
        sys.path.insert(0, str(ROOT / "tests" / "local_plugins"))
        try:
            import recording
        finally:
            sys.path.pop(0)
        settings = {"recording": {"log": str(tmp_path / "log.jsonl"), "batching": True}}
        outputs = load_outputs(recording, plugins=settings)
        return next(output for output in outputs if output.name == "batcher")

    @pytest.fixture
    def refused_record(self):
        return make_record({"title": "refuse", "webUrl": "https://example.com/refused"})
