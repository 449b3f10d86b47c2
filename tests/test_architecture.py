"""The architecture map (docs/architecture.md) says what the code and the import contract say.

The layers are import-linter contracts in pyproject.toml, run by ``make lint``. These tests
keep the map a reader uses in step with them: every module named once, in the layer the
contract gives it; the layer table is the contract's; the lists of the Flask rule and of the
plugin rule cover every module; and the tables of routes, commands and hooks are the app's,
the command line's and the hookspecs'. ``UPDATE_ARCHITECTURE_MAP=1`` rewrites those three
generated tables instead of failing on them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import grimp
import pytest
from importlinter import api as importlinter

from publisher import hookspecs
from publisher.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PLUGIN_API = {"outputs", "hookspecs", "errors", "fileio", "subscription"}
TICKED = re.compile(r"`([^`]+)`")


# -- reading the contract, the code and the map ------------------------------------------------
def contract(contract_id: str) -> dict:
    options = importlinter.read_configuration(str(ROOT / "pyproject.toml"))
    (found,) = [c for c in options["contracts_options"] if c.get("id") == contract_id]
    return found


def contract_layers() -> list[tuple[list[str], str]]:
    """Each line of the layers contract, top first: its modules and how its siblings relate."""
    layers = []
    for line in contract("layers")["layers"]:
        separator = "|" if "|" in line else ":" if ":" in line else None
        names = [name.strip() for name in line.split(separator)] if separator else [line.strip()]
        kind = {"|": "independent", ":": "may import each other", None: ""}[separator]
        layers.append((names, kind))
    return layers


def layer_of(module: str) -> int:
    """The contract's layer (1 = top) of a top-level name under ``publisher``."""
    for number, (names, _kind) in enumerate(contract_layers(), start=1):
        if module in names:
            return number
    raise AssertionError(f"{module} is in no layer of the contract")


def code_modules() -> set[str]:
    """Every module file of publisher/ and plugins/ (migrations as one package)."""
    files = sorted((ROOT / "publisher").rglob("*.py")) + sorted((ROOT / "plugins").glob("*.py"))
    found = set()
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        if name.startswith("publisher/migrations/"):
            found.add("publisher/migrations/")
        elif path.name != "__init__.py" or path.read_text().strip():
            found.add(name)
    return found


def top_name(module_path: str) -> str:
    """``publisher/api/records.py`` -> ``api``; ``publisher/db.py`` -> ``db``."""
    return module_path.removeprefix("publisher/").split("/")[0].removesuffix(".py")


def table_rows(heading: str) -> list[list[str]]:
    """The cells of each row of the first table after ``heading`` in the map."""
    text = DOC.read_text().split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # the header


def map_entries() -> list[tuple[str, str]]:
    """(module, layer cell) of every row of the module map."""
    return [(TICKED.findall(module)[0], layer) for module, layer, _ in table_rows("## Module map")]


# -- the map against the code and the contract -------------------------------------------------
def test_the_map_names_every_module_once_and_only_modules_that_exist():
    named = [module for module, _ in map_entries()]
    assert sorted({m for m in named if named.count(m) > 1}) == []
    assert sorted(code_modules() - set(named)) == [], "modules the map does not name"
    assert sorted(set(named) - code_modules()) == [], "the map names modules that do not exist"


def test_each_module_is_in_the_layer_the_contract_gives_it():
    wrong = []
    for module, layer in map_entries():
        if module.startswith("plugins/"):
            expected = "plugins"
        elif module == "publisher/__init__.py":
            expected = "package"
        else:
            number = layer_of(top_name(module))
            expected = f"{number} {table_rows('## Layers')[number - 1][1]}"
        if layer != expected:
            wrong.append(f"{module}: the map says {layer!r}, the contract {expected!r}")
    assert wrong == []


def test_the_layer_table_is_the_contract_top_to_bottom():
    rows = [row for row in table_rows("## Layers") if row[0].isdigit()]
    in_map = [(TICKED.findall(row[2]), row[3]) for row in rows]
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    assert in_map == contract_layers()


def test_the_flask_rule_covers_every_module_below_the_http_layer():
    below_http = [
        name for names, _ in contract_layers()[layer_of("api") :] for name in names if name != "api"
    ]
    sources = contract("no-flask")["source_modules"]
    expected = {f"publisher.{name}" for name in below_http} | {"publisher_plugins"}
    assert sorted(set(sources) ^ expected) == []
    assert set(contract("no-flask")["forbidden_modules"]) == {"flask", "werkzeug"}


def test_plugins_are_forbidden_every_module_but_the_plugin_api():
    every = {name for names, _ in contract_layers() for name in names}
    forbidden = set(contract("plugin-api")["forbidden_modules"])
    assert forbidden == {f"publisher.{name}" for name in every - PLUGIN_API}


