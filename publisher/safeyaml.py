"""The only YAML loader in publisher: safe tags only, and bounded.

``yaml.safe_load`` already refuses ``!!python/object``; on top of that this loader caps
aliases (an alias bomb expands a few hundred bytes into gigabytes) and nesting depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from publisher.errors import MalformedInput

try:  # the C loader is several times faster; fall back to pure Python where it is missing
    _Base: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Base = yaml.SafeLoader

MAX_ALIASES = 100
MAX_DEPTH = 32


class BoundedSafeLoader(_Base):  # type: ignore[misc, valid-type]
    """A SafeLoader that refuses too many aliases and too deep nesting."""

    max_aliases = MAX_ALIASES
    max_depth = MAX_DEPTH

    def construct_document(self, node: Any) -> Any:
        _check_tree(node, self.max_depth, self.max_aliases)
        return super().construct_document(node)


def _check_tree(node: Any, max_depth: int, max_aliases: int) -> None:
    """Walk the composed node tree before building objects from it.

    Works with the C parser too (which composes nodes without calling back into Python):
    an alias is a node reached a second time, so shared nodes are counted as aliases.
    """
    stack = [(node, 1)]
    seen: set[int] = set()
    aliases = 0
    while stack:
        current, depth = stack.pop()
        if depth > max_depth:
            raise MalformedInput("YAML is nested too deeply", errors={"_body": ["too deep"]})
        if id(current) in seen:
            aliases += 1
            if aliases > max_aliases:
                raise MalformedInput(
                    "YAML has too many aliases", errors={"_body": ["too many YAML aliases"]}
                )
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def _loader(max_aliases: int, max_depth: int) -> type:
    if (max_aliases, max_depth) == (MAX_ALIASES, MAX_DEPTH):
        return BoundedSafeLoader
    return type(
        "ConfiguredLoader",
        (BoundedSafeLoader,),
        {"max_aliases": max_aliases, "max_depth": max_depth},
    )


def load_yaml(
    text: str | bytes, *, max_aliases: int = MAX_ALIASES, max_depth: int = MAX_DEPTH
) -> Any:
    """Load one YAML document safely."""
    return yaml.load(text, Loader=_loader(max_aliases, max_depth))  # noqa: S506 - bounded safe loader


def load_yaml_all(
    text: str | bytes, *, max_aliases: int = MAX_ALIASES, max_depth: int = MAX_DEPTH
) -> Iterator[Any]:
    """Load every YAML document of a stream safely."""
    return yaml.load_all(text, Loader=_loader(max_aliases, max_depth))  # noqa: S506
