"""Request bodies to raw items: JSON, NDJSON, YAML, or Markdown with YAML front matter.

Everything here is hostile-input code: it decides *what* was sent, never whether it is a
valid record (that is :mod:`publisher.schemas`). Every failure is a ``MalformedInput``
(400) or an ``UnsupportedType`` (415); no input may raise anything else, recurse without
bound, or take long.

Decisions (the contract senders rely on):

- Duplicate keys in a mapping are rejected (JSON and YAML): parsers disagree on which
  copy wins, and a signature checked over the raw bytes must mean one record only.
- JSON is checked for nesting depth *before* ``json.loads`` by a linear scan of the
  brackets outside strings, so a 100,000-deep array is refused in microseconds instead of
  reaching Python's recursion limit. The scan is skipped when the body holds fewer
  opening brackets than the limit (the common case: a single record).
- ``NaN``/``Infinity`` are refused: they are not JSON and cannot be stored or re-sent.
- Only UTF-8 is accepted (a ``charset`` parameter other than utf-8 is a 415); a leading
  byte-order mark is dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter
import yaml

from publisher.errors import MalformedInput, TooLarge, UnsupportedType
from publisher.safeyaml import MAX_ALIASES, MAX_DEPTH, BoundedSafeLoader

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MARKDOWN_TYPES = ("text/markdown",)
#: Every media type ``parse_body`` accepts, in the order the 415 answer lists them.
ACCEPTED_TYPES = JSON_TYPES + NDJSON_TYPES + YAML_TYPES + MARKDOWN_TYPES

#: File extensions ``parse_file`` understands, and the media type each stands for.
EXTENSIONS = {
    ".json": "application/json",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
}

# A JSON string, or an unterminated one running to the end: the optional closing quote
# keeps the scan linear even on input made of quotes and backslashes.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_FRONT_MATTER = frontmatter.YAMLHandler()
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\r?\n)+")
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: An aliased YAML document may expand to twice its size, or to this many nodes.
MAX_EXPANDED_NODES = 100_000


# A JSON escape that decodes to NUL or to a surrogate: the only ways JSON text read as
# strict UTF-8 can put either into a string (a raw control character is a syntax error).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a body held: its items (raw, unvalidated) and whether it was sent as a batch.

    ``text_bound``, when not None, is the parser's word that no string in the items (field
    names included) holds NUL or a lone surrogate, and none is longer than that: validation
    then need not walk every string (:func:`publisher.schemas.validate`).
    """

    items: list[Any]
    batch: bool
    text_bound: int | None = field(default=None, compare=False)


def parse_body(
    body: bytes,
    content_type: str | None,
    *,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_items: int | None = None,
) -> Parsed:
    """Parse a request body by its Content-Type into raw items (mappings, usually)."""
    media_type = _media_type(content_type)
    text = _decode(body)
    if not text.strip():
        raise _malformed("the body is empty")
    if media_type in JSON_TYPES:
        parsed = _parse_json(text, max_depth)
    elif media_type in NDJSON_TYPES:
        parsed = _parse_ndjson(text, max_depth)
    elif media_type in YAML_TYPES:
        parsed = _parse_yaml(text, max_depth, max_aliases)
    else:
        parsed = _parse_markdown(text, max_depth, max_aliases)
    return _checked_count(parsed, max_items)


def parse_file(
    path: str | Path,
    *,
    max_depth: int = MAX_DEPTH,
    max_aliases: int = MAX_ALIASES,
    max_items: int | None = None,
) -> Parsed:
    """Parse a file, choosing the form by its extension (for the CLI)."""
    path = Path(path)
    media_type = EXTENSIONS.get(path.suffix.lower())
    if media_type is None:
        accepted = ", ".join(EXTENSIONS)
        raise UnsupportedType(
            f"cannot tell the format of {path.name}; use one of: {accepted}",
            errors={"_body": [f"unsupported file extension; accepted: {accepted}"]},
        )
    return parse_body(
        path.read_bytes(),
        media_type,
        max_depth=max_depth,
        max_aliases=max_aliases,
        max_items=max_items,
    )


# -- content type and encoding ---------------------------------------------------------


