"""The scale-out soak: several web and worker processes under mixed load, nothing lost.

    .venv/bin/python bench/soak.py [--backend postgres+redis|embedded] [--seconds 60]

Starts gunicorn (4 sync workers) and two ``publisher worker`` processes on one backend,
sends new records and updates of accepted ones from several client threads for
``--seconds``, waits for the workers to finish, then checks from the database:

- every accepted record is stored once (one row per id answered with 202);
- no update is lost: a record's revision count equals the changes accepted for it;
- every delivery is done (none pending, none dead) and every output holds the latest
  revision of every record (the ledger says ``live``).

Prints the figures and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, ENV, backend, gunicorn, make_token, record_body, write_config  # noqa: E402

from publisher.models import Delivery, Placement, Record, Revision  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="postgres+redis")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="publisher-soak-") as tmp:
        work = Path(tmp)
        (work / "keys").mkdir(mode=0o700)
        with backend(args.backend, work) as settings:
            if settings is None:
                sys.exit(f"backend {args.backend} is not reachable")
            settings["delivery"] = {"sweep_interval": 1.0}
            sys.exit(0 if soak(settings, work, args) else 1)


def soak(settings: dict[str, Any], work: Path, args: Any) -> bool:
    config = write_config(settings, work)
    token = make_token(settings)
    with (
        gunicorn("wsgi:app", config, workers=args.web_workers) as (port, _),
        workers(config, args.workers),
    ):
        sent = Load(f"http://127.0.0.1:{port}", token).run(args.clients, args.seconds)
        print(f"load: {sent.summary()}", flush=True)
        drained = wait_for_deliveries(
            settings["database_url"]
            if "database_url" in settings
            else f"sqlite:///{settings['data_dir']}/publisher.db"
        )
    return check(settings, sent, drained)


@contextlib.contextmanager
def workers(config: Path, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**ENV, "PUBLISHER_CONFIG": str(config)}
    procs = [
        subprocess.Popen([str(BIN / "publisher"), "worker"], env=env, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


class Load:
    """Client threads: 60 % new records, 40 % a new title for an accepted record."""

    def __init__(self, base: str, token: str) -> None:
        self.url = f"{base}/api/v1/records"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.lock = threading.Lock()
        self.accepted: dict[str, int] = defaultdict(int)  # id -> changes answered 202
        self.statuses: Counter[str] = Counter()
        self.serial = 0

    def run(self, clients: int, seconds: float) -> Load:
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self._client, args=(deadline,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self

    def _client(self, deadline: float) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with self.lock:
                self.serial += 1
                serial = self.serial
                known = list(self.accepted)
            record_id = random.choice(known) if known and random.random() < 0.4 else None
            body = record_body(record_id.removeprefix("bench-") if record_id else f"s{serial}")
            body["title"] = f"soak revision {serial}"
            try:
                answer = session.post(self.url, data=json.dumps(body), headers=self.headers)
            except requests.RequestException:
                with self.lock:
                    self.statuses["connection error"] += 1
                continue
            self._note(answer)

    def _note(self, answer: requests.Response) -> None:
        with self.lock:
            if answer.status_code != 202:
                self.statuses[f"http {answer.status_code}"] += 1
                return
            status = answer.json()["status"]
            self.statuses[status] += 1
            if status in {"created", "revised"}:
                self.accepted[answer.json()["id"]] += 1

    def summary(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.statuses.most_common())


def wait_for_deliveries(url: str, timeout: float = 300.0) -> bool:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                pending = connection.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
                )
            if pending == 0:
                return True
            time.sleep(1)
        return False
    finally:
        engine.dispose()


def check(settings: dict[str, Any], sent: Load, drained: bool) -> bool:
    url = settings.get("database_url") or f"sqlite:///{settings['data_dir']}/publisher.db"
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = dict(connection.execute(select(Record.id, Record.revision)).all())
        revisions = Counter(connection.scalars(select(Revision.record_id)).all())
        statuses = Counter(connection.scalars(select(Delivery.status)).all())
        ledger = Counter(connection.scalars(select(Placement.state)).all())
        stale = connection.scalar(
            select(func.count())
            .select_from(Placement)
            .join(Record, Record.id == Placement.record_id)
            .where(Placement.revision != Record.revision)
        )
    engine.dispose()
    results = {
        "every accepted record stored once": set(rows) == set(sent.accepted),
        "no lost update (revisions = accepted changes)": all(
            rows.get(rid) == n and revisions[rid] == n for rid, n in sent.accepted.items()
        ),
        "all deliveries done": drained and set(statuses) <= {"done", "superseded"},
        "every output holds the latest revision": set(ledger) == {"live"} and stale == 0,
        "no request failed": set(sent.statuses) <= {"created", "revised", "unchanged"},
    }
    print(f"records: {len(rows)}; revisions: {sum(revisions.values())}")
    print(f"deliveries: {dict(statuses)}; ledger: {dict(ledger)}")
    for name, ok in results.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return all(results.values())


if __name__ == "__main__":
    os.environ.setdefault("PUBLISHER_DISABLE_PLUGIN_AUTOLOAD", "1")
    main()
