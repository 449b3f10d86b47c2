"""Per-output routing rules: a small, safe expression language over record fields.

An operator writes ``outputs: {feeds: {when: 'quality >= 20 and type == "article"'}}``. The
rule is parsed with Python's :mod:`ast` and only an allow-listed subset of nodes is accepted
(boolean logic, comparisons, field names, literals); everything else is refused at start-up
with :class:`~publisher.errors.ConfigError`. Nothing is ever passed to ``eval``.

Evaluation never raises: a missing field is ``None``, and an ordering comparison or ``in``
test that makes no sense (``None < 3``, ``3 in None``, ``"a" < 1``) is simply false, so a
record with an odd shape is not routed rather than failing its delivery.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from publisher.errors import ConfigError

MAX_RULE_LENGTH = 1000
MAX_NODES = 300

#: Lower-case JSON/YAML spellings accepted as literals besides Python's ``True``/``None``.
_LITERAL_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}

_MISSING = object()


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """Wrap an ordering operator: only numbers with numbers, strings with strings."""

    def compare(left: Any, right: Any) -> bool:
        if _is_number(left) and _is_number(right):
            return op(left, right)
        if isinstance(left, str) and isinstance(right, str):
            return op(left, right)
        return False

    return compare


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    """Equality that does not confuse ``true`` with ``1`` (Python's ``True == 1``)."""
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple):
        return any(_equal(item, element) for element in container)
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


_COMPARATORS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: _equal,
    ast.NotEq: lambda a, b: not _equal(a, b),
    ast.Lt: _ordered(operator.lt),
    ast.LtE: _ordered(operator.le),
    ast.Gt: _ordered(operator.gt),
    ast.GtE: _ordered(operator.ge),
    ast.In: _contains,
    ast.NotIn: lambda a, b: not _contains(a, b),
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.Compare,
    ast.Name,
    ast.Attribute,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Load,
    *_COMPARATORS,
)


@dataclass(frozen=True)
class Rule:
    """A compiled routing rule; ``matches`` tells whether a record goes to the output."""

    text: str
    _tree: ast.Expression = field(repr=False, compare=False)

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return bool(_evaluate(self._tree.body, fields))


def compile_rule(text: str) -> Rule:
    """Parse and check ``text``; raise :class:`ConfigError` saying what is not allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a routing rule must be a non-empty string")
    if len(text) > MAX_RULE_LENGTH:
        raise ConfigError(f"routing rule longer than {MAX_RULE_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"routing rule {text!r} is not valid: {exc}") from None
    _check(tree, text)
    return Rule(text=text, _tree=tree)


def _check(tree: ast.Expression, text: str) -> None:
    """Refuse any node outside the allow-list, and unreasonably large rules."""
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ConfigError(f"routing rule {text!r} is too complex")
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            what = type(node).__name__
            raise ConfigError(f"routing rule {text!r}: {what} is not allowed")
        if isinstance(node, ast.Constant) and not _is_literal(node.value):
            raise ConfigError(f"routing rule {text!r}: literal {node.value!r} is not allowed")
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and not _is_number(getattr(node.operand, "value", None))
        ):
            raise ConfigError(f"routing rule {text!r}: '-' only applies to numbers")
        if isinstance(node, ast.Attribute) and not _is_path(node):
            raise ConfigError(f"routing rule {text!r}: only field paths like a.b are allowed")
        name = getattr(node, "attr", None) or getattr(node, "id", None)
        if isinstance(name, str) and name.startswith("__"):
            # Harmless (fields are looked up in mappings, never with getattr), but such a
            # rule is surely a mistake or a probe: refuse it loudly.
            raise ConfigError(f"routing rule {text!r}: {name} is not a field name")


def _is_literal(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _is_path(node: ast.AST) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _evaluate(node: ast.AST, fields: Mapping[str, Any]) -> Any:
    """Walk a checked tree; only node types admitted by :func:`_check` reach here."""
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(value, fields) for value in node.values)
        return any(_evaluate(value, fields) for value in node.values)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, fields)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.Compare):
        return _compare(node, fields)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(element, fields) for element in node.elts]
    if isinstance(node, ast.Name | ast.Attribute):
        return _lookup(node, fields)
    raise ConfigError(f"unexpected node {type(node).__name__}")  # pragma: no cover


def _compare(node: ast.Compare, fields: Mapping[str, Any]) -> bool:
    """Chained comparisons (``1 < quality <= 5``) hold when every link holds."""
    left = _evaluate(node.left, fields)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = _evaluate(comparator, fields)
        if not _COMPARATORS[type(op)](left, right):
            return False
        left = right
    return True


def _lookup(node: ast.AST, fields: Mapping[str, Any]) -> Any:
    """Resolve ``a.b.c`` in nested mappings; anything missing is ``None``."""
    path: list[str] = []
    while isinstance(node, ast.Attribute):
        path.append(node.attr)
        node = node.value
    assert isinstance(node, ast.Name)
    if not path and node.id in _LITERAL_NAMES and node.id not in fields:
        return _LITERAL_NAMES[node.id]
    path.append(node.id)
    value: Any = fields
    for key in reversed(path):
        value = value.get(key, _MISSING) if isinstance(value, Mapping) else _MISSING
        if value is _MISSING:
            return None
    return value
