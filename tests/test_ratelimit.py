"""Rate limits: a token bucket per API token and per webhook source; 429 + Retry-After."""

from __future__ import annotations

import base64
import time

import pytest

from publisher.api.limits import limiter_of
from publisher.db import transaction
from publisher.errors import TooManyRequests
from publisher.ratelimit import RateLimiter, check_rate
from publisher.signatures import secret_key, sign
from publisher.tokens import create_token

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_the_average_rate():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("k", 3) for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("k", 3)
    assert wait == pytest.approx(20.0)  # 3 per minute: one every 20 s
    clock.now += 20
    assert limiter.take("k", 3) == 0
    assert limiter.take("k", 3) > 0
    assert limiter.take("other", 3) == 0  # keys do not share a bucket


def test_a_refused_request_does_not_use_up_the_bucket():
    clock = Clock()
    limiter = RateLimiter(clock)
    limiter.take("k", 1)
    for _ in range(10):
        limiter.take("k", 1)
    clock.now += 60
    assert limiter.take("k", 1) == 0


def test_buckets_are_bounded_in_memory(monkeypatch):
    monkeypatch.setattr("publisher.ratelimit.MAX_KEYS", 3)
    limiter = RateLimiter(Clock())
    for i in range(10):
        limiter.take(f"k{i}", 5)
    assert len(limiter._buckets) == 3


def test_check_rate_answers_429_with_retry_after(make_app):
    app = make_app()

    def limited():
        check_rate(limiter_of(app), "route", 1)
        return "ok"

    app.add_url_rule("/limited", view_func=limited)
    client = app.test_client()
    assert client.get("/limited").status_code == 200
    refused = client.get("/limited")
    assert refused.status_code == 429
    assert refused.json["code"] == "rate_limited" and refused.json["status"] == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_zero_means_no_limit(make_app):
    app = make_app()
    for _ in range(100):
        check_rate(limiter_of(app), "k", 0)


def test_check_rate_raises_the_publisher_error(make_app):
    app = make_app()
    check_rate(limiter_of(app), "k", 1)
    with pytest.raises(TooManyRequests) as caught:
        check_rate(limiter_of(app), "k", 1)
    assert caught.value.headers["Retry-After"] == "60"


# -- wired into the API and the webhook inbox --------------------------------------------


def bearer(app, *scopes):
    with transaction(app.extensions["publisher"].sessions) as session:
        return {"Authorization": f"Bearer {create_token(session, scopes)[1]}"}


def test_the_api_limits_each_token(make_app):
    app = make_app(rate_limits={"per_token_per_minute": 2})
    client = app.test_client()
    first, second = bearer(app, "read"), bearer(app, "read")
    assert [client.get("/api/v1/plugins", headers=first).status_code for _ in range(2)] == [
        200,
        200,
    ]
    refused = client.get("/api/v1/plugins", headers=first)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/api/v1/plugins", headers=second).status_code == 200
    # an unauthenticated caller is refused as such, and uses up nobody's bucket
    assert client.get("/api/v1/plugins").status_code == 401


def signed_headers(body: bytes, webhook_id: str) -> dict[str, str]:
    stamp = int(time.time())
    signature = base64.b64encode(sign(secret_key(SECRET), webhook_id, stamp, body)).decode()
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{signature}",
    }


def test_the_webhook_inbox_limits_each_source(make_app):
    app = make_app(
        rate_limits={"per_source_per_minute": 2},
        sources={"news": {"secrets": [SECRET]}, "other": {"secrets": [SECRET]}},
    )
    client = app.test_client()
    body = b'{"title": "limited"}'

    def send(source: str, n: int):
        return client.post(f"/webhooks/{source}", data=body, headers=signed_headers(body, f"m{n}"))

    assert [send("news", n).status_code for n in range(2)] == [202, 202]
    refused = send("news", 3)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert send("other", 4).status_code == 202
