"""What several test modules share, meant to be imported (test modules themselves are not).

Paths of the test data, authorization headers, signed webhooks as a Standard Webhooks
sender makes them, a scrape of ``/metrics``, and the waiting a live server needs. Fixtures
stay in ``conftest.py``; loopback receivers are in ``receivers.py``, threads and forks in
``concurrency.py``, the two backends in ``backends.py``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from publisher.db import transaction
from publisher.tokens import create_token

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
LOCAL_PLUGINS = Path(__file__).parent / "local_plugins"
VECTORS = DATA / "vectors"

SECRET = "whsec_" + b64encode(b"a test secret of thirty-two b.").decode()
OTHER = "whsec_" + b64encode(b"another secret, also for tests!").decode()


def bearer(app: Flask, *scopes: str) -> dict[str, str]:
    """Authorization headers with a new token of ``scopes`` (admin by default) for ``app``."""
    with transaction(app.extensions["publisher"].sessions) as session:
        token = create_token(session, scopes or ("admin",))[1]
    return {"Authorization": f"Bearer {token}"}


def submit(client, auth: dict[str, str], record: dict) -> dict:  # noqa: ANN001
    """POST one record as JSON to the API; it must be accepted (``202``). Its answer."""
    answer = client.post(
        "/api/v1/records",
        data=json.dumps(record),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.json
    return answer.json


def signed_headers(
    body: bytes,
    secret: str = SECRET,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers as a sender using the standardwebhooks library makes them."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
        "Content-Type": content_type,
    }


def send(client, body: bytes, source: str = "cms", **kwargs):  # noqa: ANN001, ANN201
    """POST ``body`` to ``/webhooks/<source>``, signed."""
    return client.post(f"/webhooks/{source}", data=body, headers=signed_headers(body, **kwargs))


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # noqa: ANN001
    """``/metrics`` parsed by Prometheus' own parser: value by (name, sorted labels)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answered(port: int) -> bool:
    """A server on ``port`` answers ``/healthz`` with 200."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
