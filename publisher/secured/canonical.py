"""The canonical form of a record's other fields: the bytes a JWS ``secured`` value signs.

Why: a signature must cover bytes both sides can rebuild. The sender may send JSON, YAML or
Markdown, and YAML hands date-times over already parsed, so we cannot sign "what was sent".
We sign a normalised JSON text instead, written with RFC 8785 (JSON Canonicalization
Scheme, JCS), which has implementations in most languages. The steps:

1. Take the record mapping as received (before the service derives ``id`` or defaults)
   and drop the top-level ``secured`` member.
2. Normalise date-times: a parsed date-time, and any string in a member whose name ends in
   ``DateTime`` that is an RFC 3339 date-time with an offset, become UTC in the form
   ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (fraction only when non-zero, trailing zeros dropped).
   A parsed date becomes ``YYYY-MM-DD``.
3. ``body`` (the Markdown text) loses leading and trailing whitespace, because Markdown
   front matter parsers do not agree on the blank lines around it.
4. Serialise with JCS: members sorted by UTF-16 code units, no whitespace, numbers as
   ECMAScript writes them, strings escaped as ``JSON.stringify`` does; then UTF-8.

Example: ``{"title": "Hi", "heat": -1, "publishedDateTime": "2022-05-23T15:36:00+02:00",
"secured": "..."}`` becomes ``{"heat":-1,"publishedDateTime":"2022-05-23T13:36:00Z",
"title":"Hi"}``. Integers must lie within +-(2**53 - 1) (I-JSON, RFC 7493).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

_MAX_SAFE_INT = 2**53 - 1
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def canonical_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields as the signature covers them (steps 1-3 above)."""
    out = {}
    for key, value in fields.items():
        if key == "secured":
            continue
        if key == "body" and isinstance(value, str):
            value = value.strip()
        out[key] = _normalise(value, key)
    return out


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """UTF-8 JCS text of :func:`canonical_fields`: the JWS payload."""
    return canonical_json(canonical_fields(fields)).encode("utf-8")


def _normalise(value: Any, key: str | None) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and key and key.endswith("DateTime") and _RFC3339.fullmatch(value):
        return format_datetime(datetime.fromisoformat(value))
    if isinstance(value, Mapping):
        return {k: _normalise(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v, key) for v in value]
    return value


def format_datetime(value: datetime) -> str:
    """A date-time as UTC ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def canonical_json(value: Any) -> str:
    """RFC 8785 serialisation of JSON-ready data; raises TypeError/ValueError otherwise."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError("integer out of the I-JSON range")
        return str(value)
    if isinstance(value, float):
        return es_number(value)
    if isinstance(value, Mapping):
        return _object(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _object(value: Mapping[Any, Any]) -> str:
    if not all(isinstance(k, str) for k in value):
        raise TypeError("object member names must be strings")
    names = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
    return "{" + ",".join(f"{canonical_json(k)}:{canonical_json(value[k])}" for k in names) + "}"


def es_number(value: float) -> str:
    """A float as ECMAScript's Number.prototype.toString writes it (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digits_t, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_t))
    k, n = len(digits), len(digits) + int(exponent)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        exp = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
        body = (digits if k == 1 else f"{digits[0]}.{digits[1:]}") + exp
    return sign + body
