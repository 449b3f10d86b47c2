"""Prometheus metrics of one app: what came in, what went out, what is waiting.

Every app gets its own :class:`CollectorRegistry` (never prometheus_client's global one):
tests build many apps in one process, and a global registry would refuse the second.

Where the numbers come from:

- record and delivery counters: an internal pluggy plugin on ``services.pm`` (the same
  hooks third-party plugins see), so intake and dispatch need no metrics code;
- refusals: the ``record_rejected`` hook, by the error ``code`` of each refused item or body;
- HTTP: ``before_request`` / ``after_request`` (route template, never the raw path, so
  the label set stays bounded), wired by ``publisher/api/metrics.py``: this module knows
  no Flask;
- queue depth, pending/dead deliveries and held quarantine: counted from the store and the
  queue, so they are right whichever process changed them, but never on the scrape's own
  time: a scrape answers the last snapshot, and a stale one (older than
  ``metrics.state_refresh_seconds``) is recounted in a background thread, so the counts run
  at most once per that interval however often and by how many scrapers the page is read.
  ``publisher_state_age_seconds`` says how old the snapshot is; ``0`` counts on every scrape.
- the process (CPU, memory, file descriptors), platform and garbage-collector collectors of
  prometheus_client, on the app's registry; no ``*_created`` series (they double the series
  count and nothing here reads them).

Counters are per process. Deliveries run in the worker: with ``publisher serve`` the
worker is embedded and its counters show here; a separate ``publisher worker`` process
keeps its own. Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty folder (before start) and the counters of all workers are summed at scrape.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from publisher.endpoints import health_of, is_paused
from publisher.hookspecs import hookimpl
from publisher.models import Delivery, OutputState, QuarantineItem
from publisher.queries import WAITING
from publisher.taskqueue import queue_depth

log = logging.getLogger("publisher.metrics")
EXTENSION = "publisher.metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

disable_created_metrics()  # process-wide in prometheus_client: no ``*_created`` series


class Metrics:
    """The app's metric objects and its registry."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "publisher_records_received", "Raw records that arrived", ["source"], registry=r
        )
        self.accepted = Counter(
            "publisher_records_accepted",
            "Record revisions stored, by the lifecycle event they trigger (none: no event)",
            ["event"],
            registry=r,
        )
        self.rejected = Counter(
            "publisher_records_rejected",
            "Records or bodies refused, by error code",
            ["reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "publisher_deliveries",
            "Delivery attempts by output and outcome (succeeded, failed, dead)",
            ["output", "outcome"],
            registry=r,
        )
        self.pauses = Counter(
            "publisher_subscriber_pauses",
            "Times a subscriber was paused (410 Gone, or failing too long)",
            ["output"],
            registry=r,
        )
        self.responses = Counter(
            "publisher_http_responses",
            "HTTP answers by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "publisher_http_request_duration_seconds",
            "Time to answer, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        refresh = services.settings["metrics"]["state_refresh_seconds"]
        self.state = StateCollector(services, refresh)
        r.register(self.state)

    def scrape_registry(self) -> CollectorRegistry:
        """The registry to expose: this one, or every process's under multiprocess mode."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        PlatformCollector(registry=merged)
        merged.register(self.state)
        return merged

    def exposition(self) -> bytes:
        return generate_latest(self.scrape_registry())


#: what the gauges count, each read from an index that holds only the rows it counts
#: (``ix_deliveries_due``: the pending and dead deliveries; the unreplayed entries of
#: ``ix_quarantine_replayed_at``): the cost follows the backlog, never what was delivered
DELIVERIES_WAITING = select(Delivery.status, func.count()).where(WAITING).group_by(Delivery.status)
QUARANTINE_HELD = (
    select(func.count()).select_from(QuarantineItem).where(QuarantineItem.replayed_at.is_(None))
)


@dataclass
class Snapshot:
    """The store's and queue's numbers at one moment (``None``: that part did not answer)."""

    taken_at: float
    queue_depth: int
    deliveries: dict[str, int] | None = None
    held: int | None = None
    #: per output: (paused, consecutive failures), from the kept counts
    outputs: dict[str, tuple[bool, int]] = field(default_factory=dict)


@dataclass(eq=False)  # registered by identity in the registry
class StateCollector:
    """Gauges of what is waiting, from a snapshot counted at most every ``refresh`` seconds.

    Counting pending deliveries or the queue is a scan that grows with the backlog, which
    is exactly when scrapes must stay cheap; so a scrape never counts (but the first one,
    or every one with ``refresh`` 0): it reads the last snapshot and, when that is stale,
    starts one background recount.
    """

    services: Any
    refresh: float = 15.0
    clock: Any = time.monotonic
    _snapshot: Snapshot | None = None
    _counting: threading.Lock = field(default_factory=threading.Lock)

    def collect(self) -> Iterator[Metric]:
        snapshot = self._current()
        age = max(self.clock() - snapshot.taken_at, 0.0)
        yield GaugeMetricFamily(
            "publisher_state_age_seconds",
            "Age of the snapshot the queue, delivery and quarantine gauges come from",
            value=age,
        )
        yield GaugeMetricFamily(
            "publisher_queue_depth",
            "Tasks waiting in the queue (-1: the queue does not answer)",
            value=snapshot.queue_depth,
        )
        if snapshot.deliveries is None or snapshot.held is None:
            return
        deliveries = GaugeMetricFamily(
            "publisher_deliveries_current", "Deliveries by status now", labels=["status"]
        )
        for status in ("pending", "dead"):
            deliveries.add_metric([status], snapshot.deliveries.get(status, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "publisher_quarantine_held", "Quarantined payloads not replayed", value=snapshot.held
        )
        yield from _output_gauges(snapshot.outputs)

    def _current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None or self.refresh <= 0:
            return self.recount()
        if self.clock() - snapshot.taken_at >= self.refresh and self._counting.acquire(False):
            threading.Thread(
                target=self._recount_in_background, name="publisher-metrics", daemon=True
            ).start()
        return snapshot

    def _recount_in_background(self) -> None:
        try:
            self.recount(locked=True)
        finally:
            self._counting.release()

    def recount(self, locked: bool = False) -> Snapshot:
        """Count now and keep the result; safe to call from any thread."""
        snapshot = Snapshot(self.clock(), queue_depth(self.services.huey))
        try:
            snapshot.deliveries, snapshot.held = self._counts()
            snapshot.outputs = self._outputs()
        except Exception:  # noqa: BLE001 - a scrape must not fail on a database blip
            log.warning("metrics: the store did not answer", exc_info=True)
        self._snapshot = snapshot
        return snapshot

    def _counts(self) -> tuple[dict[str, int], int]:
        with self.services.sessions() as session:
            counts = {status: int(n) for status, n in session.execute(DELIVERIES_WAITING)}
            return counts, int(session.scalar(QUARANTINE_HELD) or 0)

    def _outputs(self) -> dict[str, tuple[bool, int]]:
        """Paused flag and failures in a row per output: two small tables, no scan."""
        with self.services.sessions() as session:
            states = {row.name: row for row in session.scalars(select(OutputState))}
            health = health_of(session.connection())
        names = sorted(set(self.services.dispatcher.outputs) | set(health))
        return {
            name: (
                is_paused(states.get(name)),
                health[name].consecutive_failures if name in health else 0,
            )
            for name in names
        }


def _output_gauges(outputs: Mapping[str, tuple[bool, int]]) -> Iterator[Metric]:
    paused = GaugeMetricFamily(
        "publisher_output_paused", "1 if the output is paused for failing", labels=["output"]
    )
    failures = GaugeMetricFamily(
        "publisher_output_consecutive_failures",
        "Failed attempts since the output's last success",
        labels=["output"],
    )
    for name, (is_off, count) in outputs.items():
        paused.add_metric([name], 1 if is_off else 0)
        failures.add_metric([name], count)
    yield paused
    yield failures


class MetricsPlugin:
    """Counts through the plugin hooks, as any observer plugin would."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @hookimpl
    def record_received(self, source: str) -> None:
        self.metrics.received.labels(source=source).inc()

    @hookimpl
    def record_rejected(self, reason: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()

    @hookimpl
    def record_stored(self, event: str | None) -> None:
        self.metrics.accepted.labels(event=event or "none").inc()

    @hookimpl
    def delivery_succeeded(self, output: str) -> None:
        self.metrics.deliveries.labels(output=output, outcome="succeeded").inc()

    @hookimpl
    def subscriber_paused(self, output: str) -> None:
        self.metrics.pauses.labels(output=output).inc()

    @hookimpl
    def delivery_failed(self, output: str, dead: bool) -> None:
        outcome = "dead" if dead else "failed"
        self.metrics.deliveries.labels(output=output, outcome=outcome).inc()
