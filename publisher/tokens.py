"""API tokens: random, shown once, stored as a SHA-256 hash, carrying scopes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from publisher.errors import Forbidden, NotFound, Unauthenticated
from publisher.models import Token, utcnow

SCOPES = ("submit", "read", "read-protected", "admin")
PREFIX = "pub_"
#: built once: this runs on every API request (see store.py on prebuilt statements)
_BY_HASH = select(Token.id, Token.token_hash, Token.scopes, Token.revoked_at).where(
    Token.token_hash == bindparam("digest")
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, scopes: Iterable[str], name: str = "") -> tuple[int, str]:
    """Make a token; the clear text is returned once and never stored."""
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {wanted or 'none'}")
    token = PREFIX + secrets.token_urlsafe(32)
    row = Token(name=name, token_hash=hash_token(token), scopes=wanted, created_at=utcnow())
    session.add(row)
    session.flush()
    return row.id, token


@dataclass(frozen=True)
class Principal:
    """Who a request is: the token's id and scopes (never its value or hash)."""

    id: int
    scopes: tuple[str, ...]


def authenticate(connection: Connection | Session, token: str | None) -> Principal:
    """The live token behind a bearer value; revoked or unknown tokens fail alike."""
    if not token:
        raise Unauthenticated("a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    digest = hash_token(token)
    row = connection.execute(_BY_HASH, {"digest": digest}).first()
    # the lookup is by hash, so timing reveals nothing about the token; compare anyway
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthenticated(
            "invalid or revoked token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return Principal(row.id, tuple(row.scopes))


class TokenCache:
    """Tokens this process found live, remembered for ``ttl`` seconds.

    Why: the lookup is a database read on every API request, for an answer that changes
    only when a token is revoked. The price is that a revocation made by another process
    (``publisher tokens revoke``, another gunicorn worker) takes effect here within ``ttl``
    (setting ``token_cache_seconds``, 1 s by default; 0 turns the cache off). Only live
    tokens are kept: an unknown or revoked token is looked up every time, so a new token
    works at once and a flood of wrong ones cannot fill the cache.
    """

    def __init__(
        self, ttl: float, clock: Callable[[], float] = time.monotonic, size: int = 1024
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.size:
            self._entries.clear()  # tokens are few; a full cache means churn, start over
        self._entries[digest] = (principal, self.clock() + self.ttl)

    def clear(self) -> None:
        """Forget every token (a revocation in this process takes effect at once)."""
        self._entries.clear()


def authenticate_cached(
    cache: TokenCache,
    token: str | None,
    connect: Callable[[], AbstractContextManager[Connection]],
) -> Principal:
    """:func:`authenticate`, answered from ``cache`` while the token's entry is fresh."""
    digest = hash_token(token) if token else ""
    cached = cache.get(digest) if digest else None
    if cached is not None:
        return cached
    with connect() as connection:
        principal = authenticate(connection, token)  # raises without a live token
    cache.put(digest, principal)
    return principal


def require_scope(token: Principal, scope: str) -> None:
    """``admin`` implies every scope; ``read-protected`` implies ``read``."""
    granted = set(token.scopes)
    if "admin" in granted or scope in granted:
        return
    if scope == "read" and "read-protected" in granted:
        return
    raise Forbidden(f"this token lacks the {scope!r} scope")


def revoke_token(session: Session, token_id: int) -> None:
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    row.revoked_at = row.revoked_at or utcnow()


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))
