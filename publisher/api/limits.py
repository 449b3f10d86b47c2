"""The app's rate limits: one bucket set per app, asked per API token and per webhook source.

The buckets and the 429 are ``publisher/ratelimit.py``'s; this module only finds the app's
limiter and the limits its settings name.
"""

from __future__ import annotations

from flask import Flask

from publisher.ratelimit import RateLimiter, check_rate

EXTENSION = "publisher.ratelimit"


def limiter_of(app: Flask) -> RateLimiter:
    """The app's limiter, made on first use (``setdefault``: two threads keep one)."""
    limiter = app.extensions.get(EXTENSION)
    if limiter is None:
        limiter = app.extensions.setdefault(EXTENSION, RateLimiter())
    return limiter


def check_token_rate(app: Flask, token_id: int) -> None:
    """The per-token limit; call after the token is authenticated."""
    limit = app.config["PUBLISHER"]["rate_limits"].get("per_token_per_minute", 0)
    check_rate(limiter_of(app), f"token:{token_id}", limit)


def check_source_rate(app: Flask, source: str) -> None:
    """The per-source limit; call after the webhook signature is verified."""
    limit = app.config["PUBLISHER"]["rate_limits"].get("per_source_per_minute", 0)
    check_rate(limiter_of(app), f"source:{source}", limit)