def test_breaking_a_layer_fails_the_contract(tmp_path):
    """A lower module that imports a higher one (the store importing the views) is refused."""
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "publisher", tmp_path / "publisher", ignore=skip)
    shutil.copytree(ROOT / "plugins", tmp_path / "publisher_plugins", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    lint = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    assert subprocess.run(lint, cwd=tmp_path, capture_output=True).returncode == 0
    store = tmp_path / "publisher" / "store.py"
    store.write_text(store.read_text() + "\nfrom publisher.api import records  # noqa\n")
    broken = subprocess.run(lint, cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode != 0
    assert "publisher.store -> publisher.api.records" in broken.stdout


# -- where a route, a command, a hook is handled -----------------------------------------------
def route_rows(app) -> Iterator[str]:  # noqa: ANN001
    rules = sorted(app.url_map.iter_rules(), key=lambda rule: (rule.rule, sorted(rule.methods)))
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        methods = ", ".join(sorted(rule.methods - {"HEAD", "OPTIONS"}))
        yield f"| {methods} | `{rule.rule}` | `{view.__module__}:{view.__qualname__}` |"


def command_rows(group: click.Group, prefix: str = "publisher") -> Iterator[str]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        callback = command.callback
        yield f"| `{prefix} {name}` | `{callback.__module__}:{callback.__qualname__}` |"
        if isinstance(command, click.Group):
            yield from command_rows(command, f"{prefix} {name}")


class _HookCallers(ast.NodeVisitor):
    """Hooks named in code (``pm.hook.<name>``, ``"<name>"``), docstrings aside."""

    def __init__(self, hooks: set[str]) -> None:
        self.hooks, self.scope = hooks, []
        self.found: set[str] = set()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node)

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef) -> None:
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        self.scope.append(node.name)
        for child in body:
            self.visit(child)
        self.scope.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._note(node.attr)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._note(node.value)

    def _note(self, name: str) -> None:
        if name in self.hooks and self.scope:
            self.found.add(name)


def hook_rows() -> Iterator[str]:
    marker = f"{hookspecs.hookspec.project_name}_spec"
    hooks = {name for name in vars(hookspecs) if hasattr(getattr(hookspecs, name), marker)}
    callers: dict[str, set[str]] = {}
    for path in sorted((ROOT / "publisher").rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        if module in {"publisher/hookspecs.py", "publisher/metrics.py"}:
            continue  # the specs themselves; metrics implements the hooks, it does not call them
        visitor = _HookCallers(hooks)
        visitor.visit(ast.parse(path.read_text()))
        for hook in visitor.found:
            callers.setdefault(hook, set()).add(module)
    for hook in sorted(hooks):
        called = ", ".join(f"`{where}`" for where in sorted(callers.get(hook, ())))
        yield f"| `{hook}` | `publisher/hookspecs.py:{hook}` | {called} |"


def generated(app) -> dict[str, list[str]]:  # noqa: ANN001
    return {
        "routes": ["| methods | path | handled by |", "|---|---|---|", *route_rows(app)],
        "commands": ["| command | run by |", "|---|---|", *command_rows(cli)],
        "hooks": ["| hook | specification | called by |", "|---|---|---|", *hook_rows()],
    }


def in_doc(name: str, text: str) -> list[str]:
    start, end = f"<!-- generated:{name} -->\n", f"<!-- /generated:{name} -->"
    return text.split(start, 1)[1].split(end, 1)[0].splitlines()


@pytest.mark.parametrize("table", ["routes", "commands", "hooks"])
def test_the_map_says_where_each_route_command_and_hook_is_handled(app, table):
    expected = generated(app)[table]
    text = DOC.read_text()
    if os.environ.get("UPDATE_ARCHITECTURE_MAP"):
        start, end = f"<!-- generated:{table} -->\n", f"<!-- /generated:{table} -->"
        before, rest = text.split(start, 1)
        DOC.write_text(before + start + "\n".join(expected) + "\n" + end + rest.split(end, 1)[1])
        return
    assert in_doc(table, text) == expected, (
        "docs/architecture.md is out of date: UPDATE_ARCHITECTURE_MAP=1 .venv/bin/pytest "
        "tests/test_architecture.py rewrites its generated tables"
    )


def test_every_hook_has_a_caller_in_the_core():
    assert [row for row in hook_rows() if row.endswith("|  |")] == []


def test_the_rest_of_publisher_reaches_secured_code_through_its_entry_point():
    """``publisher.secured`` is one room with one door: nobody imports its modules directly."""
    graph = grimp.build_graph("publisher", include_external_packages=False, cache_dir=None)
    inside = {m for m in graph.modules if m.startswith("publisher.secured.")}
    through_the_side = sorted(
        f"{importer} -> {module}"
        for module in inside
        for importer in graph.find_modules_that_directly_import(module)
        if not importer.startswith("publisher.secured")
    )
    assert through_the_side == []


def test_tests_import_only_helpers_meant_for_it():
    """A test module imports publisher's names and tests' helper modules, never another test
    module or conftest (whose fixtures pytest hands over)."""
    helpers = {"tests.helpers", "tests.backends", "tests.receivers", "tests.concurrency"}
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if (module or "").startswith("tests") and module not in helpers:
                wrong.append(f"{path.relative_to(ROOT)}: from {module}")
    assert wrong == []
