"""Running deliveries: lease, hand to the output, then done, retry or dead.

The deliveries table is the source of truth; huey only carries "look at delivery X now".
huey is at most once (a task taken by a killed worker is gone), so a worker leases a
delivery before running it, and the sweeper re-enqueues deliveries whose lease expired or
that were never enqueued. A delivery that keeps killing its worker (a poison job) ends dead
after ``max_receives`` receives without a result.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from huey import Huey
from sqlalchemy import Connection, Engine, and_, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from publisher.background import Feeder, call_with_timeout
from publisher.config import DEFAULTS
from publisher.db import transaction
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
        for delivery_id in delivery_ids:
            try:
                self._task(delivery_id)
            except Exception:  # noqa: BLE001 - the sweeper will enqueue it
                log.warning("enqueue failed; the sweeper will retry", exc_info=True)

    def _feeder(self) -> Feeder:
        if self._feeder_thread is None or not self._feeder_thread.usable():
            self._feeder_thread = Feeder(self.feed)
            self._feeder_thread.start()
        return self._feeder_thread

    # -- one delivery -------------------------------------------------------------------

    def run_delivery(self, delivery_id: str) -> None:
        """The huey task: lease, deliver, settle. Safe to receive twice."""
        with log_context(delivery_id=delivery_id):
            self._run(delivery_id)

    def _run(self, delivery_id: str) -> None:
        now = utcnow()
        if not self._lease(delivery_id, now):
            return
        with self.sessions() as session:
            delivery = session.get(Delivery, delivery_id)
            record = session.scalars(select(Record).where(Record.id == delivery.record_id)).one()
        with log_context(request_id=delivery.request_id, record_id=delivery.record_id):
            self._deliver(delivery, record)

    def _deliver(self, delivery: Delivery, record: Record) -> None:
        if delivery.receives - delivery.attempts > self.max_receives:
            self._settle_failure(delivery, "worker died during delivery too often", dead=True)
            return
        spec = self.outputs.get(delivery.output)
        if spec is None:
            self._settle_failure(delivery, f"no output named {delivery.output!r}", dead=True)
            return
        if delivery.output in self.disabled_outputs():
            self._settle_failure(delivery, "output is disabled", dead=True)
            return
        self._attempt(spec, delivery, record)

    def _lease(self, delivery_id: str, now: datetime) -> bool:
        """Take the delivery for ``lease_seconds`` unless another worker holds it or a
        sibling delivery of the same record and output (which keeps their order)."""
        sibling = aliased(Delivery)
        busy = exists().where(
            sibling.record_id == Delivery.record_id,
            sibling.output == Delivery.output,
            sibling.id != Delivery.id,
            sibling.status == "pending",
            sibling.lease_until > now,
        )
        statement = (
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now + timedelta(seconds=1),
                (Delivery.lease_until.is_(None)) | (Delivery.lease_until < now),
                ~busy,
            )
            .values(
                lease_until=now + timedelta(seconds=self.lease_seconds),
                receives=Delivery.receives + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        with transaction(self.sessions) as session:
            target = (
                session.connection()
                .execute(
                    select(Delivery.record_id, Delivery.output).where(Delivery.id == delivery_id)
                )
                .first()
            )
            if target is None:
                return False
            # siblings take this row lock first, so on PostgreSQL two of them cannot both
            # see "no sibling busy" (SQLite's BEGIN IMMEDIATE serialises them already)
            session.connection().execute(
                select(Placement.record_id)
                .where(Placement.record_id == target.record_id, Placement.output == target.output)
                .with_for_update()
            )
            if session.connection().execute(statement).rowcount == 1:
                return True
            waiting = (
                session.connection()
                .execute(
                    select(Delivery.id).where(
                        Delivery.id == delivery_id,
                        Delivery.status == "pending",
                        Delivery.next_attempt_at <= now + timedelta(seconds=1),
                        (Delivery.lease_until.is_(None)) | (Delivery.lease_until < now),
                    )
                )
                .first()
            )
        if waiting is not None:  # due, but a sibling is running: look again shortly
            self._task.schedule((delivery_id,), delay=SIBLING_WAIT)
        return False

    def _attempt(self, spec: OutputSpec, delivery: Delivery, record: Record) -> None:
        event = Event(
            kind=delivery.event,  # type: ignore[arg-type]
            delivery_id=delivery.id,
            record_id=record.id,
            revision=record.revision,
            occurred_at=delivery.created_at,
        )
        view = self._view(spec, record)
        method = spec.output.retract if event.kind == "retracted" else spec.output.publish
        error = call_with_timeout(method, (view, event), spec.timeout)
        if error is None:
            self._settle_success(delivery, event)
            return
        if isinstance(error, DeliveryError):
            self._settle_failure(delivery, str(error), error=error, spec=spec)
        else:
            self._settle_failure(delivery, _describe(error), spec=spec)

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

    def _settle_success(self, delivery: Delivery, event: Event) -> None:
        now = utcnow()
        state = "retracted" if delivery.event == "retracted" else "live"
        with transaction(self.sessions) as session:
            session.connection().execute(
                update(Delivery)
                .where(Delivery.id == delivery.id)
                .values(
                    status="done",
                    attempts=Delivery.attempts + 1,
                    lease_until=None,
                    error=None,
                    updated_at=now,
                )
            )
            self._place(session, delivery, state, now)
            _advance_state(session, delivery.record_id, now)
        self._hook(
            "delivery_succeeded", output=delivery.output, record_id=delivery.record_id, event=event
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
                self._place(session, delivery, "failed", now)
            if error is not None and error.disable_output:
                disable_output(session, delivery.output, message)
        if not dead:
            self._task.schedule((delivery.id,), eta=values["next_attempt_at"])
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

    def _place(self, session: Session, delivery: Delivery, state: str, now: datetime) -> None:
        session.connection().execute(
            update(Placement)
            .where(
                Placement.record_id == delivery.record_id,
                Placement.output == delivery.output,
                Placement.revision <= delivery.revision,
            )
            .values(state=state, updated_at=now)
        )

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
            self._place(session, delivery, "pending", now)
        self.enqueue([delivery], now)
        return delivery


def _advance_state(session: Session, record_id: str, now: datetime) -> None:
    """An embargo that ended makes the record published; an expiry that came, expired."""
    session.connection().execute(
        update(Record)
        .where(Record.id == record_id, Record.state == "embargoed", Record.published_at <= now)
        .values(state="published")
    )
    session.connection().execute(
        update(Record)
        .where(
            Record.id == record_id,
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