def _media_type(content_type: str | None) -> str:
    """The media type, lower-cased; 415 unless it is accepted and its charset is UTF-8."""
    media_type, _, params = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type not in ACCEPTED_TYPES:
        shown = media_type or "none"
        raise _unsupported(f"unsupported Content-Type {shown!r}")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise _unsupported(f"unsupported charset {charset!r}; only utf-8 is accepted")
    return media_type


def _unsupported(message: str) -> UnsupportedType:
    accepted = ", ".join(ACCEPTED_TYPES)
    return UnsupportedType(
        f"{message}; accepted types: {accepted}",
        errors={"_body": [f"{message}; accepted types: {accepted}"]},
    )


def _decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the body is not valid UTF-8 (byte {exc.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _malformed(message: str) -> MalformedInput:
    return MalformedInput(message, errors={"_body": [message]})


def _checked_count(parsed: Parsed, max_items: int | None) -> Parsed:
    if parsed.batch and not parsed.items:
        raise _malformed("the batch is empty")
    if max_items is not None and len(parsed.items) > max_items:
        raise TooLarge(
            f"the batch holds {len(parsed.items)} items; at most {max_items} are accepted",
            errors={"_body": [f"too many items (at most {max_items})"]},
        )
    return parsed


# -- JSON --------------------------------------------------------------------------------


def _parse_json(text: str, max_depth: int) -> Parsed:
    value = _load_json(text, max_depth)
    bound = _text_bound(text, len(text))
    if isinstance(value, list):
        return Parsed(items=value, batch=True, text_bound=bound)
    return Parsed(items=[value], batch=False, text_bound=bound)


def _parse_ndjson(text: str, max_depth: int) -> Parsed:
    items = []
    longest = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            items.append(_load_json(line, max_depth, first_line=number))
            longest = max(longest, len(line))
    return Parsed(items=items, batch=True, text_bound=_text_bound(text, longest))


def _text_bound(text: str, longest: int) -> int | None:
    """``Parsed.text_bound`` of JSON text whose strings are at most ``longest`` long: a
    string is never longer than its escaped form. An escape that only looks like one
    (``\\\\u0000``) costs the walk that would have been made anyway, never a wrong answer."""
    return None if _UNSTORABLE_ESCAPE.search(text) else longest


def _load_json(text: str, max_depth: int, *, first_line: int = 1) -> Any:
    """``json.loads`` made safe: bounded depth, unique keys, no NaN, errors with a place."""
    _check_json_depth(text, max_depth, first_line)
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        line = exc.lineno + first_line - 1
        raise _malformed(f"invalid JSON at line {line}, column {exc.colno}: {exc.msg}") from None
    except _JSONRefused as exc:
        raise _malformed(f"invalid JSON (line {first_line}): {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise _malformed(f"invalid JSON (line {first_line}): {exc}") from None


def _check_json_depth(text: str, max_depth: int, first_line: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` without parsing it."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper than the number of brackets it holds
    depth = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > max_depth:
            raise _malformed(
                f"JSON is nested too deeply (line {first_line}; at most {max_depth} levels)"
            )


class _JSONRefused(ValueError):
    """Well-formed to ``json`` but refused here (duplicate keys, NaN)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _JSONRefused(f"duplicate key {duplicate!r}")
    return result


def _no_constant(name: str) -> Any:
    raise _JSONRefused(f"{name} is not a JSON number")


# -- YAML --------------------------------------------------------------------------------


class _CheckedLoader(BoundedSafeLoader):
    """The bounded safe loader of :mod:`publisher.safeyaml`, plus two checks of our own."""

    def construct_document(self, node: Any) -> Any:
        _check_nodes(node)
        return super().construct_document(node)


def _check_nodes(root: Any) -> None:
    """Refuse duplicate keys, and aliases whose expansion would dwarf the document.

    PyYAML shares an aliased object instead of copying it, so an alias bomb is small in
    memory; it explodes later, in whatever walks or serialises the record. Counting
    aliases alone misses ten levels of ten aliases each (90 aliases, 10^10 nodes), so
    when nodes are shared the expanded size is computed too.
    """
    stack, seen, shared = [root], set(), False
    while stack:
        node = stack.pop()
        if id(node) in seen:
            shared = True
            continue
        seen.add(id(node))
        stack.extend(_children(node))
    if shared and _expanded_size(root) > max(2 * len(seen), MAX_EXPANDED_NODES):
        raise MalformedInput(
            "YAML aliases expand too much", errors={"_body": ["YAML aliases expand too much"]}
        )


def _expanded_size(root: Any) -> int:
    """How many nodes the document would have with every alias copied (memoised post-order)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, list[Any] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        if id(node) in sizes:
            continue
        if children is not None:  # second visit: every child is sized
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            continue
        children = _flat_children(node)
        stack.append((node, children))
        stack.extend((child, None) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: Any) -> list[Any]:
    """A node's children (keys and values), refusing a mapping with a repeated key."""
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if not isinstance(node, yaml.MappingNode):
        return []
    keys: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
            if (key.tag, key.value) in keys:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key.value!r}", problem_mark=key.start_mark
                )
            keys.add((key.tag, key.value))
    return [child for pair in node.value for child in pair]


def _flat_children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


_LOADERS: dict[tuple[int, int], type] = {}


def _loader(max_depth: int, max_aliases: int) -> type:
    """One loader class per pair of limits, made once (limits are class attributes)."""
    limits = (max_depth, max_aliases)
    if limits not in _LOADERS:
        attrs = {"max_depth": max_depth, "max_aliases": max_aliases}
        _LOADERS[limits] = type("PublisherYAMLLoader", (_CheckedLoader,), attrs)
    return _LOADERS[limits]


def _load_yaml_documents(
    text: str, max_depth: int, max_aliases: int, *, line_offset: int = 0
) -> list[Any]:
    """Every document of a YAML stream, with errors that say where."""
    try:
        return list(yaml.load_all(text, Loader=_loader(max_depth, max_aliases)))  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        raise _malformed(_yaml_message(exc, line_offset)) from None
    except yaml.YAMLError as exc:
        raise _malformed(f"invalid YAML: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # the constructors of timestamps or numbers on values that only look right
        raise _malformed(f"invalid YAML value: {exc}") from None


def _yaml_message(exc: yaml.MarkedYAMLError, line_offset: int) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(str(part) for part in (exc.context, exc.problem) if part) or "error"
    if mark is None:
        return f"invalid YAML: {problem}"
    line, column = mark.line + 1 + line_offset, mark.column + 1
    return f"invalid YAML at line {line}, column {column}: {problem}"


def _parse_yaml(text: str, max_depth: int, max_aliases: int) -> Parsed:
    documents = [
        doc for doc in _load_yaml_documents(text, max_depth, max_aliases) if doc is not None
    ]
    if not documents:
        raise _malformed("the YAML stream holds no document")
    if len(documents) > 1:
        return Parsed(items=documents, batch=True)
    if isinstance(documents[0], list):
        return Parsed(items=documents[0], batch=True)
    return Parsed(items=documents, batch=False)


# -- Markdown with front matter ----------------------------------------------------------


def _parse_markdown(text: str, max_depth: int, max_aliases: int) -> Parsed:
    """One record: the YAML front matter's fields, plus the text after it as ``body``."""
    front, body, line_offset = _split_front_matter(text)
    documents = _load_yaml_documents(front, max_depth, max_aliases, line_offset=line_offset)
    meta = documents[0] if documents else None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or len(documents) > 1:
        raise _malformed("the front matter must be one YAML mapping")
    body = _LEADING_BLANK_LINES.sub("", body).rstrip()
    if body and meta.get("body") not in (None, ""):
        raise _malformed("the body is given twice: in the front matter and after it")
    if body or "body" not in meta:
        meta["body"] = body
    return Parsed(items=[meta], batch=False)


def _split_front_matter(text: str) -> tuple[str, str, int]:
    """(front matter, text after it, lines before the front matter) using frontmatter's rule."""
    start = len(text) - len(text.lstrip())
    boundary = _FRONT_MATTER.FM_BOUNDARY
    opening = boundary.match(text, start)
    closing = boundary.search(text, opening.end()) if opening else None
    if opening is None:
        raise _malformed("Markdown must start with YAML front matter (a line of ---)")
    if closing is None:
        raise _malformed("the front matter is not closed (a line of --- after it)")
    front = text[opening.end() : closing.start()]
    return front, text[closing.end() :], text.count("\n", 0, opening.end())
