"""YAML front matter written at the speed of libyaml's emitter: the same text as ``yaml.dump``.

Why not ``yaml.dump``: for a front matter of plain data (what a record holds: strings,
numbers, booleans, null, lists, mappings) most of its time goes to PyYAML's Python layers,
the representer building a node per value and the resolver walked twice per scalar, not to
the emitter. Here each value becomes its emitter event directly, tagged as PyYAML's
``SafeRepresenter`` tags it and marked implicit exactly as its serializer would, so the
C emitter writes the same bytes (``tests/test_front_matter.py`` compares them on generated
data). Anything else (a subclass, a date, the same list twice, which PyYAML writes as an
anchor) is left to ``yaml.dump`` itself.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.resolver import Resolver

#: libyaml's safe dumper when PyYAML was built with it
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
OPTIONS = {"allow_unicode": True, "width": 1000}
_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
MAX_KEYS = 4096  # mapping keys whose events are kept
_KEYS: dict[str, Any] = {}
_RESOLVERS = Resolver.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])


class _NotPlain(Exception):
    """A value this module does not write itself."""


def dump(data: Any) -> str:
    """``yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=1000)``."""
    events = [yaml.StreamStartEvent(), yaml.DocumentStartEvent(explicit=False)]
    try:
        _add(data, events, set())
    except _NotPlain:
        return yaml.dump(data, Dumper=DUMPER, sort_keys=False, **OPTIONS)
    events += [yaml.DocumentEndEvent(explicit=False), yaml.StreamEndEvent()]
    return yaml.emit(events, Dumper=DUMPER, **OPTIONS)


def _add(value: Any, events: list[Any], seen: set[int]) -> None:
    kind = type(value)
    if kind is not dict and kind is not list:
        events.append(_scalar(value))
        return
    if id(value) in seen:  # PyYAML would write an anchor and an alias
        raise _NotPlain
    seen.add(id(value))
    if kind is dict:
        events.append(yaml.MappingStartEvent(None, _MAP, True, flow_style=False))
        for key, item in value.items():
            events.append(_KEYS.get(key) or _key(key))
            _add(item, events, seen)
        events.append(yaml.MappingEndEvent())
    else:
        events.append(yaml.SequenceStartEvent(None, _SEQ, True, flow_style=False))
        for item in value:
            _add(item, events, seen)
        events.append(yaml.SequenceEndEvent())


def _key(key: Any) -> Any:
    """A key's event, kept: records of one site repeat the same few hundred field names."""
    event = _scalar(key)
    if type(key) is str and len(_KEYS) < MAX_KEYS:
        _KEYS[key] = event
    return event


def _scalar(value: Any) -> Any:
    tag, text = _represent(value)
    implicit = (tag == _plain_tag(text), tag == _STR)
    return yaml.ScalarEvent(None, tag, implicit, text)


def _represent(value: Any) -> tuple[str, str]:
    """The tag and text of ``SafeRepresenter`` for the plain types."""
    kind = type(value)
    if kind is str:
        return _STR, value
    if value is None:
        return _TAG + "null", "null"
    if kind is bool:
        return _TAG + "bool", "true" if value else "false"
    if kind is int:
        return _TAG + "int", str(value)
    if kind is float:
        return _TAG + "float", _float_text(value)
    raise _NotPlain


def _float_text(value: float) -> str:
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text


def _plain_tag(text: str) -> str:
    """The tag ``text`` written plain would be read back as (PyYAML's resolver)."""
    for tag, pattern in _RESOLVERS.get(text[:1], []) + _WILDCARD:
        if pattern.match(text):
            return tag
    return _STR
