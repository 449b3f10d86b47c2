"""The benchmark: ``make bench`` (or ``.venv/bin/python bench/run.py``).

Starts what it needs (gunicorn, a load generator, consumers), measures, prints a table,
on the embedded defaults and, when PostgreSQL and Redis answer, on PostgreSQL + Redis:

1. intake of a ~5 KB record under gunicorn (2 workers, the worker class and threads of
   ``gunicorn.conf.py``): the API, a signed webhook, and
   a bare Flask endpoint that reads the body and answers 202 (same settings, same run);
2. delivery: deliveries/s through the built-in outputs vs a huey no-op task, same storage;
3. batch: ``publisher ingest`` of 10,000 records;
4. memory: RSS of a web worker after 1,000 and after 50,000 requests;
5. per-stage cost of one request (parse, validate, secure, store, enqueue) from cProfile;
6. scale (``bench/scale.py``): intake, delivery, the reads' latency and the publish latency on
   an empty store and with ``--scale-records`` (20,000 here; 200,000 by hand) stored.

Load comes from wrk when installed (``apt-get install wrk``), else from ``bench/loadgen.py``.
Options: ``--backends embedded,postgres+redis``, ``--duration 8``, ``--memory-requests 50000``,
``--memory-seconds 150`` (a cap: the row says how many requests were reached), ``--quick``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import hashlib
import hmac
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
SEED = ROOT / "tests" / "data" / "seed-record.json"
PG_ADMIN = os.environ.get("BENCH_POSTGRES", "host=127.0.0.1 user=postgres dbname=test")
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "whsec_" + base64.b64encode(b"publisher-bench-secret-32-bytes!").decode()
ENV = {**os.environ, "PUBLISHER_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the machine and the backends -------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load generator": "wrk " + _wrk_version()
        if shutil.which("wrk")
        else "bench/loadgen.py (wrk not installed: a Python load generator takes more of the "
        "shared CPU from the bare baseline than from the app, so intake ratios read high; "
        "apt-get install wrk for figures comparable with docs/performance.md)",
    }


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    match = re.search(r"wrk (\S+)", out)
    return match.group(1) if match else ""


def record_body(n: int | str = "__ID__") -> dict[str, Any]:
    """The seed record (~5 KB as JSON), published, with an id of its own."""
    fields = json.loads(SEED.read_text())
    fields.update(id=f"bench-{n}", published=True)
    return fields


@contextlib.contextmanager
def backend(name: str, work: Path) -> Iterator[dict[str, Any] | None]:
    """Settings for one backend in ``work``; None (and a note) when it is not reachable."""
    data = work / "data"
    settings: dict[str, Any] = {
        "data_dir": str(data),
        "keys_dir": str(work / "keys"),
        "sources": {"bench": {"secrets": [SECRET]}},
        "dev_key": True,
    }
    if name == "embedded":
        yield settings
        return
    try:
        import psycopg
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        database = f"pub_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    except Exception as exc:  # noqa: BLE001
        say(f"postgres+redis skipped: {type(exc).__name__}: {exc}")
        yield None
        return
    queue = f"pubbench_{uuid.uuid4().hex[:12]}"
    settings["database_url"] = f"{PG_URL}/{database}"
    settings["queue_url"] = f"{REDIS_URL}?name={queue}"
    try:
        yield settings
    finally:
        from publisher.taskqueue import make_huey

        make_huey(settings["queue_url"]).storage.flush_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def write_config(settings: dict[str, Any], work: Path) -> Path:
    path = work / "publisher.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def make_token(settings: dict[str, Any]) -> str:
    from publisher.app import create_app
    from publisher.db import transaction
    from publisher.tokens import create_token

    app = create_app(overrides=settings, environ={})
    with transaction(app.extensions["publisher"].sessions) as session:
        token = create_token(session, ["admin"])[1]
    app.extensions["publisher"].close()
    return token


# -- gunicorn and load ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(app: str, config: Path | None, workers: int = 2) -> Iterator[tuple[int, Any]]:
    port = free_port()
    env = dict(ENV)
    if config:
        env["PUBLISHER_CONFIG"] = str(config)
    command = [
        str(BIN / "gunicorn"),
        "-c", str(ROOT / "gunicorn.conf.py"),
        "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}",
        "--pythonpath", f"{ROOT},{BENCH}",
        "--log-level", "warning",
        app,
    ]  # fmt: skip
    log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {Path(log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers (the bare app has no /healthz)
            except OSError:
                time.sleep(0.2)
        # make sure both workers have built their app before we measure
        for _ in range(workers * 4):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


LUA = r"""
local mode, path, token, file = "%(mode)s", "%(path)s", "%(token)s", "%(file)s"
local lines, template, idx, prefix = {}, nil, 0, "p"
local count = 0
function setup(thread) thread:set("tnum", count); count = count + 1 end
function init(args)
  prefix = tostring(tnum) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
  if mode == "signed" then
    for line in io.lines(file .. "." .. tostring(tnum)) do lines[#lines + 1] = line end
  else
    local f = io.open(file, "rb"); template = f:read("*a"); f:close()
  end
end
request = function()
  idx = idx + 1
  if mode == "signed" then
    local line = lines[(idx - 1) %% #lines + 1]
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    return wrk.format("POST", path, {["Content-Type"] = "application/json",
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig}, body)
  end
  local body = (template:gsub("__ID__", prefix .. "-" .. idx))
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token}, body)
end
"""


def sign(webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_files(work: Path, per_thread: int, threads: int) -> Path:
    """Pre-signed webhook requests, one file per wrk thread (a webhook-id is used once)."""
    base = work / f"signed-{uuid.uuid4().hex[:6]}.txt"
    now = int(time.time())
    template = json.dumps(record_body("__ID__"), separators=(",", ":"))
    for thread in range(threads):
        with open(f"{base}.{thread}", "w") as out:
            for n in range(per_thread):
                wid = f"msg_{thread}_{n}_{uuid.uuid4().hex[:8]}"
                body = template.replace("__ID__", f"wh-{wid}").encode()
                out.write(f"{wid}\t{now}\t{sign(wid, now, body)}\t{body.decode()}\n")
    return base


def load(
    port: int,
    mode: str,
    path: str,
    *,
    token: str = "",
    work: Path,
    duration: float,
    connections: int = 8,
    threads: int = 2,
    signed: Path | None = None,
) -> dict[str, float]:
    """Drive ``path`` for ``duration`` seconds: req/s, p50, p99 (ms), non-2xx count."""
    template = work / "template.json"
    template.write_text(json.dumps(record_body("__ID__"), separators=(",", ":")))
    if shutil.which("wrk"):
        script = work / f"{mode}.lua"
        file = str(signed) if mode == "signed" else str(template)
        script.write_text(LUA % {"mode": mode, "path": path, "token": token, "file": file})
        command = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "-s", str(script), f"http://127.0.0.1:{port}",
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return parse_wrk(out)
    from bench import loadgen

    lines: list[list[str]] = []
    if mode == "signed" and signed:
        lines = [Path(f"{signed}.{t}").read_text().splitlines() for t in range(threads)]
    text = template.read_text()

    def make(thread: int, n: int) -> tuple[str, dict[str, str], bytes]:
        if mode == "signed":
            own = lines[thread % threads]
            wid, ts, sig, body = own[n % len(own)].split("\t", 3)
            headers = {"webhook-id": wid, "webhook-timestamp": ts, "webhook-signature": sig}
            return path, {"Content-Type": "application/json", **headers}, body.encode()
        body = text.replace("__ID__", f"{thread}-{n}-{uuid.uuid4().hex[:6]}").encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        return path, headers, body

    return loadgen.run("127.0.0.1", port, make, connections=connections, duration=duration)


def parse_wrk(out: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(g) for g in errors.groups())
    return {"requests": total, "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": failed}


# -- the sections -----------------------------------------------------------------------------


def section_intake(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    """Rounds of bare, API, webhook, one after the other, both servers up all along.

    This machine's speed drifts from minute to minute (a VM sharing its cores), so one
    baseline followed by the app would compare two different machines: each round's ratio
    is against the baseline of the same round, and the median round is reported.
    """
    config = write_config(settings, work)
    token = make_token(settings)
    rounds: list[dict[str, Any]] = []
    with gunicorn("bare_app:app", None) as (bare, _), gunicorn("wsgi:app", config) as (port, _):
        webhooks = _has_webhooks(port)
        for number in range(args.rounds):
            say(f"  intake round {number + 1}/{args.rounds}")
            row = {"bare": load(bare, "vary", "/ingest", work=work, duration=args.duration)}
            row["api"] = load(
                port, "vary", "/api/v1/records", token=token, work=work, duration=args.duration
            )
            if webhooks:
                row["webhook"] = load_signed(port, work, args.duration, row["bare"]["rps"])
            rounds.append(row)
    rows = {name: median_round(rounds, name) for name in rounds[0]}
    if not webhooks:
        rows["webhook"] = {"note": "POST /webhooks/<source> is not there yet: row skipped"}
    return rows


def load_signed(port: int, work: Path, duration: float, bare_rps: float) -> dict[str, float]:
    """Signed webhooks, each ``webhook-id`` used once (more signed than the round can send)."""
    per_thread = int(max(bare_rps, 100) * duration * 0.6) + 500
    signed = signed_files(work, per_thread, 2)
    try:
        return load(port, "signed", "/webhooks/bench", work=work, duration=duration, signed=signed)
    finally:
        for thread in range(2):
            Path(f"{signed}.{thread}").unlink()


def median_round(rounds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The figures of the round with the median ratio (req/s for the baseline itself)."""

    def ratio(row: dict[str, Any]) -> float:
        return row[name]["rps"] / row["bare"]["rps"]

    ordered = sorted(rounds, key=ratio)
    middle = ordered[len(ordered) // 2]
    if name == "bare":
        middle = sorted(rounds, key=lambda row: row["bare"]["rps"])[len(rounds) // 2]
    return {
        **middle[name],
        "ratio": ratio(middle),
        "ratios": [round(ratio(row), 3) for row in rounds],
        "rps_rounds": [round(row[name]["rps"]) for row in rounds],
    }


def section_memory(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    config = write_config(settings, work)
    token = make_token(settings)
    from bench import loadgen

    text = json.dumps(record_body("__ID__"), separators=(",", ":"))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def make(thread: int, n: int) -> tuple[str, dict[str, str], bytes]:
        body = text.replace("__ID__", f"mem-{thread}-{n}-{uuid.uuid4().hex[:6]}")
        return "/api/v1/records", headers, body.encode()

    with gunicorn("wsgi:app", config) as (port, proc):
        loadgen.run("127.0.0.1", port, make, connections=4, duration=300, total=1000)
        pids = worker_pids(proc.pid)
        first = {pid: rss_mib(pid) for pid in pids}
        sent = {"api": 1000, "webhook": 0}
        webhook = _has_webhooks(port)
        began = time.monotonic()
        # the API alone (~100 req/s here) would need minutes to reach 50,000: each round
        # mixes 5 s of API requests with 15 s of signed webhook requests (both intake)
        while sum(sent.values()) < args.memory_requests:
            if time.monotonic() - began > args.memory_seconds:
                break
            result = load(port, "vary", "/api/v1/records", token=token, work=work, duration=5)
            sent["api"] += int(result["requests"])
            if webhook:
                signed = signed_files(work, 5000, 2)
                result = load(
                    port, "signed", "/webhooks/bench", work=work, duration=15, signed=signed
                )
                sent["webhook"] += int(result["requests"])
                for thread in range(2):
                    Path(f"{signed}.{thread}").unlink()
        later = {pid: rss_mib(pid) for pid in worker_pids(proc.pid)}
    same = [pid for pid in first if pid in later]
    growth = max((later[p] - first[p]) / first[p] for p in same) if same else float("nan")
    return {
        "after_1k_mib": max(first.values()),
        "after_n_mib": max(later.values()),
        "requests": sum(sent.values()),
        "mix": sent,
        "growth": growth,
        "restarted": len(same) != len(first),
    }


def _has_webhooks(port: int) -> bool:
    probe = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/bench", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        urllib.request.urlopen(probe, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc.code not in (404, 405)
    return True


def section_delivery(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    """Rounds of deliveries then no-op tasks; the round with the median ratio is reported."""
    record = work / "record.json"
    record.write_text(json.dumps(record_body(0)))
    rounds = []
    for number in range(args.rounds):
        say(f"  delivery round {number + 1}/{args.rounds}")
        rounds.append(
            {
                mode: run_delivery(settings, work / f"data-{mode}-{number}", record, mode, args)
                for mode in ("deliver", "noop")
            }
        )

    def ratio(row: dict[str, Any]) -> float:
        return row["deliver"]["per_second"] / row["noop"]["per_second"]

    middle = sorted(rounds, key=ratio)[len(rounds) // 2]
    return {**middle, "ratios": [round(ratio(row), 3) for row in rounds]}


def run_delivery(
    settings: dict[str, Any], data: Path, record: Path, mode: str, args: Any
) -> dict[str, Any]:
    config = write_config(dict(settings, data_dir=str(data)), data.parent)
    command = [
        sys.executable, str(BENCH / "delivery.py"), "--config", str(config), "--mode", mode,
        "--records", str(args.delivery_records), "--record", str(record), "--limit", "60",
    ]  # fmt: skip
    out = subprocess.run(command, env=ENV, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_keepup(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    """End to end: the API driven at the rate the intake section measured (this backend's
    median round; without it, a short unpaced run first) for ``--keepup-seconds`` with a
    ``publisher worker`` beside gunicorn, as deployed; then how many of the deliveries the
    records accepted meanwhile planned are still pending at the end (issue 17: under 5 %)."""
    from bench import scale

    token = make_token(settings)
    rate = args.api_rps.get(args.current)
    with scale.served(settings, work) as port:  # gunicorn and a ``publisher worker``, as deployed
        if not rate:  # unpaced, briefly (the worker idles: nothing is pending yet)
            rate = load(port, "vary", "/api/v1/records", token=token, work=work, duration=4)["rps"]
            scale.drained(settings)
        say(f"  keep-up: {rate:.0f} records/s for {args.keepup_seconds:g} s, worker running")
        before = delivery_counts(settings)
        sent = paced_api(port, token, rate, args.keepup_seconds)
        counts = delivery_counts(settings)
    counts = {status: n - before.get(status, 0) for status, n in counts.items()}
    planned = sum(counts.values())
    pending = counts.get("pending", 0)
    return {
        **sent,
        "target_rate": rate,
        "deliveries": counts,
        "backlog": pending / planned if planned else 0.0,
    }


def paced_api(port: int, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """New published records to the API at ``rate``/s for ``seconds`` (open loop: a sender
    that falls behind its slot sends at once), on 16 keep-alive connections."""
    import http.client
    import threading

    text = json.dumps(record_body("__ID__"), separators=(",", ":"))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    senders, run_id = 16, uuid.uuid4().hex[:6]
    counts = {"accepted": 0, "failed": 0}
    lock = threading.Lock()
    began = time.perf_counter() + 0.1

    def sender(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        slot = number
        while (due := began + slot / rate) < began + seconds:
            time.sleep(max(0.0, due - time.perf_counter()))
            body = text.replace("__ID__", f"keepup-{run_id}-{slot}").encode()
            try:
                connection.request("POST", "/api/v1/records", body=body, headers=headers)
                answer = connection.getresponse()
                answer.read()
                ok = answer.status == 202
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            with lock:
                counts["accepted" if ok else "failed"] += 1
            slot += senders
        connection.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    return {**counts, "seconds": took, "rps": counts["accepted"] / took}


def delivery_counts(settings: dict[str, Any]) -> dict[str, int]:
    """Deliveries by status, read from the store (the truth of what must still happen)."""
    from sqlalchemy import func, select

    from publisher.config import load_settings
    from publisher.db import make_engine
    from publisher.models import Delivery

    engine = make_engine(load_settings(overrides=settings, environ={})["database_url"])
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ).all()
    finally:
        engine.dispose()
    return {status: count for status, count in rows}


def section_ingest(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    own = dict(settings, data_dir=str(work / "data-ingest"))
    config = write_config(own, work)
    folder = work / "ingest"
    folder.mkdir(exist_ok=True)
    template = json.dumps(record_body("__ID__"), separators=(",", ":"))
    per_file = 500
    for start in range(0, args.ingest_records, per_file):
        lines = (
            template.replace("__ID__", f"ingest-{n}")
            for n in range(start, min(args.ingest_records, start + per_file))
        )
        (folder / f"batch-{start:06d}.ndjson").write_text("\n".join(lines) + "\n")
    env = {**ENV, "PUBLISHER_CONFIG": str(config)}
    command = [
        sys.executable,
        "-c",
        "from publisher.cli import main; main()",
        "ingest",
        str(folder),
    ]
    # CPU beside wall time: on a shared machine the wall time moves with the neighbours' load,
    # the CPU (the ingesting process and its validating workers) much less
    cpu_before = _children_cpu()
    began = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - began
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return {
        "records": args.ingest_records,
        "seconds": elapsed,
        "per_second": args.ingest_records / elapsed,
        "cpu_seconds": _children_cpu() - cpu_before,
        "summary": out.stdout.strip().splitlines()[-1],
    }


def _children_cpu() -> float:
    """User + system CPU of the finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


STAGES = {
    "parse": ("publisher/parsing.py", "parse_body"),
    "validate": ("publisher/schemas.py", "validate_record"),
    "secure": ("publisher/secured/policy.py", "secure_record"),
    "store": ("publisher/intake.py", "_store"),
    "enqueue": ("publisher/dispatch.py", "enqueue"),
}


def section_profile(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    """cProfile over N API requests, N signed webhook requests (both through the WSGI stack,
    Flask's test client) and N deliveries (huey tasks executed in-process)."""
    from publisher.app import create_app
    from publisher.db import transaction
    from publisher.tokens import create_token

    own = dict(settings, data_dir=str(work / "data-profile"))
    app = create_app(overrides=own, environ={})
    services = app.extensions["publisher"]
    with transaction(services.sessions) as session:
        token = create_token(session, ["admin"])[1]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    text = json.dumps(record_body("__ID__"))
    count = args.profile_requests

    def api(n: int) -> None:
        body = text.replace("__ID__", f"prof-{n}")
        answer = client.post("/api/v1/records", data=body, headers=headers)
        assert answer.status_code == 202, answer.json

    def webhook(n: int) -> None:
        wid, now = f"msg_prof_{n}", int(time.time())
        body = text.replace("__ID__", f"wh-{n}").encode()
        signed = {"webhook-id": wid, "webhook-timestamp": str(now)}
        signed["webhook-signature"] = sign(wid, now, body)
        answer = client.post(
            "/webhooks/bench", data=body, headers={"Content-Type": "application/json", **signed}
        )
        assert answer.status_code == 202, answer.get_data(as_text=True)

    result: dict[str, Any] = {}
    api_stats, result["ms_per_request"] = _profiled(api, count)
    result.update(_stages(api_stats, count))
    result["top"] = _top_own_time(api_stats)
    _dump(api_stats, work / "profile-api.txt")
    with contextlib.suppress(AssertionError):
        hook_stats, result["webhook_ms"] = _profiled(webhook, count)
        result["webhook_top"] = _top_own_time(hook_stats)
        _dump(hook_stats, work / "profile-webhook.txt")
    # deliveries: what the API requests above queued (files + feeds), in messages of
    # ``batch_size`` as a busy queue carries them (the feeder gathers what waits)
    huey = services.huey
    ids: list[str] = []
    while huey.pending_count():
        task = huey.dequeue()
        if task is None:
            break
        if task.name == "publisher.deliver":
            ids.extend([task.args[0]] if isinstance(task.args[0], str) else task.args[0])
    dispatcher = services.dispatcher
    batches = [
        ids[i : i + dispatcher.batch_size] for i in range(0, len(ids), dispatcher.batch_size)
    ]
    # outputs run in a thread of their own (a hanging output costs a thread, not the
    # worker): time them there, and profile the rest in this thread
    spent: dict[str, float] = {}
    for spec in dispatcher.outputs.values():
        name = "deliver_many" if hasattr(spec.output, "deliver_many") else "publish"
        setattr(spec.output, name, _timed(getattr(spec.output, name), spec.name, spent))
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for batch in batches:
        dispatcher.run_delivery(batch)
    profiler.disable()
    if ids:
        result["delivery_ms"] = (time.perf_counter() - began) / len(ids) * 1000
        result["delivery_batch"] = dispatcher.batch_size
        delivery_stats = pstats.Stats(profiler)
        result["delivery_top"] = _top_own_time(delivery_stats)
        result["delivery_outputs"] = _output_costs(delivery_stats, len(ids))
        per_output = len(ids) / max(1, len(spent))
        result["delivery_outputs"].update(
            {f"{k} (its thread)": v / per_output * 1000 for k, v in spent.items()}
        )
        _dump(delivery_stats, work / "profile-delivery.txt")
    services.close()
    if args.keep_profiles:
        target = Path(args.keep_profiles)
        target.mkdir(parents=True, exist_ok=True)
        for path in work.glob("profile-*.txt"):
            shutil.copy(path, target / f"{args.current.replace('+', '-')}-{path.name}")
    return result


def _timed(method: Any, name: str, spent: dict[str, float]) -> Any:
    def timed(*args: Any) -> Any:
        began = time.perf_counter()
        try:
            return method(*args)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - began

    return timed


def _profiled(step: Any, count: int) -> tuple[pstats.Stats, float]:
    """Warm up, time ``count`` calls unprofiled (ms each), then profile ``count`` more."""
    base = int(time.time() * 1000) % 10_000_000 * 10
    for n in range(30):
        step(base + n)
    began = time.perf_counter()
    for n in range(30, 30 + count):
        step(base + n)
    plain = (time.perf_counter() - began) / count * 1000
    profiler = cProfile.Profile()
    profiler.enable()
    for n in range(30 + count, 30 + 2 * count):
        step(base + n)
    profiler.disable()
    return pstats.Stats(profiler), plain


def _stages(stats: pstats.Stats, count: int) -> dict[str, Any]:
    stages: dict[str, float] = {}
    total = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, name) in STAGES.items():
            if func == name and filename.endswith(suffix):
                stages[stage] = stages.get(stage, 0.0) + cumtime
        if func == "wsgi_app" and "flask" in filename:
            total = cumtime
    per_request = {k: v / count * 1000 for k, v in stages.items()}
    per_request["store"] = per_request.get("store", 0) - per_request.get("enqueue", 0)
    profiled_total = total / count * 1000
    per_request["http+auth+other"] = profiled_total - sum(per_request.values())
    return {"profiled_ms": profiled_total, "stages": per_request}


def _output_costs(stats: pstats.Stats, count: int) -> dict[str, float]:
    """ms per delivery inside each built-in output (cumulative, profiled)."""
    costs: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func in ("publish", "deliver_many") and "plugins/" in filename:
            costs[Path(filename).stem] = cumtime / count * 1000
        if func == "run_delivery" and filename.endswith("dispatch.py"):
            costs["run_delivery (all)"] = cumtime / count * 1000
    return costs


def _dump(stats: pstats.Stats, path: Path) -> None:
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(40)
    path.write_text(buffer.getvalue())


def _top_own_time(stats: pstats.Stats, n: int = 8) -> list[tuple[str, float]]:
    rows = []
    for (filename, line, func), (_cc, _nc, tottime, _ct, _c) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        rows.append((f"{short}:{line}({func})", tottime))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


def section_scale(settings: dict[str, Any], work: Path, args: Any) -> dict[str, Any]:
    from bench import scale

    own = argparse.Namespace(**vars(args))
    own.records, own.reads = args.scale_records, args.scale_reads
    own.publish_seconds, own.sections = args.scale_publish_seconds, args.scale_sections
    return scale.on_store(settings, work, own)


# -- the table --------------------------------------------------------------------------------


def fmt_load(row: dict[str, Any]) -> str:
    if "note" in row:
        return row["note"]
    extra = f", {row['errors']} non-2xx" if row.get("errors") else ""
    return f"{row['rps']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms{extra}"


def fmt_rounds(row: dict[str, Any]) -> str:
    rounds = "/".join(str(rps) for rps in row.get("rps_rounds", []))
    return fmt_load(row) + (f" (rounds: {rounds} req/s)" if rounds else "")


def fmt_round_ratios(ratios: list[float]) -> str:
    return f" (rounds: {', '.join(f'{ratio:.2f}' for ratio in ratios)})" if ratios else ""


def fmt_ratios(row: dict[str, Any]) -> str:
    rounds = ", ".join(f"{ratio:.2f}" for ratio in row.get("ratios", []))
    return f"{row['ratio']:.2f}" + (f" (rounds: {rounds})" if rounds else "")


def report(name: str, r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, figure, target, verdict) rows for one backend."""
    rows = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    # issue 17's targets: PostgreSQL + Redis pays a network round trip per statement
    api_target, webhook_target = (0.25, 0.4) if name.startswith("postgres") else (0.3, 0.5)
    if "intake" in r:
        i = r["intake"]
        rows.append(("intake: bare Flask (baseline)", fmt_rounds(i["bare"]), "", ""))
        api_ratio = i["api"]["ratio"]
        rows.append(
            ("intake: API", f"{fmt_rounds(i['api'])}; ratio {fmt_ratios(i['api'])}",
             f">= {api_target}", verdict(api_ratio >= api_target))
        )  # fmt: skip
        if "note" in i["webhook"]:
            rows.append(
                ("intake: signed webhook", i["webhook"]["note"], f">= {webhook_target}", "skipped")
            )
        else:
            ratio = i["webhook"]["ratio"]
            rows.append(
                ("intake: signed webhook",
                 f"{fmt_rounds(i['webhook'])}; ratio {fmt_ratios(i['webhook'])}",
                 f">= {webhook_target}", verdict(ratio >= webhook_target))
            )  # fmt: skip
    if "delivery" in r:
        d = r["delivery"]
        ratio = d["deliver"]["per_second"] / d["noop"]["per_second"]
        rows.append(
            ("delivery (files + feeds) vs huey no-op",
             f"{d['deliver']['per_second']:.0f}/s ({d['deliver']['done']}/{d['deliver']['tasks']})"
             f" vs {d['noop']['per_second']:.0f}/s; ratio {ratio:.2f}"
             + fmt_round_ratios(d.get("ratios", [])),
             ">= 0.5", verdict(ratio >= 0.5))
        )  # fmt: skip
    if "keepup" in r:
        k = r["keepup"]
        counts = ", ".join(f"{n:,} {s}" for s, n in sorted(k["deliveries"].items()))
        rows.append(
            (f"end to end: API at {k['target_rate']:.0f}/s for {k['seconds']:.0f} s + worker",
             f"{k['accepted']:,} accepted ({k['rps']:.0f}/s, {k['failed']} failed); deliveries at "
             f"the end: {counts}; backlog {k['backlog']:.1%}",
             "backlog < 5 %", verdict(k["backlog"] < 0.05))
        )  # fmt: skip
    if "ingest" in r:
        g = r["ingest"]
        rows.append(
            (f"batch: publisher ingest of {g['records']:,}",
             f"{g['per_second']:.0f} records/s ({g['seconds']:.1f} s, process start included;"
             f" CPU {g.get('cpu_seconds', 0):.1f} s with the workers)",
             ">= 2,000/s", verdict(g["per_second"] >= 2000))
        )  # fmt: skip
    if "memory" in r:
        m = r["memory"]
        rows.append(
            (f"memory: web worker RSS, 1k -> {m['requests']:,} requests",
             f"{m['after_1k_mib']:.1f} -> {m['after_n_mib']:.1f} MiB ({m['growth']:+.1%}); "
             f"{m['mix']['api']:,} API + {m['mix']['webhook']:,} webhook requests",
             "< +10 %", verdict(m["growth"] < 0.10))
        )  # fmt: skip
    if "profile" in r:
        p = r["profile"]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in p["stages"].items())
        rows.append(
            ("per-stage cost of one API request (ms, cProfile)",
             f"{p['ms_per_request']:.2f} ms unprofiled; profiled {p['profiled_ms']:.2f}: {stages}",
             "", "")
        )  # fmt: skip
        if "webhook_ms" in p:
            rows.append(
                ("one signed webhook request (in-process)", f"{p['webhook_ms']:.2f} ms", "", "")
            )
        if "delivery_ms" in p:
            outputs = ", ".join(f"{k} {v:.2f}" for k, v in p.get("delivery_outputs", {}).items())
            batch = p.get("delivery_batch", 1)
            rows.append(
                (f"one delivery in messages of {batch} (in-process, ms, profiled by output)",
                 f"{p['delivery_ms']:.2f} ms (profiled); {outputs}", "", "")
            )  # fmt: skip
    return [(f"[{name}] {a}", b, c, d) for a, b, c, d in rows]


def print_table(info: dict[str, str], results: dict[str, dict[str, Any]]) -> None:
    print("\nMachine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    print("\n| measure | figure | target | verdict |\n|---|---|---|---|")
    for name, r in results.items():
        if "skipped" in r:
            print(f"| [{name}] | skipped: {r['skipped']} | | |")
            continue
        for row in report(name, r):
            print("| " + " | ".join(row) + " |")
        if "scale" in r:
            from bench import scale

            print(f"\n| [{name}] scale | empty store | stored | stored/empty | target |")
            print("|---|---|---|---|---|")
            scale.print_rows(name, r["scale"])
        if "profile" in r:
            p = r["profile"]
            for label, key in (
                ("API", "top"),
                ("webhook", "webhook_top"),
                ("delivery", "delivery_top"),
            ):
                if key not in p:
                    continue
                print(
                    f"\n[{name}] {label}: most own time (cProfile, {r['profile_requests']} calls):"
                )
                for where, seconds in p[key]:
                    print(f"    {seconds:8.3f} s  {where}")
            print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="embedded,postgres+redis")
    parser.add_argument("--sections", default="intake,delivery,keepup,ingest,memory,profile,scale")
    parser.add_argument("--keepup-seconds", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3, help="intake and delivery rounds")
    parser.add_argument("--delivery-records", type=int, default=1000)
    parser.add_argument("--ingest-records", type=int, default=10_000)
    parser.add_argument("--memory-requests", type=int, default=50_000)
    parser.add_argument("--memory-seconds", type=float, default=150.0)
    parser.add_argument("--profile-requests", type=int, default=300)
    parser.add_argument("--scale-records", type=int, default=20_000)
    parser.add_argument("--scale-reads", type=int, default=100, help="calls per read (scale)")
    parser.add_argument("--scale-publish-seconds", type=float, default=10.0)
    parser.add_argument("--scale-sections", default="intake,delivery,reads,publish")
    parser.add_argument("--keep-profiles", help="copy the cProfile listings to this folder")
    parser.add_argument("--quick", action="store_true", help="short runs, to try the bench")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.delivery_records, args.ingest_records = 3.0, 200, 2000
        args.rounds, args.keepup_seconds = 1, 10.0
        args.memory_requests, args.memory_seconds, args.profile_requests = 3000, 20.0, 50
        args.scale_records, args.scale_reads, args.scale_publish_seconds = 3000, 20, 4.0
    args.api_rps = {}
    info = machine()
    say("machine: " + json.dumps(info))
    results: dict[str, dict[str, Any]] = {}
    sections = args.sections.split(",")
    for name in args.backends.split(","):
        results[name] = {"profile_requests": args.profile_requests}
        for section in sections:
            # every section on a fresh store and queue (a new database on PostgreSQL), so
            # one section's leftovers (pending deliveries, records) never skew the next
            with (
                tempfile.TemporaryDirectory(prefix="publisher-bench-") as tmp,
                backend(name, Path(tmp)) as settings,
            ):
                if settings is None:
                    results[name] = {"skipped": "PostgreSQL or Redis unreachable"}
                    break
                args.current = name
                say(f"[{name}] {section} ...")
                began = time.monotonic()
                function = globals()[f"section_{section}"]
                work = Path(tmp) / section
                work.mkdir(parents=True, exist_ok=True)
                try:
                    results[name][section] = function(settings, work, args)
                    if section == "intake":  # the keep-up section drives the API at this rate
                        args.api_rps[name] = results[name]["intake"]["api"]["rps"]
                except Exception as exc:  # noqa: BLE001 - report it, go on
                    say(f"[{name}] {section} failed: {exc}")
                    results[name][f"{section}_error"] = str(exc)[-500:]
                    continue
                say(f"[{name}] {section}: {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2))
    print_table(info, results)


if __name__ == "__main__":
    main()
