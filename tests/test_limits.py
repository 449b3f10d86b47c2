"""``limits``: a body too large is refused before it is read; batches and depth are bounded.

The body tests talk raw HTTP to a real WSGI server, because what matters is what happens
on the socket: a client announcing 10 MB gets its 413 without sending them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from publisher.db import transaction
from publisher.models import Record
from publisher.tokens import create_token

LIMIT = 2000


@pytest.fixture
def app(make_app) -> Flask:
    return make_app(limits={"max_body_bytes": LIMIT, "max_batch": 3, "max_depth": 8})


@pytest.fixture
def bearer(app: Flask) -> str:
    with transaction(app.extensions["publisher"].sessions) as session:
        return create_token(session, ["submit", "read"])[1]


@pytest.fixture
def server(app: Flask) -> Iterator[tuple[str, int]]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_port
    httpd.shutdown()
    thread.join(5)


def exchange(address: tuple[str, int], head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request head (and part of a body), read the answer; never send the rest."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def head(bearer: str, **headers: str) -> str:
    lines = [
        "POST /api/v1/records HTTP/1.1",
        "Host: localhost",
        f"Authorization: Bearer {bearer}",
        "Content-Type: application/json",
        "Connection: close",
    ] + [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n"


def test_an_announced_length_over_the_limit_is_refused_unread(server, bearer):
    # 10 MB announced, 100 bytes sent: the answer comes without waiting for the rest
    status, body = exchange(server, head(bearer, Content_Length="10000000"), b"{" + b" " * 99)
    assert status == 413
    assert json.loads(body)["status"] == 413


def test_a_chunked_body_over_the_limit_is_refused(server, bearer, app):
    chunk = b'{"title": "' + b"x" * 1000 + b'"}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    status, body = exchange(server, head(bearer, Transfer_Encoding="chunked"), chunks)
    assert status == 413
    assert json.loads(body)["code"] in {"request_entity_too_large", "too_large"}
    with app.extensions["publisher"].sessions() as session:
        assert session.query(Record).count() == 0


def test_a_chunked_record_over_the_limit_is_not_cut_and_taken(server, bearer, app):
    """werkzeug stops a chunked body at the limit silently; a cut Markdown record parses."""
    front = b"---\ntitle: cut\nwebUrl: https://example.com/cut\n---\n"
    first, rest = front + b"y" * (LIMIT - len(front) - 10), b"z" * 500
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (first, rest)) + b"0\r\n\r\n"
    head_ = head(bearer, Transfer_Encoding="chunked").replace("application/json", "text/markdown")
    status, body = exchange(server, head_, chunks)
    assert status == 413, body
    with app.extensions["publisher"].sessions() as session:
        assert session.query(Record).count() == 0


def test_a_chunked_body_under_the_limit_is_taken(server, bearer):
    chunk = json.dumps({"title": "small and chunked", "webUrl": "https://e.com/c"}).encode()
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    status, body = exchange(server, head(bearer, Transfer_Encoding="chunked"), chunks)
    assert status == 202, body
    assert json.loads(body)["status"] == "created"


def test_the_limit_is_exact(app, bearer):
    client = app.test_client()
    auth = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    record = json.dumps({"title": "t", "webUrl": "https://e.com/x"}).encode()
    at_limit = record[:-1] + b" " * (LIMIT - len(record)) + b"}"
    assert len(at_limit) == LIMIT
    assert client.post("/api/v1/records", data=at_limit, headers=auth).status_code == 202
    over = at_limit + b" "
    assert client.post("/api/v1/records", data=over, headers=auth).status_code == 413


def test_a_batch_over_max_batch_is_refused_whole(app, bearer):
    client = app.test_client()
    auth = {"Authorization": f"Bearer {bearer}"}
    batch = [{"title": f"r{i}", "webUrl": f"https://e.com/{i}"} for i in range(4)]
    answer = client.post("/api/v1/records", json=batch, headers=auth)
    assert answer.status_code == 422
    assert set(answer.json) == {"code", "status", "message", "errors"}
    assert "_batch" in answer.json["errors"]
    with app.extensions["publisher"].sessions() as session:
        assert session.query(Record).count() == 0
    assert client.post("/api/v1/records", json=batch[:3], headers=auth).status_code == 202


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/json", b'{"title": "t", "x": ' + b"[" * 20 + b"]" * 20 + b"}"),
        ("application/x-ndjson", b'{"title": "t", "x": ' + b"{" * 20 + b"}" * 20 + b"}\n"),
        ("application/yaml", b"title: t\nx: " + b"[" * 20 + b"]" * 20 + b"\n"),
    ],
)
def test_deep_nesting_is_malformed(app, bearer, content_type, body):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": content_type}
    answer = client.post("/api/v1/records", data=body, headers=headers)
    assert answer.status_code == 400, answer.json
    assert answer.json["code"] == "malformed"


def test_nesting_within_max_depth_is_taken(app, bearer):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    body = b'{"title": "t", "webUrl": "https://e.com/d", "x": ' + b"[" * 4 + b"]" * 4 + b"}"
    assert client.post("/api/v1/records", data=body, headers=headers).status_code == 202
