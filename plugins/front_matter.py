"""YAML front matter written faster than libyaml's emitter: the same text as ``yaml.dump``.

Why not ``yaml.dump``: for a front matter of plain data (what a record holds: strings,
numbers, booleans, null, lists, mappings) most of its time goes to PyYAML's Python layers,
the representer building a node per value and the resolver walked twice per scalar. Why not
only libyaml's emitter: it is fed one Python event object per value, and building and
converting those costs as much as the emitting. So the common case, block collections of
one-line scalars that libyaml writes plain or single-quoted, is written here as text
directly, by libyaml's own rules (``yaml_emitter_analyze_scalar``); a document with anything
else in it (a character that is escaped, a line long enough to fold, a long key) goes to the
C emitter as events, tagged as PyYAML's ``SafeRepresenter`` tags them and marked implicit
exactly as its serializer would. Anything the events do not cover either (a subclass, a
date, the same list twice, which PyYAML writes as an anchor) is left to ``yaml.dump``
itself. ``tests/plugins/test_front_matter.py`` compares the three with ``yaml.dump`` on
generated data.
"""

from __future__ import annotations

import re
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
    if type(data) is dict and data:
        out: list[str] = []
        try:
            _mapping(data, 0, out, set(), inline=False)
        except _NotPlain:
            pass
        else:
            return "".join(out)
    events = [yaml.StreamStartEvent(), yaml.DocumentStartEvent(explicit=False)]
    try:
        _add(data, events, set())
    except _NotPlain:
        return yaml.dump(data, Dumper=DUMPER, sort_keys=False, **OPTIONS)
    events += [yaml.DocumentEndEvent(explicit=False), yaml.StreamEndEvent()]
    return yaml.emit(events, Dumper=DUMPER, **OPTIONS)


# -- the text, written directly ---------------------------------------------------------------
#
# What libyaml's emitter does with block collections and one-line scalars, for the cases it
# settles without folding, escaping or tags: a scalar is written plain when the resolver reads
# it back as what it is and nothing in it is an indicator (``yaml_emitter_analyze_scalar``),
# else single-quoted; everything else (a character it would escape, a line break, a line
# longer than ``width``, a key longer than a simple key may be) raises ``_NotPlain``, and the
# events above write the whole document instead.

#: what libyaml writes as it is (``IS_PRINTABLE``, unicode allowed), line breaks left out
_PRINTABLE = re.compile("[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*")
#: a first character that keeps a scalar from being plain in a block collection
_FIRST_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")
WIDTH = OPTIONS["width"]
MAX_SIMPLE_KEY = 128  # bytes: a longer key is written as a complex key (``? ``)
_WRITTEN_KEYS: dict[Any, str] = {}


def _mapping(
    value: dict[Any, Any], indent: int, out: list[str], seen: set[int], inline: bool
) -> None:
    _enter(value, seen)
    pad = " " * indent
    for key, item in value.items():
        text = _WRITTEN_KEYS.get(key) if type(key) is str else None
        if text is None:
            text = _written_key(key)
        out.append(text if inline else pad + text)
        inline = False
        _value(item, indent, indent + len(text) + 1, out, seen, indentless=True)


def _sequence(value: list[Any], indent: int, out: list[str], seen: set[int], inline: bool) -> None:
    _enter(value, seen)
    pad = " " * indent
    for item in value:
        out.append("-" if inline else pad + "-")
        inline = False
        _value(item, indent + 2, indent + 1, out, seen, indentless=False)


def _value(
    item: Any, indent: int, column: int, out: list[str], seen: set[int], *, indentless: bool
) -> None:
    """``item`` after a key's ``:`` or an item's ``-`` (which end at ``column``)."""
    kind = type(item)
    if kind is dict and item:
        if indentless:  # a mapping's value: on the next line, indented
            out.append("\n")
            _mapping(item, indent + 2, out, seen, inline=False)
        else:
            out.append(" ")
            _mapping(item, indent, out, seen, inline=True)
    elif kind is list and item:
        if indentless:  # a mapping's value: the dashes under the key
            out.append("\n")
            _sequence(item, indent, out, seen, inline=False)
        else:
            out.append(" ")
            _sequence(item, indent, out, seen, inline=True)
    elif kind is dict:
        out.append(" {}\n")
    elif kind is list:
        out.append(" []\n")
    else:
        text = _written(item)
        if column + 1 + len(text) > WIDTH:  # libyaml would fold it at a space
            raise _NotPlain
        out.append(" " + text + "\n")


def _enter(value: Any, seen: set[int]) -> None:
    if id(value) in seen:  # PyYAML would write an anchor and an alias
        raise _NotPlain
    seen.add(id(value))


def _written_key(key: Any) -> str:
    text = _written(key)
    if "\n" in text or len(text.encode("utf-8")) > MAX_SIMPLE_KEY:
        raise _NotPlain
    text += ":"
    if type(key) is str and len(_WRITTEN_KEYS) < MAX_KEYS:
        _WRITTEN_KEYS[key] = text
    return text


def _written(value: Any) -> str:
    """A scalar as libyaml writes it in a block collection: plain or single-quoted."""
    tag, text = _represent(value)
    if not (text.isascii() and text.isprintable()) and not _PRINTABLE.fullmatch(text):
        raise _NotPlain  # double-quoted, with escapes
    if _plain_tag(text) == tag and _may_be_plain(text):
        return text
    if tag != _STR:
        raise _NotPlain  # written with its tag
    return "'" + text.replace("'", "''") + "'"


def _may_be_plain(text: str) -> bool:
    """Nothing in ``text`` is an indicator where it stands (no tab, no line break in it)."""
    first = text[:1]
    return not (
        first in _FIRST_INDICATORS
        or first == " "
        or (first in "?:-" and text[1:2] in ("", " "))
        or text.startswith(("---", "..."))
        or text.endswith((" ", ":"))
        or ": " in text
        or " #" in text
    )


# -- events for libyaml's emitter --------------------------------------------------------------


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
