"""Standard Webhooks verification of inbound deliveries: ``POST /webhooks/<source>``.

A sender signs ``"{webhook-id}.{webhook-timestamp}." + body`` with HMAC-SHA256 under its
``whsec_`` secret and sends ``v1,<base64>`` in ``webhook-signature`` (several,
space-separated, while it rotates). We check that over the raw request bytes, before
anything is parsed.

Why not ``standardwebhooks.Webhook.verify``: it checks the timestamp against the wall clock
with a fixed five-minute window (``webhooks.tolerance_seconds`` is configurable and tests
pin the clock), it decodes the body as text, and a malformed signature entry raises a bare
``ValueError`` (a 500 here). The HMAC is the same bytes for bytes (the tests check ours
against the library's signer); comparison is ``hmac.compare_digest``.

Every failure is the same 401 ``Unauthenticated``, an unknown source included, so a
caller learns neither which sources exist nor which check failed. The log says which check
failed (never a secret, a signature or the body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets as _secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from publisher.config import Settings
from publisher.errors import Unauthenticated
from publisher.models import Source

log = logging.getLogger("publisher.signatures")

MESSAGE = "Unauthenticated"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
DEFAULT_TOLERANCE = 300
DEFAULT_CACHE_SECONDS = 5.0
MAX_CACHED_SOURCES = 1000
MAX_SIGNATURES = 10  # entries in one webhook-signature header we look at
SIGNING_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII; fits inbox.webhook_id
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Refused(Exception):
    """Why a delivery was refused, for the log only: the client always gets one 401."""


@dataclass(frozen=True)
class Signed:
    """A verified delivery's identity."""

    webhook_id: str
    timestamp: int


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (as the standardwebhooks library reads it)."""
    text = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> bytes:
    """The raw HMAC-SHA256 a sender computes: over the exact bytes it sends."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    keys: Iterable[bytes],
    *,
    tolerance: float,
    now: float,
) -> Signed:
    """Check headers, timestamp and signature; raises :class:`Refused` with the reason."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "").strip()
    offered = _offered_signatures(lowered.get("webhook-signature", ""))
    if not _WEBHOOK_ID.fullmatch(webhook_id) or not _TIMESTAMP.fullmatch(stamp) or not offered:
        raise Refused("missing or malformed headers")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise Refused("timestamp outside the tolerance")
    matched = False
    for key in keys:
        expected = sign(key, webhook_id, timestamp, body)
        for candidate in offered:
            # no early exit: every secret and signature costs the same work
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise Refused("no signature matches")
    return Signed(webhook_id, timestamp)


def _offered_signatures(header: str) -> list[bytes]:
    """The ``v1`` signatures of a header, decoded; malformed entries are skipped."""
    offered = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return offered


class Verifier:
    """Verifies deliveries for the sources of one app (database and configuration).

    A source's keys are read once per ``webhooks.secrets_cache_seconds`` (5 by default, 0 =
    every request) and kept in the process: the database read cost more than the rest of
    the verification. So a secret added, rotated out or revoked in the ``sources`` table
    takes effect in every web process within that time. Unknown sources are remembered
    too (as having no key), or a flood of them would each cost a read.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self._cached: dict[str, tuple[float, list[bytes]]] = {}  # source -> (read at, keys)

    @property
    def tolerance(self) -> float:
        return self.settings["webhooks"]["tolerance_seconds"]

    @property
    def cache_seconds(self) -> float:
        return self.settings["webhooks"]["secrets_cache_seconds"]

    def secrets(self, source: str) -> list[str]:
        """Every current secret of ``source``: the ``sources`` table, then configuration."""
        stored: list[str] = []
        if len(source) <= 100:
            with self.sessions.kw["bind"].connect() as connection:
                query = select(Source.secrets).where(Source.name == source)
                stored = list(connection.scalar(query) or [])
        configured = ((self.settings.get("sources") or {}).get(source) or {}).get("secrets")
        return stored + _as_list(configured)

    def keys(self, source: str) -> list[bytes]:
        """The HMAC keys of ``source``, from the cache while it is fresh."""
        now = self.monotonic()
        cached = self._cached.get(source)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        keys = self._read_keys(source)
        if self.cache_seconds > 0:
            if len(self._cached) >= MAX_CACHED_SOURCES:
                self._cached.clear()  # bounded; a flood of names costs reads, not memory
            self._cached[source] = (now, keys)
        return keys

    def forget(self, source: str | None = None) -> None:
        """Drop the cached keys of ``source`` (or all): the next request reads them again."""
        if source is None:
            self._cached.clear()
        else:
            self._cached.pop(source, None)

    def _read_keys(self, source: str) -> list[bytes]:
        keys = []
        for secret in self.secrets(source):
            try:
                keys.append(secret_key(secret))
            except ValueError:
                log.warning("source %r has a secret that is not whsec_ base64; skipped", source)
        return keys

    def verify(self, source: str, body: bytes, headers: Mapping[str, str]) -> Signed:
        """Verify a delivery to ``source`` or raise the one uniform 401."""
        keys = self.keys(source)
        signing = _signing_headers(headers)
        try:
            # an unknown source does the same work with a throwaway key, then fails
            signed = verify_signature(
                body,
                signing,
                keys or [_secrets.token_bytes(32)],
                tolerance=self.tolerance,
                now=self.clock(),
            )
        except Refused as exc:
            reason = str(exc) if keys else "unknown source"
            log.warning("webhook to source %r refused: %s", source, reason)
            raise Unauthenticated(MESSAGE) from None
        if not keys:  # pragma: no cover - a random key cannot match
            raise Unauthenticated(MESSAGE)
        return signed


def _signing_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three Standard Webhooks headers, whatever the case of the names given.

    Looked up by name first: a request's headers are read from its WSGI environ, and
    walking all of them cost as much as the rest of the verification. A plain mapping with
    names in another case is walked once.
    """
    found = {name: headers.get(name) or "" for name in SIGNING_HEADERS}
    if all(found.values()):
        return found
    lowered = {key.lower(): value for key, value in headers.items()}
    return {name: lowered.get(name) or "" for name in SIGNING_HEADERS}


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or []]
