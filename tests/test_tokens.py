"""API tokens: the per-process cache of live tokens and how long a revocation takes."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from publisher.db import transaction
from publisher.tokens import Principal, TokenCache, create_token, revoke_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _revoke_elsewhere(app: Flask, token_id: int) -> None:
    """Revoke as another process would: in the database, not through this app's cache."""
    with transaction(app.extensions["publisher"].sessions) as session:
        revoke_token(session, token_id)


def test_cache_keeps_an_entry_for_its_ttl_only() -> None:
    clock = Clock()
    cache = TokenCache(1.0, clock=clock)
    principal = Principal(7, ("read",))
    cache.put("digest", principal)
    clock.now += 0.9
    assert cache.get("digest") == principal
    clock.now += 0.1
    assert cache.get("digest") is None
    assert cache.get("digest") is None  # the stale entry is gone, not revived


def test_cache_off_keeps_nothing_and_a_full_cache_starts_over() -> None:
    off = TokenCache(0)
    off.put("digest", Principal(1, ("read",)))
    assert off.get("digest") is None
    small = TokenCache(5.0, size=2)
    for n in range(3):
        small.put(f"d{n}", Principal(n, ("read",)))
    assert small.get("d2") == Principal(2, ("read",))
    assert small.get("d0") is None


def test_revocation_elsewhere_takes_effect_within_the_cache_time(
    app: Flask, client: FlaskClient
) -> None:
    clock = Clock()
    app.extensions["publisher"].token_cache.clock = clock
    with transaction(app.extensions["publisher"].sessions) as session:
        token_id, value = create_token(session, ["read"])
    headers = {"Authorization": f"Bearer {value}"}
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    _revoke_elsewhere(app, token_id)
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    clock.now += app.config["PUBLISHER"]["token_cache_seconds"]
    assert client.get("/api/v1/records", headers=headers).status_code == 401
    clock.now += 60
    assert client.get("/api/v1/records", headers=headers).status_code == 401


def test_without_the_cache_a_revocation_takes_effect_at_once(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(token_cache_seconds=0)
    with transaction(app.extensions["publisher"].sessions) as session:
        token_id, value = create_token(session, ["read"])
    client = app.test_client()
    headers = {"Authorization": f"Bearer {value}"}
    assert client.get("/api/v1/records", headers=headers).status_code == 200
    _revoke_elsewhere(app, token_id)
    assert client.get("/api/v1/records", headers=headers).status_code == 401


def test_unknown_tokens_are_not_cached(app: Flask, client: FlaskClient) -> None:
    headers = {"Authorization": "Bearer pub_not-a-token"}
    for _ in range(3):
        assert client.get("/api/v1/records", headers=headers).status_code == 401
    assert app.extensions["publisher"].token_cache._entries == {}
