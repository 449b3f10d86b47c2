"""What makes a record itself: its identity, its content hashes, its public view."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from publisher.errors import InvalidRecord

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~-]{0,199}$")
#: Query parameters that identify a campaign, not a document: dropped from derived ids.
TRACKING_PARAMS = re.compile(r"^(utm_.*|fbclid|gclid|mc_cid|mc_eid)$")
#: Fields an output never sees: the raw envelope stays inside the service.
PRIVATE_FIELDS = frozenset({"secured"})


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, drop default ports, fragments and tracking parameters."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = sorted((k, v) for k, v in query if not TRACKING_PARAMS.match(k))
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((scheme, host, path, urlencode(query), ""))


def record_id(fields: Mapping[str, Any]) -> str:
    """The sender's ``id`` if given, else a stable id derived from its canonical URL."""
    given = fields.get("id")
    if given is not None:
        if not isinstance(given, str) or not ID_PATTERN.match(given):
            raise InvalidRecord(
                "invalid record id",
                errors={"id": ["1-200 characters: letters, digits and . _ : ~ - only"]},
            )
        return given
    url = fields.get("originalUrl") or fields.get("webUrl")
    if not url:
        raise InvalidRecord(
            "a record needs an id, an originalUrl or a webUrl",
            errors={"id": ["missing: give id, originalUrl or webUrl"]},
        )
    return hashlib.sha256(normalise_url(url).encode()).hexdigest()[:32]


#: sorted keys, compact, UTF-8 as is: the form both content hashes are taken over
_HASHABLE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hashable_json(value: Any) -> bytes:
    """Sorted-key compact JSON bytes, for content hashes (not RFC 8785: see secured.canonical)."""
    return _HASHABLE.encode(value).encode()


def content_hashes(
    fields: Mapping[str, Any], body: str, ignore: Iterable[str] = ()
) -> tuple[str, str]:
    """The content hash and the meaning hash (leaving out ``ignore``, the volatile fields).

    Each is a SHA-256 of :func:`hashable_json` of the fields it covers, a NUL, and the body.
    Why one function: the two serialisations differ only by the ignored members, so the
    fields are serialised once, as runs of consecutive kept or ignored keys (in sorted
    order) whose texts are joined into both documents. With no ignored field present the
    two hashes are one.
    """
    skip = set(ignore).intersection(fields)
    tail = b"\x00" + body.encode()
    if not skip:
        digest = hashlib.sha256(hashable_json(fields) + tail).hexdigest()
        return digest, digest
    if not all(isinstance(key, str) for key in fields):  # the encoder's own key order then
        kept = {k: v for k, v in fields.items() if k not in skip}
        return _digest(hashable_json(fields), tail), _digest(hashable_json(kept), tail)
    every: list[str] = []
    meaning: list[str] = []
    for ignored, keys in _runs(sorted(fields), skip):
        text = _HASHABLE.encode({key: fields[key] for key in keys})[1:-1]
        every.append(text)
        if not ignored:
            meaning.append(text)
    whole = ("{" + ",".join(every) + "}").encode()
    return _digest(whole, tail), _digest(("{" + ",".join(meaning) + "}").encode(), tail)


def _runs(keys: list[str], skip: set[str]) -> Iterable[tuple[bool, list[str]]]:
    """``keys`` as runs of consecutive keys all in ``skip`` or all not (never empty)."""
    run: list[str] = []
    for key in keys:
        if run and ((key in skip) != (run[0] in skip)):
            yield run[0] in skip, run
            run = []
        run.append(key)
    if run:
        yield run[0] in skip, run


def _digest(document: bytes, tail: bytes) -> str:
    return hashlib.sha256(document + tail).hexdigest()


def public_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields any output may see: everything but the envelope."""
    return {k: v for k, v in fields.items() if k not in PRIVATE_FIELDS}


def instant_text(value: datetime | None) -> str | None:
    """An instant as the API writes it: ISO 8601 in UTC, with ``Z`` (the inverse of the below)."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def parse_instant(value: Any) -> datetime | None:
    """An ISO 8601 string (as validation leaves it) as an aware datetime.

    ``ValueError`` also for an instant UTC cannot represent (``9999-12-31T23:59:59-23:59``):
    the stores keep UTC, so such a value would fail later, on the database.
    """
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        text = str(value)
        if not (text.isascii() and text.isprintable()):  # fromisoformat lets a NUL through
            raise ValueError("not an ISO 8601 date-time")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("outside what UTC can represent (year 1 to 9999)") from None
    return parsed
