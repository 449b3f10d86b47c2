"""Under gunicorn as deployed (gunicorn.conf.py: gthread workers), stopped mid-load.

A graceful stop (SIGTERM) lets in-flight requests finish: every webhook answered ``202
accepted`` has its row, exactly once, and no request is answered with a server error.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from publisher.app import create_app
from publisher.models import InboxItem
from tests.concurrency import wait_until
from tests.helpers import DATA, ROOT, SECRET, answered, free_port, signed_headers

CLIENTS = 12


class Client(threading.Thread):
    """Sends signed webhooks on one keep-alive connection until told to stop or refused."""

    def __init__(self, port: int, number: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.number, self.stop = port, number, stop
        self.answers: list[tuple[str, int, str]] = []  # msg id, status, answer's status field
        fields = json.loads((DATA / "seed-record.json").read_text())
        self.body = json.dumps(dict(fields, id=f"gunicorn-{number}")).encode()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = 0
        while not self.stop.is_set():
            msg_id = f"msg_{self.number}_{sent}"
            sent += 1
            try:
                connection.request(
                    "POST", "/webhooks/cms", self.body, signed_headers(self.body, msg_id=msg_id)
                )
                answer = connection.getresponse()
                payload = json.loads(answer.read())
            except (OSError, http.client.HTTPException):
                return  # the server is going away: this request was not acknowledged
            self.answers.append((msg_id, answer.status, payload.get("status", "")))


@pytest.mark.slow
def test_a_graceful_stop_under_load_keeps_every_acknowledged_webhook(tmp_path: Path):
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "keys_dir": str(tmp_path / "keys"),
        "sources": {"cms": {"secrets": [SECRET]}},
    }
    config = tmp_path / "publisher.yaml"
    config.write_text(json.dumps(settings))
    app = create_app(overrides=settings, environ={})  # migrate before two workers start
    port = free_port()
    env = {**os.environ, "PUBLISHER_CONFIG": str(config), "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "-c", "gunicorn.conf.py", "--workers", "2", "--bind"]
    server = subprocess.Popen(
        [*command, f"127.0.0.1:{port}", "--log-level", "warning", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    try:
        wait_until(lambda: answered(port), seconds=60)
        clients = [Client(port, n, stop) for n in range(CLIENTS)]
        for client in clients:
            client.start()
        wait_until(lambda: sum(len(c.answers) for c in clients) >= 300, seconds=60)
        server.send_signal(signal.SIGTERM)  # mid-load
        assert server.wait(timeout=60) == 0
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
    for client in clients:
        client.join(timeout=30)
    answers = [a for client in clients for a in client.answers]
    assert {status for _, status, _ in answers} == {202}  # no 5xx, no 503
    accepted = [msg_id for msg_id, _, status in answers if status == "accepted"]
    assert len(accepted) == len(answers)  # every id was new
    with app.extensions["publisher"].sessions() as session:
        stored = list(session.scalars(select(InboxItem.webhook_id)))
    app.extensions["publisher"].close()
    assert len(stored) == len(set(stored))
    # each acknowledged webhook is there, once (one cut off before its answer may be too)
    assert set(accepted) <= set(stored)
