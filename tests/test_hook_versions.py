"""Hooks grow without breaking plugins: a plugin written against today's hooks
(tests/hook_plugins/observer_today.py, frozen) keeps working when every hook gains an
argument, as docs/plugins.md's versioning policy promises."""

from __future__ import annotations

import importlib.util
import inspect
import types
from pathlib import Path

import pluggy
import pytest

from publisher import hookspecs
from publisher.plugins import Broadcast, collect_outputs
from publisher.testing import Lifecycle

TODAY = Path(__file__).parent / "hook_plugins" / "observer_today.py"
HOOKS = sorted(n for n, v in vars(hookspecs).items() if hasattr(v, "publisher_spec"))


def frozen_plugin() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("observer_today_frozen", TODAY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grown_hookspecs() -> types.ModuleType:
    """Today's hook specifications, each with one more argument, as a later release may have."""
    module = types.ModuleType("grown_hookspecs")
    namespace = {"hookspec": hookspecs.hookspec}
    for name in HOOKS:
        spec = getattr(hookspecs, name)
        params = [*inspect.signature(spec).parameters, "added_later"]
        options = spec.publisher_spec  # keep firstresult, historic, ... as they are
        source = f"def {name}({', '.join(params)}):\n    pass\n"
        exec(source, namespace)  # noqa: S102 - a spec built from today's signature
        setattr(module, name, hookspecs.hookspec(**_spec_options(options))(namespace[name]))
    return module


def _spec_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k in {"firstresult", "historic", "warn_on_impl"}}


@pytest.fixture
def grown() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(grown_hookspecs())
    return pm


def test_the_frozen_plugin_uses_fewer_arguments_than_some_hooks_offer_today():
    plugin = frozen_plugin()
    fewer = [
        name
        for name in HOOKS
        if hasattr(plugin, name)
        and len(inspect.signature(getattr(plugin, name)).parameters)
        < len(inspect.signature(getattr(hookspecs, name)).parameters)
    ]
    assert {"register_outputs", "record_validated", "delivery_failed"} <= set(fewer)


def test_a_plugin_of_today_registers_against_grown_hooks(grown):
    grown.register(frozen_plugin(), name="observer_today")
    grown.check_pending()  # no hook or argument it names has gone


def test_a_plugin_of_today_is_called_with_what_it_asks_for_when_hooks_grow(grown):
    plugin = frozen_plugin()
    grown.register(plugin, name="observer_today")
    settings = {"site_url": "https://news.example", "plugins": {"observer_today": {"tag": "t"}}}
    outputs = collect_outputs(grown, settings)
    assert list(outputs) == ["shelf"]

    record, event = Lifecycle("grown").published(1)
    hooks = Broadcast(grown, settings)
    hooks.record_received(source="api", raw={"title": "x"}, added_later=1)
    hooks.record_validated(record={"id": "r"}, warnings=[], added_later=1)
    hooks.record_rejected(source="api", reason="invalid", errors={}, added_later=1)
    hooks.record_stored(record=record, event="published", added_later=1)
    hooks.delivery_succeeded(output="shelf", record_id=record.id, event=event, added_later=1)
    hooks.delivery_failed(
        output="shelf", record_id=record.id, event=event, error="e", dead=True, added_later=1
    )
    grown.hook.delivery_failed(  # pluggy's own call path, too
        output="shelf",
        record_id=record.id,
        event=event,
        error="e",
        dead=False,
        plugin_config={},
        settings={},
        added_later=1,
    )
    calls = plugin.CALLS
    assert calls == [
        ("record_received", {"source": "api"}),
        ("record_validated", {"id": "r"}),
        ("record_rejected", {"reason": "invalid"}),
        ("record_stored", {"id": record.id, "event": "published", "tag": "t"}),
        ("delivery_succeeded", {"output": "shelf", "kind": "published"}),
        ("delivery_failed", {"output": "shelf", "dead": True}),
        ("delivery_failed", {"output": "shelf", "dead": False}),
    ]
