"""Running deliveries: lease, decide, hand to the output, then done, retry or dead.

The deliveries table holds the state; huey carries the work ("look at deliveries X, Y, Z of
output O now", up to ``batch_size`` ids a message). A message is handed to its output's
*lane* (``background.Lanes``): a few threads per output, so a slow or hanging output delays
only itself, and huey's threads are free again at once.

Before anything is sent, each delivery is checked against what its (record, output) pair
needs now (``publisher.convergence``): what the output last confirmed, and what it should
hold. A delivery the record moved past is retired and the pair's current transition runs
instead; one whose state the output already holds is done without a call (unless it is a
resend). huey is at most once (a task taken by a killed worker is gone), so a worker leases
deliveries before running them, and the sweeper re-enqueues deliveries whose lease expired
or that were never enqueued. A delivery that keeps killing its worker (a poison job) ends
dead after ``max_receives`` receives without a result.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from huey import Huey
from sqlalchemy import Connection, Engine, and_, bindparam, insert, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from publisher import convergence, endpoints
from publisher.background import Feeding, Lanes, call_with_timeout
from publisher.config import DEFAULTS
from publisher.db import transaction, unindexed, write_connection
from publisher.errors import Conflict, NotFound
from publisher.leases import lease, renew
from publisher.logs import log_context
from publisher.models import Attempt, Delivery, OutputState, Placement, Record, utcnow
from publisher.outputs import DeliveryError, Event, Output, OutputRecord
from publisher.records import instant_text, public_fields
from publisher.store import Planned, Route, converge_pair

log = logging.getLogger("publisher.dispatch")
TASK_NAME = "publisher.deliver"
#: how an attempt ends, in a delivery's history (the API documents exactly these)
ATTEMPT_OUTCOMES = ("delivered", "failed", "dead", "redelivered", "skipped", "superseded")
SWEEP_BATCH = 1000
RECONCILE_BATCH = 500
SIBLING_WAIT = 2.0  # seconds before a delivery held back by a running sibling looks again
#: seconds a huey thread waits for room in a full lane that moves, and before a message a
#: full lane refused is looked at again
LANE_FULL_WAIT = 1.0
OPENED = frozenset({"decrypted", "decrypted-unauthenticated"})
# what ``convergence.desired_revision`` reads of a record (``convergence.RecordLike``)
_ROUTED_COLUMNS = (
    Record.id,
    Record.revision,
    Record.meaning_revision,
    Record.published,
    Record.published_at,
    Record.expires_at,
)
#: built once: intake reads it on every request (see store.py on prebuilt statements)
_DISABLED = select(OutputState.name).where(OutputState.enabled.is_(False))


@dataclass
class OutputSpec:
    """An output with the options the core applies to it (routing, schedule, timeout)."""

    output: Output
    wants: Callable[[Mapping[str, Any]], bool] = lambda fields: True
    retry_schedule: Sequence[float] = tuple(DEFAULTS["delivery"]["retry_schedule"])
    timeout: float = 30.0
    rule: str | None = None

    @property
    def name(self) -> str:
        return self.output.name


@dataclass
class Held:
    """The deliveries a worker leased for one message, and when it last (re)leased them."""

    ids: list[str]
    since: float = field(default_factory=time.monotonic)


@dataclass
class Leased:
    """What the worker reads of a leased delivery (a plain row: no ORM unit of work)."""

    id: str
    record_id: str
    output: str
    event: str
    revision: int
    status: str
    attempts: int
    receives: int
    resend: bool
    request_id: str | None
    occurred_at: datetime | None
    created_at: datetime


@dataclass
class Loaded:
    """What the worker reads of a leased delivery's record: what deciding and the outputs
    need, nothing else (the same attributes as a stored ``Record``)."""

    id: str
    revision: int
    published: bool
    fields: dict[str, Any]
    body: str
    state: str
    secured_status: str
    published_at: datetime | None
    expires_at: datetime | None
    meaning_revision: int | None


_DELIVERY_COLUMNS = [getattr(Delivery, name) for name in Leased.__dataclass_fields__]
_RECORD_COLUMNS = [getattr(Record, name) for name in Loaded.__dataclass_fields__]
#: a message's deliveries, each with its record and what the output holds of it
_LOAD = (
    select(*_DELIVERY_COLUMNS, *_RECORD_COLUMNS, Placement.held_revision)
    .join(Record, Record.id == Delivery.record_id)
    .outerjoin(
        Placement,
        and_(Placement.record_id == Delivery.record_id, Placement.output == Delivery.output),
    )
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .order_by(Delivery.created_at, Delivery.id)
)


@dataclass
class Job:
    """A leased delivery that goes to its output: the event decided just before sending."""

    delivery: Leased
    record: Loaded
    kind: str

    def event(self) -> Event:
        return Event(
            kind=self.kind,  # type: ignore[arg-type]
            delivery_id=self.delivery.id,
            record_id=self.record.id,
            revision=self.record.revision,
            occurred_at=self.delivery.occurred_at or self.delivery.created_at,
        )


class ProtectedUnavailable(DeliveryError):
    """The output takes protected data, the record has some, and it cannot be opened now."""


@dataclass
class Dispatcher:
    """Owns the huey task that runs deliveries, the lanes, the sweeper and reconcile."""

    sessions: sessionmaker[Session]
    huey: Huey
    outputs: dict[str, OutputSpec]
    hooks: Any = None
    opener: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] = lambda fields: None
    jitter: float = 0.1
    lease_seconds: float = 120.0
    max_receives: int = 5
    #: most delivery ids in one queue message (and so in one call of ``deliver_many``)
    batch_size: int = 100
    #: one-by-one output calls of one message that run at once
    parallel_calls: int = 4
    #: messages of one output that run at once in this process (0: run in huey's thread)
    lane_threads: int = 2
    #: deliveries one output's lane may hold in this process; the rest wait on the queue
    lane_backlog: int = 1000
    #: seconds between checks of outputs with ``inventory()`` for drift (0: never)
    drift_check_interval: float = 3600.0
    #: other sweeps to run with this one (the webhook inbox adds its own); each returns a count
    also_sweep: list[Callable[[], int]] = field(default_factory=list)
    background_enqueue: bool = False
    #: a subscriber failing with no success this long is paused (0: never)
    pause_after_seconds: float = 86400.0
    #: outputs that come and go at run time (``publisher.subscribers.LiveSubscribers``)
    live: Any = None
    #: how a live output becomes a spec (the delivery defaults applied to it)
    live_spec: Callable[[Any], OutputSpec] = lambda output: OutputSpec(output)
    _task: Any = field(init=False, default=None)
    _static: dict[str, OutputSpec] = field(init=False, default_factory=dict)
    _feeding: Feeding = field(init=False)
    lanes: Lanes | None = field(init=False, default=None)
    _last_drift_check: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._static = dict(self.outputs)
        self._task = self.huey.task(name=TASK_NAME, retries=0)(self.receive)
        self._feeding = Feeding(self.feed, background=self.background_enqueue)
        if self.lane_threads > 0:
            self.lanes = Lanes(
                self.lane_threads, self.lane_backlog, merge=self.batch_size, wait=LANE_FULL_WAIT
            )

    @property
    def engine(self) -> Engine:
        return self.sessions.kw["bind"]

    def close(self) -> None:
        """Enqueue what the feeder still holds, and stop the lanes (``Services.close``)."""
        self._feeding.flush()
        if self.lanes is not None:
            self.lanes.close()

    def refresh(self, force: bool = False) -> dict[str, OutputSpec]:
        """Take in outputs added or removed at run time (subscribers through the API).

        A cheap look, at most every few seconds (``live`` decides); the dict is replaced,
        never changed in place, so a thread iterating the old one is not disturbed.
        """
        changed = self.live.changed(force) if self.live is not None else None
        if changed is not None:
            live = {name: self.live_spec(output) for name, output in changed.items()}
            self.outputs = {**live, **self._static}  # YAML wins a name clash
        return self.outputs

    def routes(self, connection: Connection | None = None) -> list[Route]:
        """Every output, enabled or not: a disabled output keeps its desired state, so that
        enabling it catches up with what changed meanwhile (its deliveries wait, pending)."""
        return [Route(s.name, s.wants) for s in self.refresh().values()]

    def disabled_outputs(self, connection: Connection | None = None) -> set[str]:
        # rows, not scalars(): scalars() rebuilds the result's key map on every call
        if connection is not None:
            return {name for (name,) in connection.execute(_DISABLED)}
        # a plain connection, not a session: this runs on every delivery
        with self.engine.connect() as own:
            return {name for (name,) in own.execute(_DISABLED)}

    # -- the queue ------------------------------------------------------------------------

    def enqueue(
        self, deliveries: Sequence[Planned | Delivery], now: datetime | None = None
    ) -> None:
        """Feed the queue after the commit; a failure here is repaired by the sweeper.

        With ``background_enqueue`` (the ``enqueue: background`` setting, the default of
        ``serve`` and ``wsgi.py``) the ids go to a feeder thread, so a request costs one
        durable commit and no queue round trip.
        """
        now = now or utcnow()
        due = [(d.id, d.output) for d in deliveries if d.next_attempt_at <= now]
        if not due:
            return
        self._feeding(due)

    def feed(self, deliveries: Iterable[tuple[str, str]]) -> None:
        """Enqueue ``(id, output)`` pairs: one message per output, ``batch_size`` ids each."""
        by_output: dict[str, list[str]] = {}
        for delivery_id, output in deliveries:
            by_output.setdefault(output, []).append(delivery_id)
        size = max(1, self.batch_size)
        for output, ids in by_output.items():
            for start in range(0, len(ids), size):
                try:
                    self._task(ids[start : start + size], output)
                except Exception:  # noqa: BLE001 - the sweeper will enqueue them
                    log.warning("enqueue failed; the sweeper will retry", exc_info=True)

    def receive(self, delivery_ids: str | Sequence[str], output: str | None = None) -> None:
        """The huey task: hand a message to its output's lane and return.

        It returns at once, unless the lane is full and moving: then it waits for room (up
        to ``LANE_FULL_WAIT``), so that this process takes no more from the queue than it
        can start soon, and other worker processes take the rest.

        Messages of older versions carry ids only (or one id); their outputs are looked up.
        """
        ids = [delivery_ids] if isinstance(delivery_ids, str) else list(delivery_ids)
        groups = {output: ids} if output else self._outputs_of(ids)
        for name, group in groups.items():
            if self.lanes is None:
                self.run_delivery(group, name)
            elif not self.lanes.submit(name, self.run_delivery, group, name):
                self._task.schedule((group, name), delay=LANE_FULL_WAIT)

    def _outputs_of(self, ids: list[str]) -> dict[str, list[str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Delivery.id, Delivery.output).where(Delivery.id.in_(ids))
            ).all()
        groups: dict[str, list[str]] = {}
        for delivery_id, name in rows:
            groups.setdefault(name, []).append(delivery_id)
        return groups

    # -- running a message's deliveries ---------------------------------------------------

    def run_delivery(self, delivery_ids: str | Sequence[str], output: str | None = None) -> None:
        """Lease, decide, deliver and settle a batch of deliveries. Safe to receive twice."""
        ids = [delivery_ids] if isinstance(delivery_ids, str) else list(delivery_ids)
        self.refresh()
        leased, waiting = lease(self.sessions, ids, utcnow(), self.lease_seconds)
        if waiting:  # due, but a sibling is running: look again shortly
            self._task.schedule((waiting, output), delay=SIBLING_WAIT)
        if leased:
            self._run(Held(leased))

    def _run(self, held: Held) -> None:
        rows, disabled = self._load(held.ids)
        now = utcnow()
        jobs: dict[str, list[Job]] = {}
        for delivery, record, held_revision in rows:
            refusal = self._refusal(delivery)
            if refusal:
                self._settle_failure(delivery, refusal, dead=True)
            elif delivery.output in disabled:
                self._release([delivery.id])  # waits, pending, for the output to come back
            else:
                job = self._decide(delivery, record, held_revision, now)
                if job is not None:
                    jobs.setdefault(delivery.output, []).append(job)
        for name, share in jobs.items():
            self._attempt(self.outputs[name], share, held)

    def _load(self, ids: list[str]) -> tuple[list[tuple[Leased, Loaded, int | None]], set[str]]:
        """The leased deliveries with their records and ledger, and the disabled outputs:
        one connection, two statements, plain rows."""
        cut = len(_DELIVERY_COLUMNS)
        with self.engine.connect() as connection:
            rows = connection.execute(_LOAD, {"ids": ids}).all()
            disabled = self.disabled_outputs(connection)
        loaded = [
            (Leased(*row[:cut]), Loaded(*row[cut:-1]), row[-1])  # type: ignore[arg-type]
            for row in rows
        ]
        return loaded, disabled

    def _refusal(self, delivery: Leased) -> str | None:
        """Why a leased delivery ends dead without reaching its output, if it does."""
        if delivery.receives - delivery.attempts > self.max_receives:
            return "worker died during delivery too often"
        if delivery.output not in self.outputs:
            return f"no output named {delivery.output!r}"
        return None

    def _decide(
        self, delivery: Leased, record: Loaded, held: int | None, now: datetime
    ) -> Job | None:
        """The job to send, or None when the delivery was settled here without a call."""
        spec = self.outputs[delivery.output]
        want = convergence.desired_revision(record, spec.wants, now)
        decision = convergence.decide(delivery, held, want, bool(delivery.resend))
        if decision.stale:
            self._retire(delivery, record, held, now)
        elif decision.send is None:
            self._settle_unchanged(delivery, record, decision.reason, now)
        else:
            return Job(delivery, record, decision.send)
        return None

    def _attempt(self, spec: OutputSpec, share: list[Job], held: Held) -> None:
        items: list[tuple[OutputRecord, Event]] = []
        ready: list[Job] = []
        for job in share:
            try:
                items.append((self._view(spec, job.record), job.event()))
                ready.append(job)
            except ProtectedUnavailable as exc:
                self._settle_failure(job.delivery, str(exc), error=exc, spec=spec, job=job)
        if not ready:
            return
        started = time.monotonic()
        outcomes = self._call(spec, ready, items, held)
        took = time.monotonic() - started
        succeeded = [job for job, outcome in zip(ready, outcomes, strict=True) if outcome is None]
        if succeeded:
            self._settle_success(succeeded, took)
        for job, outcome in zip(ready, outcomes, strict=True):
            if outcome is not None:
                error = outcome if isinstance(outcome, DeliveryError) else None
                message = str(outcome) if error is not None else _describe(outcome)
                self._settle_failure(
                    job.delivery,
                    message,
                    error=error,
                    spec=spec,
                    job=job,
                    took=took,
                    raised=outcome,
                )

    def _call(
        self, spec: OutputSpec, jobs: list[Job], items: list[tuple[OutputRecord, Event]], held: Held
    ) -> list[BaseException | None]:
        """One outcome per item: None for delivered, else what went wrong."""
        many = getattr(spec.output, "deliver_many", None)
        if many is None:
            return self._call_each(spec, jobs, items, held)
        answer: list[BaseException | None] = []
        with log_context(output=spec.name, deliveries=len(items)):
            error = call_with_timeout(lambda: answer.extend(many(items)), (), spec.timeout)
        if error is None and len(answer) != len(items):
            error = RuntimeError(f"deliver_many gave {len(answer)} outcomes for {len(items)}")
        return [error] * len(items) if error is not None else answer

    def _call_each(
        self, spec: OutputSpec, jobs: list[Job], items: list[tuple[OutputRecord, Event]], held: Held
    ) -> list[BaseException | None]:
        """One call per item, ``parallel_calls`` at a time (an output without
        ``deliver_many`` is usually a network call: a batch must not make it sequential).

        The items are distinct records, so their order does not matter. While the calls
        run, the lease of what the message still holds is renewed, so no other worker takes
        those over meanwhile.
        """
        workers = max(1, min(self.parallel_calls, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="publisher-call") as pool:
            futures = [
                pool.submit(self._call_one, spec, job.delivery, item)
                for job, item in zip(jobs, items, strict=True)
            ]
            while wait(futures, timeout=self.lease_seconds / 4).not_done:
                self._keep(held)
        return [future.result() for future in futures]

    def _keep(self, held: Held) -> None:
        if time.monotonic() - held.since > self.lease_seconds / 2:
            renew(self.sessions, held.ids, utcnow(), self.lease_seconds)
            held.since = time.monotonic()

    def _call_one(
        self, spec: OutputSpec, delivery: Leased, item: tuple[OutputRecord, Event]
    ) -> BaseException | None:
        view, event = item
        method = spec.output.retract if event.kind == "retracted" else spec.output.publish
        context = {"delivery_id": delivery.id, "record_id": delivery.record_id}
        with log_context(request_id=delivery.request_id, **context):
            return call_with_timeout(method, item, spec.timeout)

    def _view(self, spec: OutputSpec, record: Loaded) -> OutputRecord:
        protected = None
        if spec.output.accepts_protected and record.secured_status in OPENED:
            protected = self.opener(record.fields)
            if protected is None:  # never "done" without the data the output is owed
                raise ProtectedUnavailable(
                    "the record's protected fields cannot be opened now "
                    "(is the key that opened them still in the keyring?)"
                )
        return OutputRecord(
            id=record.id,
            revision=record.revision,
            fields=public_fields(record.fields),
            body=record.body,
            secured_status=record.secured_status,
            protected=protected,
        )

    # -- settling -------------------------------------------------------------------------

    def _settle_success(self, jobs: list[Job], took: float) -> None:
        """Mark a batch done in one transaction, then tell the observers.

        One statement per table and event kind (a batch is nearly always of one kind), the
        ledger's rows in one ``executemany``, records' states only where one moves.
        """
        now = utcnow()
        with write_connection(self.engine) as connection:
            by_kind: dict[str, list[str]] = {}
            for job in jobs:
                by_kind.setdefault(job.kind, []).append(job.delivery.id)
            for kind, ids in by_kind.items():
                connection.execute(_DONE, {"ids": ids, "b_event": kind, "b_now": now})
            connection.execute(
                _INSERT_ATTEMPT,
                [_attempt_row(j.delivery.id, now, "delivered", j.kind, took=took) for j in jobs],
            )
            _confirm(connection, jobs, now)
            _advance_state(connection, [job.record for job in jobs], now)
            for output in {job.delivery.output for job in jobs}:
                endpoints.record_success(connection, output, now)
        for job in jobs:
            self._hook(
                "delivery_succeeded",
                output=job.delivery.output,
                record_id=job.record.id,
                event=job.event(),
            )

    def _settle_unchanged(
        self, delivery: Leased, record: Loaded, reason: str, now: datetime
    ) -> None:
        """The output already holds what this delivery was for: done, without a call."""
        with write_connection(self.engine) as connection:
            _close(connection, delivery.id, "done", "skipped", reason, now)
            _advance_state(connection, [record], now)

    def _retire(self, delivery: Leased, record: Loaded, held: int | None, now: datetime) -> None:
        """Supersede a delivery the record moved past; plan the pair's current transition."""
        spec = self.outputs[delivery.output]
        with write_connection(self.engine) as connection:
            moved = "the record moved past it"
            _close(connection, delivery.id, "superseded", "superseded", moved, now)
            planned = converge_pair(connection, record, Route(spec.name, spec.wants), held, now)
        if planned is not None:
            self.enqueue([planned], now)

    def _release(self, ids: list[str]) -> None:
        """Give back leases taken for nothing (a disabled output): no receive counted."""
        with write_connection(self.engine) as connection:
            connection.execute(_RELEASE, {"ids": ids})

    def _settle_failure(
        self,
        delivery: Leased,
        message: str,
        *,
        error: DeliveryError | None = None,
        spec: OutputSpec | None = None,
        dead: bool = False,
        job: Job | None = None,
        took: float | None = None,
        raised: BaseException | None = None,
    ) -> None:
        now = utcnow()
        kind = job.kind if job else None
        with transaction(self.sessions) as session:
            connection = session.connection()
            pause = self._health_after_failure(connection, delivery.output, spec, error, now)
            stop = pause is not None
            values, dead = self._failure_values(delivery, message, error, spec, dead, stop, now)
            connection.execute(update(Delivery).where(Delivery.id == delivery.id).values(**values))
            outcome = "dead" if dead else "failed"
            row = _attempt_row(delivery.id, now, outcome, kind, message, took, error)
            connection.execute(insert(Attempt), [row])
            if dead:
                _mark(connection, delivery, "failed", now)
            if pause:
                set_output_state(session, delivery.output, False, pause)
        if pause:
            log.warning("output %s paused: %s", delivery.output, pause)
            self._hook("subscriber_paused", output=delivery.output, reason=pause)
        if not dead and not stop:
            self._task.schedule(([delivery.id], delivery.output), eta=values["next_attempt_at"])
        log.warning(
            "delivery failed",
            exc_info=_exc_info(raised),
            extra={
                "error": message,
                "delivery_id": delivery.id,
                "output": delivery.output,
                "record_id": delivery.record_id,
                "request_id": delivery.request_id,
                "dead": dead,
            },
        )
        event = (
            job.event()
            if job
            else Event(
                delivery.event,
                delivery.id,
                delivery.record_id,
                delivery.revision,
                now,  # type: ignore[arg-type]
            )
        )
        self._hook(
            "delivery_failed",
            output=delivery.output,
            record_id=delivery.record_id,
            event=event,
            error=message,
            dead=dead,
        )

    def _health_after_failure(
        self,
        connection: Connection,
        output: str,
        spec: OutputSpec | None,
        error: DeliveryError | None,
        now: datetime,
    ) -> str | None:
        """Count a failed attempt; the reason to pause the output now, if there is one.

        A ``410 Gone`` (``disable_output``) pauses at once; a subscriber failing with no
        success for ``pause_after_seconds`` is paused too. A refusal that never reached the
        output (``spec`` None) is not the endpoint's failure and is not counted.
        """
        if spec is None:
            return None
        row = endpoints.record_failure(connection, output, now)
        if error is not None and error.disable_output:
            return endpoints.PAUSED + str(error)
        return endpoints.pause_reason(row, output, self.pause_after_seconds, now)

    def _failure_values(
        self,
        delivery: Leased,
        message: str,
        error: DeliveryError | None,
        spec: OutputSpec | None,
        dead: bool,
        stop: bool,
        now: datetime,
    ) -> tuple[dict[str, Any], bool]:
        """The delivery's new columns, and whether it is dead; a paused output's waits."""
        attempts = delivery.attempts + 1
        schedule = spec.retry_schedule if spec else ()
        dead = not stop and (
            dead or (error is not None and error.permanent) or attempts >= len(schedule)
        )
        values: dict[str, Any] = {
            "attempts": attempts,
            "error": message[:2000],
            "lease_until": None,
            "updated_at": now,
        }
        if dead:
            values["status"] = "dead"
        elif not stop:  # a paused output keeps the delivery pending for when it comes back
            delay = self._delay(schedule[attempts], error)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            values["enqueued_at"] = now
        return values, dead

    def _delay(self, base: float, error: DeliveryError | None) -> float:
        if error is not None and error.retry_after is not None:
            return max(0.0, float(error.retry_after))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def _hook(self, name: str, **kwargs: Any) -> None:
        if self.hooks is None:
            return
        try:
            getattr(self.hooks, name)(**kwargs)
        except Exception:  # noqa: BLE001 - an observer must not break delivery
            log.exception("plugin hook %s failed", name)

    # -- the sweeper ----------------------------------------------------------------------

    def sweep(self, now: datetime | None = None, grace: float | None = None) -> int:
        """Re-enqueue due deliveries that nobody holds and that were not enqueued lately.

        Covers a worker killed mid-delivery (its lease expires), an enqueue lost between
        commit and queue, and embargoed deliveries whose time has come. Deliveries of a
        disabled output wait for it. Returns the count.
        """
        now = now or utcnow()
        self.refresh()
        grace = self.lease_seconds if grace is None else grace
        stale = now - timedelta(seconds=grace)
        due = and_(
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            (Delivery.lease_until.is_(None)) | (Delivery.lease_until < now),
            (Delivery.enqueued_at.is_(None)) | (Delivery.enqueued_at < stale),
        )
        disabled = self.disabled_outputs()
        if disabled:
            due = and_(due, unindexed(Delivery.output).not_in(sorted(disabled)))
        swept = 0
        while True:
            with transaction(self.sessions) as session:
                rows = session.execute(
                    select(Delivery.id, Delivery.output).where(due).limit(SWEEP_BATCH)
                ).all()
                if rows:
                    session.connection().execute(
                        update(Delivery)
                        .where(Delivery.id.in_([row.id for row in rows]))
                        .values(enqueued_at=now)
                        .execution_options(synchronize_session=False)
                    )
            self.feed([(row.id, row.output) for row in rows])
            swept += len(rows)
            if len(rows) < SWEEP_BATCH:
                break
        self._maybe_check_drift()
        return swept + sum(extra() for extra in self.also_sweep)

    def _maybe_check_drift(self) -> None:
        if not self.drift_check_interval:
            return
        if time.monotonic() - self._last_drift_check < self.drift_check_interval:
            return
        self._last_drift_check = time.monotonic()
        for name, spec in self.outputs.items():
            if callable(getattr(spec.output, "inventory", None)):
                try:
                    self.reconcile(name)
                except Exception:  # noqa: BLE001 - the next check tries again
                    log.exception("drift check of %s failed", name)

    # -- operator actions -----------------------------------------------------------------

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again, same id, if it still means something; keeps its history.

        A dead delivery that is still the pair's transition goes again from the start of its
        schedule; a done one that brought the output where it is is sent again (the receiver
        may have lost it). One the record moved past answers ``409``: nothing to redeliver.
        """
        now = utcnow()
        with transaction(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None:
                raise NotFound(f"no delivery with id {delivery_id!r}")
            if not self.redeliverable(session, delivery, now):
                raise Conflict(
                    "the record has moved past this delivery: there is nothing to redeliver",
                    errors={
                        "delivery": [
                            f"{delivery.status}, {delivery.event} of revision "
                            f"{delivery.revision}: out of date"
                        ]
                    },
                )
            resend = delivery.status == "done"
            delivery.status = "pending"
            delivery.resend = resend or bool(delivery.resend)
            delivery.receives = delivery.attempts
            delivery.lease_until = None
            delivery.next_attempt_at = now
            delivery.enqueued_at = now
            delivery.updated_at = now
            session.add(Attempt(**_attempt_row(delivery.id, now, "redelivered", None)))
            _mark(session.connection(), delivery, "pending", now)
        self.enqueue([delivery], now)
        return delivery

    def redeliverable(self, session: Session, delivery: Delivery, now: datetime) -> bool:
        """Whether redelivering ``delivery`` still makes sense (shown by the API and page)."""
        record = session.scalars(select(Record).where(Record.id == delivery.record_id)).first()
        if record is None:
            return False
        placement = session.get(Placement, (delivery.record_id, delivery.output))
        held = placement.held_revision if placement else None
        return self.may_redeliver(delivery, record, held, now)

    def may_redeliver(
        self, delivery: Delivery, record: convergence.RecordLike, held: int | None, now: datetime
    ) -> bool:
        """:meth:`redeliverable` with the rows already read (a page of many deliveries)."""
        spec = self.outputs.get(delivery.output)
        if spec is None:
            return False
        want = convergence.desired_revision(record, spec.wants, now)
        return convergence.can_redeliver(delivery, held, want)

    def describe(self, session: Session, deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
        """Deliveries as the API and CLI show them: with their attempts and what makes sense.

        At most three queries whatever the page: the attempts, the records, their placements. Only
        finished deliveries need their record (for ``can_redeliver``), and the records'
        fields only where an output of theirs has a routing rule to read: a page of 200
        decoded ~100 documents of a few KB for outputs that take everything.
        """
        now = utcnow()
        history = attempt_history(session, [d.id for d in deliveries])
        finished = [d for d in deliveries if d.status in ("dead", "done")]
        ids = list({d.record_id for d in finished})
        routing = any(getattr(self.outputs.get(d.output), "rule", None) for d in finished)
        fields = Record.fields if routing else null().label("fields")
        # a page holds up to 500: rows, not entities (read-only here), and not the body
        routed = select(*_ROUTED_COLUMNS, fields).where(Record.id.in_(ids))
        records = {r.id: r for r in session.execute(routed)} if ids else {}
        holdings = select(Placement.record_id, Placement.output, Placement.held_revision)
        held = {
            (p.record_id, p.output): p.held_revision
            for p in (session.execute(holdings.where(Placement.record_id.in_(ids))) if ids else ())
        }
        return [
            {
                "id": d.id,
                "record_id": d.record_id,
                "output": d.output,
                "event": d.event,
                "status": d.status,
                "attempts": d.attempts,
                "error": d.error,
                "revision": d.revision,
                "next_attempt_at": (
                    instant_text(d.next_attempt_at) if d.status == "pending" else None
                ),
                "occurred_at": instant_text(d.occurred_at or d.created_at),
                "updated_at": instant_text(d.updated_at),
                # a pending one is looked at anyway: the flag is for finished ones
                "can_redeliver": d.status in ("dead", "done")
                and d.record_id in records
                and self.may_redeliver(
                    d, records[d.record_id], held.get((d.record_id, d.output)), now
                ),
                "history": history[d.id],
            }
            for d in deliveries
        ]

    def set_enabled(self, name: str, enabled: bool, reason: str | None = None) -> int:
        """Turn an output on or off. On: what changed meanwhile goes out, and nothing else.

        A disabled output's deliveries stay pending (kept converged by superseding), so
        catching up is sending those. Returns how many were enqueued.
        """
        if name not in self.refresh():
            raise NotFound(f"no output named {name!r}")
        with transaction(self.sessions) as session:
            set_output_state(session, name, enabled, None if enabled else reason)
        if not enabled:
            return 0
        now = utcnow()
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Delivery.id, Delivery.output).where(
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= now,
                    unindexed(Delivery.output) == name,
                )
            ).all()
        self.feed([(row.id, row.output) for row in rows])
        return len(rows)

    def reconcile(self, name: str) -> dict[str, int]:
        """Bring one output back to what it should hold, repairing only what drifted.

        With ``inventory()`` the output says what it holds: the ledger learns the truth and
        only the missing, stale and should-be-gone records get a delivery. Without it, the
        desired state is replayed under the original ids (receivers drop what they have).
        """
        spec = self.refresh().get(name)
        if spec is None:
            raise NotFound(f"no output named {name!r}")
        inventory = getattr(spec.output, "inventory", None)
        held_now = dict(inventory()) if callable(inventory) else None
        counts = {"missing": 0, "stale": 0, "gone": 0, "resent": 0, "unknown": 0}
        route = Route(spec.name, spec.wants)
        after = 0
        seen: set[str] = set()
        while True:
            with transaction(self.sessions) as session:
                batch, after = _reconcile_batch(session, route, held_now, counts, after, seen)
            self.enqueue(batch)
            if after is None:
                break
        if held_now is not None:
            counts["unknown"] = len(set(held_now) - seen)
        log.info("reconciled %s: %s", name, counts)
        return counts


def _reconcile_batch(
    session: Session,
    route: Route,
    held_now: Mapping[str, int] | None,
    counts: dict[str, int],
    after: int,
    seen: set[str],
) -> tuple[list[Planned | Delivery], int | None]:
    now = utcnow()
    connection = session.connection()
    records = list(
        session.scalars(
            select(Record).where(Record.seq > after).order_by(Record.seq).limit(RECONCILE_BATCH)
        )
    )
    placements = {
        p.record_id: p
        for p in session.scalars(
            select(Placement).where(
                Placement.output == route.name,
                Placement.record_id.in_([r.id for r in records]),
            )
        )
    }
    planned: list[Planned | Delivery] = []
    for record in records:
        seen.add(record.id)
        placement = placements.get(record.id)
        held = placement.held_revision if placement else None
        if held_now is not None:
            truth = held_now.get(record.id)
            if placement is not None and truth != held:
                placement.held_revision = truth  # the ledger learns what the output holds
            held = truth
        want = convergence.desired_revision(record, route.wants, now)
        kind = convergence.needed(held, want)
        if kind is not None:
            counts[{"published": "missing", "updated": "stale", "retracted": "gone"}[kind]] += 1
            session.flush()
            found = converge_pair(connection, record, route, held, now)
            if found is not None:
                planned.append(found)
        elif held_now is None and want is not None:
            resent = _resend_latest(session, record.id, route.name, now)
            if resent is not None:
                counts["resent"] += 1
                planned.append(resent)
    last = records[-1].seq if len(records) == RECONCILE_BATCH else None
    return planned, last


def _resend_latest(session: Session, record_id: str, output: str, now: datetime) -> Delivery | None:
    """The delivery that brought the output its current state, made pending to go again."""
    delivery = session.scalars(
        select(Delivery)
        .where(
            Delivery.record_id == record_id,
            Delivery.output == output,
            unindexed(Delivery.status) == "done",
            Delivery.event != "retracted",
        )
        .order_by(Delivery.updated_at.desc())
        .limit(1)
    ).first()
    if delivery is None:
        return None
    delivery.status, delivery.resend = "pending", True
    delivery.next_attempt_at = delivery.enqueued_at = delivery.updated_at = now
    delivery.lease_until = None
    session.add(Attempt(**_attempt_row(delivery.id, now, "redelivered", None, "reconcile")))
    return delivery


_DONE = (
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .values(
        status="done",
        event=bindparam("b_event"),
        attempts=Delivery.attempts + 1,
        lease_until=None,
        error=None,
        resend=False,
        updated_at=bindparam("b_now"),
    )
)

_CONFIRM = (
    update(Placement)
    .where(
        Placement.record_id == bindparam("r"),
        Placement.output == bindparam("o"),
        Placement.revision <= bindparam("v"),
    )
    .values(state=bindparam("s"), held_revision=bindparam("h"), updated_at=bindparam("t"))
)

_RELEASE = (
    update(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .values(lease_until=None, receives=Delivery.receives - 1)
)
_INSERT_ATTEMPT = insert(Attempt)
_CLOSE = (
    update(Delivery)
    .where(Delivery.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"), lease_until=None, resend=False, updated_at=bindparam("b_now")
    )
)
#: an embargo that ended, an expiry that came (``state`` is unindexed: the ids find the rows,
#: ``ix_records_state_seq`` would walk every record in that state)
_EMBARGO_ENDED = (
    update(Record)
    .where(
        Record.id.in_(bindparam("ids", expanding=True)),
        unindexed(Record.state) == "embargoed",
        Record.published_at <= bindparam("now"),
    )
    .values(state="published")
)
_EXPIRED = (
    update(Record)
    .where(
        Record.id.in_(bindparam("ids", expanding=True)),
        unindexed(Record.state).in_(("published", "embargoed")),
        Record.expires_at <= bindparam("now"),
    )
    .values(state="expired")
)

_MARK = (
    update(Placement)
    .where(Placement.record_id == bindparam("r"), Placement.output == bindparam("o"))
    .values(state=bindparam("s"), updated_at=bindparam("t"))
)


def _confirm(connection: Connection, jobs: Sequence[Job], now: datetime) -> None:
    """The ledger: what each output now holds, as it just confirmed."""
    rows = [
        {
            "r": j.record.id,
            "o": j.delivery.output,
            "v": j.record.revision,
            "s": "retracted" if j.kind == "retracted" else "live",
            "h": None if j.kind == "retracted" else j.record.revision,
            "t": now,
        }
        for j in sorted(jobs, key=lambda job: (job.record.id, job.delivery.output))
    ]
    connection.execute(_CONFIRM, rows)


def _mark(connection: Connection, delivery: Leased | Delivery, state: str, now: datetime) -> None:
    """Where the pair stands for people (failed, pending); what it holds is unchanged."""
    connection.execute(
        _MARK, [{"r": delivery.record_id, "o": delivery.output, "s": state, "t": now}]
    )


def _close(
    connection: Connection, delivery_id: str, status: str, outcome: str, why: str, now: datetime
) -> None:
    """End a delivery without a call to its output, and say why in its history."""
    connection.execute(_CLOSE, {"b_id": delivery_id, "b_status": status, "b_now": now})
    connection.execute(_INSERT_ATTEMPT, [_attempt_row(delivery_id, now, outcome, None, why)])


def _attempt_row(
    delivery_id: str,
    now: datetime,
    outcome: str,
    event: str | None,
    error: str | None = None,
    took: float | None = None,
    raised: DeliveryError | None = None,
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "at": now,
        "outcome": outcome,
        "event": event,
        "status_code": getattr(raised, "status_code", None),
        "error": error[:2000] if error else None,
        "duration_ms": None if took is None else round(took * 1000),
    }


def _advance_state(connection: Connection, records: Sequence[Loaded], now: datetime) -> None:
    """An embargo that ended makes the record published; an expiry that came, expired.

    Only records whose state, as just read, moves are written (nearly always none); the
    statements check the state again, so a record that changed meanwhile is left alone.
    """
    ended = {r.id for r in records if r.state == "embargoed" and _passed(r.published_at, now)}
    live = ("published", "embargoed")
    expired = {r.id for r in records if r.state in live and _passed(r.expires_at, now)}
    if ended:
        connection.execute(_EMBARGO_ENDED, {"ids": sorted(ended), "now": now})
    if expired:
        connection.execute(_EXPIRED, {"ids": sorted(expired), "now": now})


def _passed(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now


def set_output_state(session: Session, name: str, enabled: bool, reason: str | None) -> None:
    state = session.get(OutputState, name)
    if state is None:
        session.add(OutputState(name=name, enabled=enabled, reason=reason, updated_at=utcnow()))
    else:
        state.enabled, state.reason, state.updated_at = enabled, reason, utcnow()


_HISTORY_COLUMNS = (
    Attempt.delivery_id,
    Attempt.at,
    Attempt.outcome,
    Attempt.event,
    Attempt.status_code,
    Attempt.error,
    Attempt.duration_ms,
)


def attempt_history(session: Session, delivery_ids: Sequence[str]) -> dict[str, list[dict]]:
    """Each delivery's attempts, oldest first, as the API shows them."""
    history: dict[str, list[dict]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return history
    rows = session.execute(
        select(*_HISTORY_COLUMNS)
        .where(Attempt.delivery_id.in_(list(delivery_ids)))
        .order_by(Attempt.id)
    )
    for row in rows:
        history[row.delivery_id].append(
            {
                "at": instant_text(row.at),
                "outcome": row.outcome,
                "event": row.event,
                "status_code": row.status_code,
                "error": row.error,
                "duration_ms": row.duration_ms,
            }
        )
    return history


def _exc_info(raised: BaseException | None) -> Any:
    if raised is None or raised.__traceback__ is None:
        return None
    return (type(raised), raised, raised.__traceback__)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
