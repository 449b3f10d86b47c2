"""``publisher serve``'s waitress server on a loopback port: limits before reading, JSON errors.

Raw sockets, so the test controls exactly which bytes are sent: a request that declares a
body over ``limits.max_body_bytes`` is answered ``413`` although the body is never sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from waitress import wasyncore

from publisher.serving import make_server
from tests.helpers import bearer, free_port

LIMIT = 64 * 1024


@pytest.fixture
def served(make_app) -> Iterator[tuple[int, dict[str, str]]]:  # noqa: ANN001
    app = make_app(limits={"max_body_bytes": LIMIT})
    port = free_port()
    server = make_server(app, host="127.0.0.1", port=port, threads=2, max_body=LIMIT)
    stopping = threading.Event()

    def run() -> None:
        try:
            server.run()
        except Exception:  # its sockets closed under its select() at teardown
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield port, bearer(app, "submit")
    stopping.set()
    # closed on the server's own thread: closing its sockets from here raced its poll (EBADF)
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))  # noqa: SLF001
    thread.join(5)
    server.task_dispatcher.shutdown()


def exchange(port: int, request: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``request`` and read until the server closes or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        answer = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and _complete(answer):
                break
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 100"):
        return _complete(body) if b"\r\n\r\n" in body else False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body)


def post(headers: str, body: bytes = b"", path: str = "/api/v1/records") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode() + body


def test_a_declared_oversize_body_is_refused_without_being_sent(served) -> None:  # noqa: ANN001
    port, auth = served
    started = time.monotonic()
    answer = exchange(
        port,
        post(
            f"Authorization: {auth['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n"
        ),
    )
    assert time.monotonic() - started < 4  # answered from the headers: no body was sent
    status, body = status_and_json(answer)
    assert (status, body["code"], body["status"]) == (413, "too_large", 413)


def test_expect_100_continue_over_the_limit_gets_413_not_continue(served) -> None:  # noqa: ANN001
    port, _ = served
    answer = exchange(
        port, post(f"Expect: 100-continue\r\nContent-Length: {100 * 1000 * 1000}\r\n")
    )
    assert not answer.startswith(b"HTTP/1.1 100"), answer[:80]
    assert status_and_json(answer)[0] == 413


def test_expect_100_continue_within_the_limit_is_invited(served) -> None:  # noqa: ANN001
    port, auth = served
    body = json.dumps({"id": "small", "title": "Small"}).encode()
    headers = (
        f"Authorization: {auth['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post(headers))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]


def test_a_chunked_body_over_the_limit_is_413(served) -> None:  # noqa: ANN001
    port, _ = served
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    answer = exchange(port, post("Transfer-Encoding: chunked\r\n", body + b"0\r\n\r\n"))
    assert status_and_json(answer)[0] == 413


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ("Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n", 400),  # bad chunk size
        ("Content-Length: -5\r\n", b"", 400),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!", 400),
        ("X-Big: " + "a" * 300_000 + "\r\n", b"", 431),
    ],
    ids=["bad-chunk-size", "negative-length", "duplicate-length", "300kb-header"],
)
def test_framing_errors_answer_the_error_shape(served, headers, body, status) -> None:  # noqa: ANN001
    port, _ = served
    answered, payload = status_and_json(exchange(port, post(headers, body)))
    assert answered == status and payload["status"] == status
    assert set(payload) == {"code", "status", "message", "errors"}


@pytest.mark.slow
def test_under_gunicorn_a_declared_oversize_body_is_refused_unread(tmp_path) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys
    from pathlib import Path

    from publisher.app import create_app
    from tests.concurrency import wait_until
    from tests.helpers import ROOT, answered

    settings = {
        "data_dir": str(tmp_path / "data"),
        "keys_dir": str(tmp_path / "keys"),
        "limits": {"max_body_bytes": LIMIT},
    }
    config = tmp_path / "publisher.yaml"
    config.write_text(json.dumps(settings))
    create_app(overrides=settings, environ={}).extensions["publisher"].close()  # migrate
    port = free_port()
    env = {**os.environ, "PUBLISHER_CONFIG": str(config), "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "--workers", "1", "--bind", f"127.0.0.1:{port}"]
        + ["--log-level", "warning", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: answered(port), seconds=60)
        headers = f"Expect: 100-continue\r\nContent-Length: {50 * 1024 * 1024}\r\n"
        answer = exchange(port, post(headers, path="/webhooks/cms"))
        _, _, final = answer.partition(b"HTTP/1.1 100 Continue\r\n\r\n")  # gunicorn sends it
        status, body = status_and_json(final or answer)
        assert (status, body["code"]) == (413, "too_large")
    finally:
        server.terminate()
        server.wait(timeout=30)
