"""Record validation: marshmallow schemas, field-path errors, unknown-field warnings.

:func:`validate_record` is the one entry point. It returns JSON-ready data: every value a
plain JSON type, date-times as ISO 8601 strings.

Decisions (the contract senders rely on):

- Date-times keep the sender's offset and are written ``YYYY-MM-DDTHH:MM:SS[.ffffff]``
  followed by ``Z`` for UTC or ``+HH:MM`` otherwise. A date-time without a zone (or a bare
  date) is refused: its instant would depend on our clock's zone.
- Types are strict: ``quality: "17"``, ``quality: true`` and ``published: "yes"`` are
  errors, not coerced. Senders learn about a bug instead of publishing a guess.
- Unknown fields (at any level: record, provider, related item, image) are kept in the
  data and reported as warnings ``unknown field: related.0.foo``; in strict mode they are
  errors ``Unknown field.`` at their path. Their values must still be JSON values.
- Strings and lists are bounded, so one record cannot hold the store hostage; every string
  at every depth (unknown fields and field names included) is at most ``limits.max_string``
  characters.
- Text the stores cannot hold is refused here, at its path, on every backend alike: a NUL
  character (PostgreSQL refuses it; SQLite would keep it, so both refuse it for one
  behaviour) and a lone surrogate (not Unicode: it cannot be encoded as UTF-8). Date-times
  must be representable in UTC (``9999-12-31T23:59:59-23:59`` is not): each is stored and
  compared as a UTC instant.

Schema instances are built once at import: they are stateless, and building one costs
more than validating a record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache, cached_property
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validates_schema
from marshmallow import validate as check

from publisher.errors import InvalidRecord
from publisher.records import record_id

MAX_TITLE = 1_000
MAX_EXCERPT = 10_000
MAX_BODY = 1_000_000
MAX_SECURED = 1_000_000
MAX_URL = 2_048
MAX_SHORT = 200  # category, type, topic, provider name
MAX_DOMAIN = 253
MAX_ID = 512
MAX_TOPICS = 100
MAX_RELATED = 100
MAX_IMAGES = 50
_INT64 = check.Range(min=-(2**63), max=2**63 - 1)
_NON_NEGATIVE = check.Range(min=0, max=2**63 - 1)
_MAX_UNKNOWN_DEPTH = 64
_MAX_UNKNOWN_VALUES = 100_000  # values, all unknown fields of a record together

# RFC 3339 (seconds optional, as ISO 8601 allows); checked before fromisoformat, which
# alone would also accept week dates, basic formats and bare dates.
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
#: what no store can hold: NUL (PostgreSQL) and lone surrogates (not encodable as UTF-8)
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
DEFAULT_MAX_STRING = 1_000_000  # limits.max_string


class _Lean(fields.Field):
    """Checks a value's validators as marshmallow does, without rebuilding them per value.

    marshmallow's ``Field._validate`` builds a ``check.And`` of the field's validators
    for every value it checks; a record has ~90 values. Same validators, same order, same
    errors; a field without validators skips the step.
    """

    def _validate(self, value: Any) -> None:
        if self.validators:
            self._validators_and(value)

    @cached_property
    def _validators_and(self) -> Callable[[Any], Any]:
        # one validator raises what ``And`` of it would raise: its message, as a list
        if len(self.validators) == 1:
            return self.validators[0]
        return check.And(*self.validators)


class Str(_Lean, fields.String):
    """A text string; unlike marshmallow's, bytes (YAML ``!!binary``) are refused.

    ``max_length`` is checked here, with the message of marshmallow's ``Length(max=...)``:
    most of a record's ~90 values are bounded strings, and a validator object per value is
    most of what checking one costs.
    """

    def __init__(self, *, max_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(f"Longer than maximum length {self.max_length}.")
        return value


class HttpUrl(Str):
    """An absolute http(s) URL with a host; cheaper than marshmallow's ``URL`` regex."""

    default_error_messages = {"invalid_url": "Not a valid http(s) URL."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > MAX_URL:
            raise ValidationError(f"Longer than maximum length {MAX_URL}.")
        if _URL_FORBIDDEN.search(text):
            raise self.make_error("invalid_url")
        try:
            parts = urlsplit(text)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise self.make_error("invalid_url") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise self.make_error("invalid_url")
        return text


class AwareDateTime(_Lean):
    """An ISO 8601 date-time with a zone, given as text or as a parsed ``datetime``."""

    default_error_messages = {
        "invalid": "Not a valid ISO 8601 date-time.",
        "naive": "A date-time needs a zone (Z or an offset such as +02:00).",
        "range": "Outside what UTC can represent (year 1 to 9999 once converted to UTC).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            value = self._parse(value)
        if not isinstance(value, datetime):  # a bare date (YAML 2022-05-23) included
            raise self.make_error("invalid")
        if value.utcoffset() is None:
            raise self.make_error("naive")
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise self.make_error("range") from None
        return format_datetime(value)

    def _parse(self, text: str) -> datetime:
        if len(text) > 64 or not _DATETIME.fullmatch(text):
            raise self.make_error("invalid")
        try:
            return datetime.fromisoformat(text.upper())
        except ValueError:  # e.g. February 30th
            raise self.make_error("invalid") from None


class StrictBoolean(_Lean, fields.Boolean):
    """``true`` or ``false`` only: ``1``, ``"yes"`` and ``"false"`` are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid")


class Int(_Lean, fields.Integer):
    """marshmallow's strict integer, checked as :class:`_Lean` fields are."""


class Nested(_Lean, fields.Nested):
    """marshmallow's nested schema, checked as :class:`_Lean` fields are."""


class List(_Lean, fields.List):
    """marshmallow's list, checked as :class:`_Lean` fields are."""


def _int(**kwargs: Any) -> Int:
    return Int(strict=True, validate=kwargs.pop("validate", _INT64), **kwargs)


def _str(max_length: int, **kwargs: Any) -> Str:
    return Str(max_length=max_length, **kwargs)


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class _Schema(Schema):
    class Meta:
        # unknown fields are found and reported by ``_find_unknown`` (with their path)
        unknown = EXCLUDE


class ImageSchema(_Schema):
    url = HttpUrl(required=True)
    width = _int(validate=_NON_NEGATIVE)
    height = _int(validate=_NON_NEGATIVE)
    isCached = StrictBoolean()  # noqa: N815 - the record's field name


class ProviderSchema(_Schema):
    name = _str(MAX_SHORT)
    domain = _str(MAX_DOMAIN)


class RelatedSchema(_Schema):
    title = _str(MAX_TITLE)
    excerpt = _str(MAX_EXCERPT)
    publishedDateTime = AwareDateTime()  # noqa: N815
    webUrl = HttpUrl(required=True)  # noqa: N815
    ampWebUrl = HttpUrl()  # noqa: N815
    cdnAmpWebUrl = HttpUrl()  # noqa: N815
    type = _str(MAX_SHORT)
    provider = Nested(ProviderSchema)
    quality = _int()
    images = List(Nested(ImageSchema), validate=check.Length(max=MAX_IMAGES))


class RecordSchema(_Schema):
    id = Str(validate=check.Length(min=1, max=MAX_ID))
    category = _str(MAX_SHORT)
    title = Str(required=True, validate=[check.Length(min=1, max=MAX_TITLE), _not_blank])
    excerpt = _str(MAX_EXCERPT)
    publishedDateTime = AwareDateTime()  # noqa: N815
    expiresAt = AwareDateTime()  # noqa: N815
    originalUrl = HttpUrl()  # noqa: N815
    webUrl = HttpUrl()  # noqa: N815
    type = _str(MAX_SHORT)
    quality = _int()
    heat = _int()
    published = StrictBoolean()
    provider = Nested(ProviderSchema)
    topics = List(_str(MAX_SHORT), validate=check.Length(max=MAX_TOPICS))
    related = List(Nested(RelatedSchema), validate=check.Length(max=MAX_RELATED))
    secured = _str(MAX_SECURED)
    body = _str(MAX_BODY)

    @validates_schema(skip_on_field_errors=True)
    def _expiry_after_publication(self, data: dict[str, Any], **kwargs: Any) -> None:
        """An expiry at or before publication would retract the record as it appears."""
        if "expiresAt" in data and "publishedDateTime" in data:
            expires = datetime.fromisoformat(data["expiresAt"])
            if expires <= datetime.fromisoformat(data["publishedDateTime"]):
                raise ValidationError("Must be after publishedDateTime.", "expiresAt")


RECORD_SCHEMA = RecordSchema()


@dataclass(slots=True)
class Validated:
    """A valid record as JSON-ready data, with warnings about what was not understood."""

    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def validate(raw: Any, settings: Mapping[str, Any], *, text_bound: int | None = None) -> Validated:
    """Check one raw item as every door does: the schema, strict mode, a derivable id.

    ``text_bound`` is the parser's :attr:`~publisher.parsing.Parsed.text_bound`.
    """
    validated = validate_record(
        raw,
        strict=settings["strict"],
        max_string=settings["limits"]["max_string"],
        text_bound=text_bound,
    )
    validated.data["id"] = record_id(validated.data)
    return validated


def validate_record(
    raw: Any,
    *,
    strict: bool = False,
    max_string: int = DEFAULT_MAX_STRING,
    text_bound: int | None = None,
) -> Validated:
    """Validate one raw item; raise ``InvalidRecord`` with errors by dotted field path.

    A ``text_bound`` within ``max_string`` (the parser vouches for every string) skips the
    walk of :func:`check_text`: on JSON, the common case, the parser knew it from the text.
    """
    if not isinstance(raw, Mapping):
        message = "A record must be a mapping of fields."
        raise InvalidRecord("the record is invalid", errors={"_schema": [message]})
    errors: dict[str, list[str]] = {}
    if text_bound is None or text_bound > max_string:
        check_text(raw, max_string, errors)
    unknown = _find_unknown(raw, RECORD_SCHEMA, (), errors)
    if strict:
        for path, _ in unknown:
            errors.setdefault(_dotted(path), []).append("Unknown field.")
    try:
        data = RECORD_SCHEMA.load(raw)
    except ValidationError as exc:
        _flatten(exc.messages, "", errors)
    if errors:
        raise InvalidRecord(_summary(errors), errors=errors)
    return Validated(data=data, warnings=_keep_unknown(data, unknown))


def format_datetime(value: datetime) -> str:
    """The one way publisher writes a date-time: ISO 8601, sender's offset, UTC as ``Z``."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- text at every depth -----------------------------------------------------------------


def check_text(raw: Any, max_string: int, errors: dict[str, list[str]]) -> None:
    """Every string and field name in ``raw``, declared or not, against what can be stored.

    One walk over the raw item (marshmallow sees only declared fields). A container met
    again (a YAML alias) was checked already: skipping it keeps the walk as long as the
    parsed input, whatever the aliases would expand to.
    """
    if _all_storable(raw, max_string):
        return
    seen: set[int] = set()
    stack: list[tuple[Path, Any]] = [((), raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            _check_string(value, path, max_string, errors, "")
        elif isinstance(value, (Mapping, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_string(key, path + (key,), max_string, errors, "The field name ")
                    stack.append((path + (key,), item))
            else:
                stack.extend((path + (index,), item) for index, item in enumerate(value))


def _all_storable(raw: Any, max_string: int) -> bool:
    """The common case first: one walk, no paths, one search over all the text at once.

    Joining cannot make a false finding: a Python string holds a surrogate only as a lone
    one (a pair is one astral character), and NUL is one character. When this says no,
    the full walk finds where, for the field paths of the answer.
    """
    seen: set[int] = set()
    strings: list[str] = []
    stack: list[Any] = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, (Mapping, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, Mapping):
                strings.extend(key for key in value if isinstance(key, str))
                stack.extend(value.values())
            else:
                stack.extend(value)
    if not strings:
        return True
    return max(map(len, strings)) <= max_string and UNSTORABLE.search("".join(strings)) is None


def _check_string(
    text: str, path: Path, max_string: int, errors: dict[str, list[str]], what: str
) -> None:
    if len(text) > max_string:
        message = f"{what or 'The text '}is longer than limits.max_string ({max_string})."
        errors.setdefault(_dotted(path), []).append(message)
    found = UNSTORABLE.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        message = f"{what or 'The text '}holds a NUL character (\\u0000), which cannot be stored."
    else:
        message = (
            f"{what or 'The text '}holds a lone surrogate ({_escaped(found.group())}): not Unicode."
        )
    errors.setdefault(_dotted(path), []).append(message)


def _escaped(text: str) -> str:
    """``text`` with what cannot be stored written as ``\\uXXXX`` (for paths and messages)."""
    return UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- unknown fields ----------------------------------------------------------------------

Path = tuple[str | int, ...]


def _find_unknown(
    raw: Mapping[Any, Any], schema: Schema, path: Path, errors: dict[str, list[str]]
) -> list[tuple[Path, Any]]:
    """Fields the schemas do not declare, at any depth, as (path, raw value)."""
    found: list[tuple[Path, Any]] = []
    children = _children(schema)
    for key, value in raw.items():
        if not isinstance(key, str):
            errors.setdefault(_dotted(path + (str(key),)), []).append("Field names must be text.")
            continue
        if key not in children:
            found.append((path + (key,), value))
            continue
        child = children[key]
        if child is None:
            continue
        inner, many = child
        if not many and isinstance(value, Mapping):
            found += _find_unknown(value, inner, path + (key,), errors)
        elif many:
            for index, item in enumerate(value if isinstance(value, list) else ()):
                if isinstance(item, Mapping):
                    found += _find_unknown(item, inner, path + (key, index), errors)
    return found


@cache
def _children(schema: Schema) -> dict[str, tuple[Schema, bool] | None]:
    """A schema's declared fields: (nested schema, is a list of them) or None for a value.

    Worked out once per schema: :func:`_find_unknown` asks for every key of every record.
    """
    children: dict[str, tuple[Schema, bool] | None] = {}
    for name, declared in schema.fields.items():
        if isinstance(declared, fields.Nested):
            children[name] = (declared.schema, False)
        elif isinstance(declared, fields.List) and isinstance(declared.inner, fields.Nested):
            children[name] = (declared.inner.schema, True)
        else:
            children[name] = None
    return children


def _keep_unknown(data: dict[str, Any], unknown: list[tuple[Path, Any]]) -> list[str]:
    """Put unknown fields back into the loaded data, as JSON values; one warning each."""
    errors: dict[str, list[str]] = {}
    warnings = []
    budget = [_MAX_UNKNOWN_VALUES]
    for path, value in unknown:
        target: Any = data
        for step in path[:-1]:
            target = target[step]
        try:
            target[path[-1]] = _jsonable(value, budget)
        except ValueError as exc:
            errors[_dotted(path)] = [str(exc)]
        warnings.append(f"unknown field: {_dotted(path)}")
    if errors:
        raise InvalidRecord(_summary(errors), errors=errors)
    return warnings


def _jsonable(value: Any, budget: list[int], depth: int = 0) -> Any:
    """A plain JSON value for an unknown field's value (YAML may hand over dates, bytes).

    ``budget`` counts the values still allowed: a shared (aliased) object is copied here,
    so without it a raw item built by an alias bomb would expand without end.
    """
    budget[0] -= 1
    if depth > _MAX_UNKNOWN_DEPTH or budget[0] < 0:
        raise ValueError("Nested too deeply or too large.")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("Not a finite number.")
        return value
    if isinstance(value, datetime):
        return format_datetime(value) if value.utcoffset() is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, budget, depth + 1) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("Field names must be text.")
        return {key: _jsonable(item, budget, depth + 1) for key, item in value.items()}
    raise ValueError("Not a JSON value.")


# -- errors ------------------------------------------------------------------------------


def _dotted(path: Path) -> str:
    """A field path as the errors name it; a field name that cannot be stored is escaped."""
    return _escaped(".".join(str(step) for step in path))


def _flatten(messages: Any, prefix: str, out: dict[str, list[str]]) -> None:
    """marshmallow's nested messages to ``{"related.0.webUrl": [...]}``.

    A nested ``_schema`` error (a related item that is not a mapping) belongs to the
    item's own path, ``related.0``; only the record's own stays ``_schema``.
    """
    if isinstance(messages, Mapping):
        for key, sub in messages.items():
            if key == "_schema":
                path = prefix or "_schema"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            _flatten(sub, path, out)
        return
    items = messages if isinstance(messages, list) else [messages]
    for item in items:
        if isinstance(item, Mapping):
            _flatten(item, prefix, out)
        else:
            out.setdefault(prefix or "_schema", []).append(str(item))


def _summary(errors: Mapping[str, list[str]]) -> str:
    paths = sorted(errors)
    shown = ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
    return f"the record is invalid: {shown}"
