"""docs/plugins.md's hook reference is complete: every hook with its exact arguments, each
argument described, a working example each, and every field an output receives."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

import pytest

from publisher import hookspecs
from publisher.outputs import Event, EventKind, OutputRecord
from publisher.plugins import isolated_plugin_manager

GUIDE = Path(__file__).parents[1] / "docs" / "plugins.md"
CONTEXT = {"plugin_config", "settings"}  # described once, above the hooks
HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "publisher_spec"))


def arguments(hook: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, hook)).parameters)


def reference() -> dict[str, str]:
    """Hook name -> its section in the guide's reference (heading included)."""
    text = GUIDE.read_text()
    start = text.index("## Hook reference")
    body = text[start : text.index("\n## ", start + 1)]
    parts = re.split(r"(?m)^(?=### )", body)[1:]
    return {re.match(r"### `(\w+)\(", part).group(1): part for part in parts}


def test_the_reference_has_a_section_per_hook_and_no_other():
    assert sorted(reference()) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_is_documented_with_its_exact_arguments(hook):
    section = reference()[hook]
    assert section.startswith(f"### `{hook}({', '.join(arguments(hook))})`"), section[:120]
    for name in set(arguments(hook)) - CONTEXT:
        assert f"- `{name}`" in section, f"{hook}: argument {name} is not described"
    assert re.search(r"(?i)thread|process", section), f"{hook}: where it runs is not said"
    assert re.search(r"(?i)rais", section), f"{hook}: whether it may raise is not said"


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_has_an_example_that_registers(hook):
    """The example is a plugin module pluggy accepts: the hook exists, its arguments too."""
    examples = re.findall(r"```python\n(.*?)```", reference()[hook], re.S)
    assert len(examples) == 1, f"{hook}: one example expected"
    module = types.ModuleType(f"example_{hook}")
    exec(compile(examples[0], f"<{hook} example>", "exec"), module.__dict__)  # noqa: S102
    assert hasattr(getattr(module, hook), "publisher_impl"), f"{hook}: no @hookimpl {hook}"
    pm = isolated_plugin_manager({f"example_{hook}": module})
    assert pm.hook.__dict__[hook].get_hookimpls()


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_docstring_says_where_it_runs_and_whether_it_may_raise(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert "Called" in doc, hook
    assert re.search(r"(?i)rais", doc), hook


@pytest.mark.parametrize(
    ("prefix", "cls"), [("record", OutputRecord), ("event", Event)], ids=["record", "event"]
)
def test_every_field_an_output_receives_is_documented(prefix, cls):
    guide = GUIDE.read_text()
    names = [field.name for field in dataclasses.fields(cls)]
    names += [name for name, value in vars(cls).items() if isinstance(value, property)]
    for name in names:
        assert f"`{prefix}.{name}`" in guide, f"{cls.__name__}.{name} is missing from the guide"
        assert f"``{name}``" in (cls.__doc__ or ""), f"{cls.__name__}'s docstring lacks {name}"


def test_the_guide_names_the_events_as_the_core_does():
    guide = GUIDE.read_text()
    for kind in typing.get_args(EventKind):
        assert f"`{kind}`" in guide, kind
    assert "publish or retract" not in guide
