"""A small load generator for when wrk is not installed: threads, one connection per request
(gunicorn's sync workers close the connection after each answer anyway)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable


def run(
    host: str,
    port: int,
    make_request: Callable[[int, int], tuple[str, dict[str, str], bytes]],
    *,
    connections: int = 8,
    duration: float = 8.0,
    total: int | None = None,
) -> dict[str, float]:
    """Send requests for ``duration`` seconds (or ``total`` requests); latency percentiles."""
    latencies: list[float] = []
    errors = [0]
    sent = [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def worker(thread: int) -> None:
        n = 0
        while time.monotonic() < stop:
            with lock:
                if total is not None and sent[0] >= total:
                    return
                sent[0] += 1
            path, headers, body = make_request(thread, n)
            n += 1
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("POST", path, body=body, headers=headers)
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if not 200 <= status < 300:
                    errors[0] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors[0],
    }
