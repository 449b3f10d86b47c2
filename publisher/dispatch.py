"""Running deliveries: lease, hand to the output, then done, retry or dead.

The deliveries table is the source of truth; huey only carries "look at deliveries X, Y, Z
now" (up to ``batch_size`` ids a message, so a busy queue moves in batches: one lease and one
settle transaction a message, and one call of an output's ``deliver_many`` for its share).
huey is at most once (a task taken by a killed worker is gone), so a worker leases
deliveries before running them, and the sweeper re-enqueues deliveries whose lease expired
or that were never enqueued. A delivery that keeps killing its worker (a poison job) ends
dead after ``max_receives`` receives without a result.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from huey import Huey
from sqlalchemy import Connection, Engine, and_, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from publisher.background import Feeder, call_with_timeout
from publisher.config import DEFAULTS
from publisher.db import transaction
from publisher.leases import lease, renew
from publisher.logs import log_context
from publisher.models import Delivery, OutputState, Placement, Record, utcnow
from publisher.outputs import DeliveryError, Event, Output, OutputRecord
from publisher.records import public_fields
from publisher.store import Planned, Route

log = logging.getLogger("publisher.dispatch")
TASK_NAME = "publisher.deliver"
SWEEP_BATCH = 1000
SIBLING_WAIT = 2.0  # seconds before a delivery held back by a running sibling looks again
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
class Dispatcher:
    """Owns the huey task that runs deliveries, and the sweeper."""

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
    #: other sweeps to run with this one (the webhook inbox adds its own); each returns a count
    also_sweep: list[Callable[[], int]] = field(default_factory=list)
    background_enqueue: bool = False
    _task: Any = field(init=False, default=None)
    _feeder_thread: Feeder | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._task = self.huey.task(name=TASK_NAME, retries=0)(self.run_delivery)

    @property
    def engine(self) -> Engine:
        return self.sessions.kw["bind"]

    def routes(self, connection: Connection | None = None) -> list[Route]:
        """The enabled outputs; pass the caller's open transaction to read them there."""
        disabled = self.disabled_outputs(connection)
        return [Route(s.name, s.wants) for s in self.outputs.values() if s.name not in disabled]

    def disabled_outputs(self, connection: Connection | None = None) -> set[str]:
        # rows, not scalars(): scalars() rebuilds the result's key map on every call
        if connection is not None:
            return {name for (name,) in connection.execute(_DISABLED)}
        # a plain connection, not a session: this runs on every delivery
        with self.engine.connect() as own:
            return {name for (name,) in own.execute(_DISABLED)}

    def enqueue(
        self, deliveries: Sequence[Planned | Delivery], now: datetime | None = None
    ) -> None:
        """Feed the queue after the commit; a failure here is repaired by the sweeper.

        With ``background_enqueue`` (``serve`` and ``wsgi.py`` turn it on) the ids go to a
        feeder thread, so a request costs one durable commit and no queue round trip.
        """
        now = now or utcnow()
        due = [d.id for d in deliveries if d.next_attempt_at <= now]
        if not due:
            return
        if self.background_enqueue:
            self._feeder().put(due)
        else:
            self.feed(due)

    def feed(self, delivery_ids: Sequence[str]) -> None:
        """Enqueue ``delivery_ids``, ``batch_size`` to a message."""
        ids = list(delivery_ids)
        for start in range(0, len(ids), max(1, self.batch_size)):
            try:
                self._task(ids[start : start + self.batch_size])
            except Exception:  # noqa: BLE001 - the sweeper will enqueue them
                log.warning("enqueue failed; the sweeper will retry", exc_info=True)

    def _feeder(self) -> Feeder:
        if self._feeder_thread is None or not self._feeder_thread.usable():
            self._feeder_thread = Feeder(self.feed)
            self._feeder_thread.start()
        return self._feeder_thread

    # -- running a message's deliveries ---------------------------------------------------

    def run_delivery(self, delivery_ids: str | Sequence[str]) -> None:
        """The huey task: lease, deliver, settle a batch of deliveries. Safe to receive twice.

        A message carries up to ``batch_size`` ids (one id in messages of older versions).
        Each output gets its share of the batch in one call when it has ``deliver_many``.
        """
        ids = [delivery_ids] if isinstance(delivery_ids, str) else list(delivery_ids)
        leased, waiting = lease(self.sessions, ids, utcnow(), self.lease_seconds)
        if waiting:  # due, but a sibling is running: look again shortly
            self._task.schedule((waiting,), delay=SIBLING_WAIT)
        if leased:
            self._run(Held(leased))

    def _run(self, held: Held) -> None:
        with self.sessions() as session:
            jobs = session.execute(
                select(Delivery, Record)
                .join(Record, Record.id == Delivery.record_id)
                .where(Delivery.id.in_(held.ids))
                .order_by(Delivery.created_at, Delivery.id)
            ).all()
        disabled = self.disabled_outputs()
        by_output: dict[str, list[tuple[Delivery, Record]]] = {}
        for delivery, record in jobs:
            refusal = self._refusal(delivery, disabled)
            if refusal:
                self._settle_failure(delivery, refusal, dead=True)
            else:
                by_output.setdefault(delivery.output, []).append((delivery, record))
        for name, share in by_output.items():
            self._attempt(self.outputs[name], share, held)

    def _refusal(self, delivery: Delivery, disabled: set[str]) -> str | None:
        """Why a leased delivery ends dead without reaching its output, if it does."""
        if delivery.receives - delivery.attempts > self.max_receives:
            return "worker died during delivery too often"
        if delivery.output not in self.outputs:
            return f"no output named {delivery.output!r}"
        if delivery.output in disabled:
            return "output is disabled"
        return None

    def _attempt(self, spec: OutputSpec, share: list[tuple[Delivery, Record]], held: Held) -> None:
        items = [(self._view(spec, record), _event(delivery, record)) for delivery, record in share]
        outcomes = self._call(spec, share, items, held)
        succeeded = [
            (delivery, event)
            for (delivery, _), (_, event), outcome in zip(share, items, outcomes, strict=True)
            if outcome is None
        ]
        if succeeded:
            self._settle_success(succeeded)
        for (delivery, _), outcome in zip(share, outcomes, strict=True):
            if isinstance(outcome, DeliveryError):
                self._settle_failure(delivery, str(outcome), error=outcome, spec=spec)
            elif outcome is not None:
                self._settle_failure(delivery, _describe(outcome), spec=spec)

    def _call(
        self,
        spec: OutputSpec,
        share: list[tuple[Delivery, Record]],
        items: list[tuple[OutputRecord, Event]],
        held: Held,
    ) -> list[BaseException | None]:
        """One outcome per item: None for delivered, else what went wrong."""
        many = getattr(spec.output, "deliver_many", None)
        if many is None:
            return self._call_each(spec, share, items, held)
        answer: list[BaseException | None] = []
        with log_context(output=spec.name, deliveries=len(items)):
            error = call_with_timeout(lambda: answer.extend(many(items)), (), spec.timeout)
        if error is None and len(answer) != len(items):
            error = RuntimeError(f"deliver_many gave {len(answer)} outcomes for {len(items)}")
        return [error] * len(items) if error is not None else answer

    def _call_each(
        self,
        spec: OutputSpec,
        share: list[tuple[Delivery, Record]],
        items: list[tuple[OutputRecord, Event]],
        held: Held,
    ) -> list[BaseException | None]:
        """One call per item, ``parallel_calls`` at a time (an output without
        ``deliver_many`` is usually a network call: a batch must not make it sequential).

        The items are distinct records, so their order does not matter. While the calls
        run, the lease of what the message still holds (of every output) is renewed, so no
        other worker takes those over meanwhile.
        """
        workers = max(1, min(self.parallel_calls, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="publisher-call") as pool:
            futures = [
                pool.submit(self._call_one, spec, delivery, item)
                for (delivery, _), item in zip(share, items, strict=True)
            ]
            while wait(futures, timeout=self.lease_seconds / 4).not_done:
                self._keep(held)
        return [future.result() for future in futures]

    def _keep(self, held: Held) -> None:
        if time.monotonic() - held.since > self.lease_seconds / 2:
            renew(self.sessions, held.ids, utcnow(), self.lease_seconds)
            held.since = time.monotonic()

    def _call_one(
        self, spec: OutputSpec, delivery: Delivery, item: tuple[OutputRecord, Event]
    ) -> BaseException | None:
        view, event = item
        method = spec.output.retract if event.kind == "retracted" else spec.output.publish
        context = {"delivery_id": delivery.id, "record_id": delivery.record_id}
        with log_context(request_id=delivery.request_id, **context):
            return call_with_timeout(method, item, spec.timeout)

    def _view(self, spec: OutputSpec, record: Record) -> OutputRecord:
        protected = self.opener(record.fields) if spec.output.accepts_protected else None
        return OutputRecord(
            id=record.id,
            revision=record.revision,
            fields=public_fields(record.fields),
            body=record.body,
            secured_status=record.secured_status,
            protected=protected,
        )

    # -- settling -------------------------------------------------------------------------

    def _settle_success(self, succeeded: list[tuple[Delivery, Event]]) -> None:
        """Mark a batch done in one transaction, then tell the observers."""
        now = utcnow()
        with transaction(self.sessions) as session:
            session.connection().execute(
                update(Delivery)
                .where(Delivery.id.in_([delivery.id for delivery, _ in succeeded]))
                .values(
                    status="done",
                    attempts=Delivery.attempts + 1,
                    lease_until=None,
                    error=None,
                    updated_at=now,
                )
            )
            self._place(session, [(d, _ledger_state(d)) for d, _ in succeeded], now)
            _advance_state(session, {delivery.record_id for delivery, _ in succeeded}, now)
        for delivery, event in succeeded:
            self._hook(
                "delivery_succeeded",
                output=delivery.output,
                record_id=delivery.record_id,
                event=event,
            )

    def _settle_failure(
        self,
        delivery: Delivery,
        message: str,
        *,
        error: DeliveryError | None = None,
        spec: OutputSpec | None = None,
        dead: bool = False,
    ) -> None:
        now = utcnow()
        attempts = delivery.attempts + 1
        schedule = spec.retry_schedule if spec else ()
        dead = dead or (error is not None and error.permanent) or attempts >= len(schedule)
        values: dict[str, Any] = {
            "attempts": attempts,
            "error": message[:2000],
            "lease_until": None,
            "updated_at": now,
        }
        if dead:
            values["status"] = "dead"
        else:
            delay = self._delay(schedule[attempts], error)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            values["enqueued_at"] = now
        with transaction(self.sessions) as session:
            session.connection().execute(
                update(Delivery).where(Delivery.id == delivery.id).values(**values)
            )
            if dead:
                self._place(session, [(delivery, "failed")], now)
            if error is not None and error.disable_output:
                disable_output(session, delivery.output, message)
        if not dead:
            self._task.schedule(([delivery.id],), eta=values["next_attempt_at"])
        log.warning(
            "delivery failed",
            extra={
                "delivery_id": delivery.id,
                "output": delivery.output,
                "record_id": delivery.record_id,
                "request_id": delivery.request_id,
                "dead": dead,
            },
        )
        event = Event(delivery.event, delivery.id, delivery.record_id, delivery.revision, now)  # type: ignore[arg-type]
        self._hook(
            "delivery_failed",
            output=delivery.output,
            record_id=delivery.record_id,
            event=event,
            error=message,
            dead=dead,
        )

    def _delay(self, base: float, error: DeliveryError | None) -> float:
        if error is not None and error.retry_after is not None:
            return max(0.0, float(error.retry_after))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def _place(
        self, session: Session, placed: Sequence[tuple[Delivery, str]], now: datetime
    ) -> None:
        """Record in the ledger what each delivery left live, retracted or failed."""
        rows = [
            {"r": d.record_id, "o": d.output, "v": d.revision, "s": state, "t": now}
            for d, state in sorted(placed, key=lambda pair: (pair[0].record_id, pair[0].output))
        ]
        session.connection().execute(_PLACE, rows)

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
        commit and queue, and embargoed deliveries whose time has come. Returns the count.
        """
        now = now or utcnow()
        grace = self.lease_seconds if grace is None else grace
        stale = now - timedelta(seconds=grace)
        due = and_(
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            (Delivery.lease_until.is_(None)) | (Delivery.lease_until < now),
            (Delivery.enqueued_at.is_(None)) | (Delivery.enqueued_at < stale),
        )
        swept = 0
        while True:
            with transaction(self.sessions) as session:
                ids = list(session.scalars(select(Delivery.id).where(due).limit(SWEEP_BATCH)))
                if ids:
                    session.connection().execute(
                        update(Delivery)
                        .where(Delivery.id.in_(ids))
                        .values(enqueued_at=now)
                        .execution_options(synchronize_session=False)
                    )
            self.feed(ids)
            swept += len(ids)
            if len(ids) < SWEEP_BATCH:
                return swept + sum(extra() for extra in self.also_sweep)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Make a dead or done delivery pending again, same id, fresh schedule."""
        from publisher.errors import NotFound

        now = utcnow()
        with transaction(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                raise NotFound(f"no delivery with id {delivery_id!r}")
            delivery.status = "pending"
            delivery.attempts = 0
            delivery.receives = 0
            delivery.lease_until = None
            delivery.next_attempt_at = now
            delivery.enqueued_at = now
            delivery.updated_at = now
            self._place(session, [(delivery, "pending")], now)
        self.enqueue([delivery], now)
        return delivery


_PLACE = (
    update(Placement)
    .where(
        Placement.record_id == bindparam("r"),
        Placement.output == bindparam("o"),
        Placement.revision <= bindparam("v"),
    )
    .values(state=bindparam("s"), updated_at=bindparam("t"))
)


def _ledger_state(delivery: Delivery) -> str:
    return "retracted" if delivery.event == "retracted" else "live"


def _event(delivery: Delivery, record: Record) -> Event:
    return Event(
        kind=delivery.event,  # type: ignore[arg-type]
        delivery_id=delivery.id,
        record_id=record.id,
        revision=record.revision,
        occurred_at=delivery.created_at,
    )


def _advance_state(session: Session, record_ids: set[str], now: datetime) -> None:
    """An embargo that ended makes the record published; an expiry that came, expired."""
    ids = sorted(record_ids)
    session.connection().execute(
        update(Record)
        .where(Record.id.in_(ids), Record.state == "embargoed", Record.published_at <= now)
        .values(state="published")
    )
    session.connection().execute(
        update(Record)
        .where(
            Record.id.in_(ids),
            Record.state.in_(("published", "embargoed")),
            Record.expires_at <= now,
        )
        .values(state="expired")
    )


def disable_output(session: Session, name: str, reason: str) -> None:
    state = session.get(OutputState, name)
    if state is None:
        session.add(OutputState(name=name, enabled=False, reason=reason, updated_at=utcnow()))
    else:
        state.enabled, state.reason, state.updated_at = False, reason, utcnow()


def enable_output(session: Session, name: str) -> None:
    state = session.get(OutputState, name)
    if state is not None:
        state.enabled, state.reason, state.updated_at = True, None, utcnow()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
