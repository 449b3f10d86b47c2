"""The webhook inbox: verified payloads committed raw, then taken in by the worker.

A verified webhook is committed raw to ``inbox`` before the sender gets its ``202``:
senders want a fast 2xx and retry otherwise, so parsing, validating and opening happen
afterwards, in the huey task ``publisher.inbox``, through the same :class:`Intake` as the
API. Concurrent requests of one process share a transaction and its durable commit
(:mod:`publisher.groupcommit`); each is answered only once that commit succeeded, and all of
them get a ``503`` if it failed. The unique ``(source, webhook_id)`` makes a repeated
delivery a no-op (``INSERT ... ON CONFLICT DO NOTHING``, so a repeat does not fail the
other rows of its batch); inbox rows are kept ``webhooks.remember_ids_days`` (at least
four, longer than the Standard Webhooks retry schedule) so that a late retry is still
recognised.

An inbox row moves ``pending -> processing -> done | quarantined``. The claim is an atomic
``UPDATE ... WHERE status = 'pending'``, so a task enqueued twice runs once. A message's rows
are claimed, stored and settled together, three transactions for the lot
(docs/decisions/inbox-batches.md). :meth:`sweep`
re-enqueues rows left ``pending`` (a crash between commit and enqueue) and frees rows left
``processing`` by a killed worker.

What cannot be taken in goes to ``quarantine`` with the reason and the field errors, never
a secret or decrypted plaintext (:mod:`publisher.quarantine`). An operator fixes the
configuration or schema and replays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from publisher.background import Feeding
from publisher.db import transaction, unindexed, write_connection
from publisher.errors import Conflict, InvalidRecord, PublisherError, Unavailable
from publisher.groupcommit import CommitFailed
from publisher.inboxwriter import InboxWriter
from publisher.intake import STORE_REFUSED, Intake, ItemResult, Submission, is_outage
from publisher.models import InboxItem, QuarantineItem, utcnow
from publisher.quarantine import get_quarantined, prune_quarantine, quarantine_values
from publisher.services import Services
from publisher.signatures import Verifier

log = logging.getLogger("publisher.inbox")

TASK_NAME = "publisher.inbox"
BATCH_TASK_NAME = "publisher.inbox.batch"  # the new rows of one group commit, one message
#: seconds the web process's feeder gathers new inbox ids into one queue message: a queue
#: write is a durable commit too, and costs a busy web process as much CPU as a request
FEED_LINGER = 0.05
SWEEP_GRACE = 5.0  # seconds a pending row may wait for its first task before the sweeper acts
MIN_REMEMBER_DAYS = 4  # Standard Webhooks senders retry for about three days
PRUNE_EVERY = 3600.0  # seconds between prunes run by the sweeper
DEFAULT_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Received:
    """What the inbox did with a verified delivery."""

    id: int | None
    duplicate: bool


@dataclass
class Replayed:
    """The outcome of replaying a quarantined item."""

    id: int
    status: str  # replayed (anything else is an InvalidRecord)
    items: list[dict[str, Any]] = field(default_factory=list)


class InboxProcessor:
    """Receives verified webhooks, runs the ``publisher.inbox`` task, replays the quarantine.

    Built once per app (and per worker); constructing it registers the huey task.
    """

    def __init__(self, services: Services, intake: Intake) -> None:
        self.services = services
        self.intake = intake
        self.sessions = services.sessions
        self.settings = services.settings
        self.verifier = Verifier(services.sessions, services.settings)
        self._task = services.huey.task(name=TASK_NAME, retries=0)(self.process)
        self._batch_task = services.huey.task(name=BATCH_TASK_NAME, retries=0)(self.process_batch)
        self._sent: dict[int, float] = {}  # inbox id -> when this sweeper last enqueued it
        background = self.settings["enqueue"] == "background"  # serve and wsgi: off the request
        self._after_commit = Feeding(self._enqueue_many, background=background, linger=FEED_LINGER)
        most = self.settings["webhooks"]["group_commit_max"]
        self.writer = InboxWriter(services.kept, most, self._after_commit)
        self._held: dict[int, float] = {}  # inbox id -> when this sweeper saw it processing
        self._pruned_at = 0.0

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self,
        source: str,
        webhook_id: str,
        payload: bytes,
        content_type: str | None,
        request_id: str | None = None,
    ) -> Received:
        """Commit the raw payload (with those of concurrent requests), then enqueue it.

        A repeated webhook-id is a duplicate; a failed commit is :class:`Unavailable` (503:
        the sender retries), never a 202.
        """
        row = {
            "source": source,
            "webhook_id": webhook_id,
            "content_type": (content_type or DEFAULT_CONTENT_TYPE)[:200],
            "payload": payload,
            "status": "pending",
            "request_id": request_id,
            "received_at": utcnow(),
        }
        try:
            item_id = self.writer.write(row)
        except CommitFailed as exc:
            log.error("inbox commit failed: %s", type(exc.__cause__).__name__)
            raise Unavailable("the inbox is unavailable; retry later") from None
        if item_id is None:
            log.info("webhook %r from %r is a repeat; ignored", webhook_id, source)
            return Received(None, duplicate=True)
        return Received(item_id, duplicate=False)

    def _enqueue_many(self, item_ids: Sequence[int]) -> None:
        """One queue message for the rows of one commit (a queue write costs a commit too)."""
        if len(item_ids) == 1:
            self._enqueue(item_ids[0])
            return
        try:
            self._batch_task(list(item_ids))
        except Exception:  # noqa: BLE001 - committed already: the sweeper will enqueue them
            log.warning("could not enqueue %d inbox items; the sweeper will", len(item_ids))

    def _enqueue(self, item_id: int) -> None:
        try:
            self._task(item_id)
        except Exception:  # noqa: BLE001 - committed already: the sweeper will enqueue it
            log.warning("could not enqueue inbox item %s; the sweeper will", item_id)

    # -- processing (the huey tasks) ------------------------------------------------------

    def process(self, item_id: int) -> str | None:
        """Take one inbox row in through Intake; its final status (None if taken already)."""
        return self.process_batch([item_id])[0]

    def process_batch(self, item_ids: list[int]) -> list[str | None]:
        """Take inbox rows in with one claim, one store transaction and one settle for all.

        Each row's final status; None for a row another task took, or one left to the
        sweeper. A database outage puts the claimed rows back to ``pending`` (the sweeper
        sends them again); anything else that fails a batch is retried row by row, so one
        row's trouble ends in its own quarantine, not in its neighbours'.
        """
        try:
            rows = self._claim(item_ids)
        except SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            rows = []  # still pending: the sweeper sends them again
        if not rows:
            return [None] * len(item_ids)
        try:
            taken = self._take(rows)
        except Exception as exc:  # noqa: BLE001 - a bug must not loop forever on one payload
            if isinstance(exc, SQLAlchemyError) and is_outage(exc):
                self._release([row.id for row in rows])
                log.warning("%d inbox items failed on the database; the sweeper will retry",
                            len(rows))  # fmt: skip
                return [None] * len(item_ids)
            if len(rows) > 1:  # which row is it? each on its own
                self._release([row.id for row in rows])
                return [status for i in item_ids for status in self.process_batch([i])]
            taken = {rows[0].id: _refused(rows[0], exc)}
        self._settle(rows, taken)
        return [taken[i].status if i in taken else None for i in item_ids]

    def _claim(self, item_ids: Sequence[int]) -> list[Any]:
        """The rows this task takes: the ``pending`` ones (a task enqueued twice runs once)."""
        with write_connection(self.services.engine) as connection:
            return list(connection.execute(_CLAIM, {"ids": list(item_ids)}))

    def _release(self, item_ids: Sequence[int]) -> None:
        with write_connection(self.services.engine) as connection:
            connection.execute(_RELEASE, {"ids": list(item_ids)})

    def _take(self, rows: Sequence[Any]) -> dict[int, Taken]:
        """Parse every row, then store every record of them through Intake at once."""
        taken: dict[int, Taken] = {}
        parsed: list[tuple[Any, bool]] = []
        submissions: list[Submission] = []
        for row in rows:
            try:
                body = self.intake.parse(row.payload, row.content_type, source=row.source)
            except PublisherError as exc:  # malformed, unsupported type, batch too large
                errors = exc.errors or {"_payload": [exc.message]}
                taken[row.id] = Taken("quarantined", _quarantine(row, exc.code, errors))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not loop forever on one payload
                taken[row.id] = _refused(row, exc)
                continue
            parsed.append((row, body.batch))
            submissions.append(Submission(body.items, row.source, row.request_id, body.text_bound))
        answers = self.intake.take_many(submissions) if submissions else []
        for (row, batch), results in zip(parsed, answers, strict=True):
            taken[row.id] = _verdict(row, results, batch)
        return taken

    def _settle(self, rows: Sequence[Any], taken: Mapping[int, Taken]) -> None:
        """Every row's final status (and quarantine entry) in one transaction."""
        by_status: dict[str, list[int]] = {}
        for row_id, outcome in taken.items():
            by_status.setdefault(outcome.status, []).append(row_id)
        forget = [row_id for row_id, outcome in taken.items() if outcome.forget]
        with transaction(self.sessions) as session:
            session.add_all(o.quarantined for o in taken.values() if o.quarantined is not None)
            for status, ids in by_status.items():
                session.execute(_SETTLE, {"ids": ids, "status": status})
            if forget:  # a replay of a purged record: keep none of it
                session.execute(_FORGET, {"ids": forget})
        for row in rows:
            if row.id in taken and taken[row.id].status == "quarantined":
                log.warning("inbox item %s from %r quarantined", row.id, row.source)

    # -- the sweeper and retention ---------------------------------------------------------

    def sweep(self, now: datetime | None = None, grace: float = SWEEP_GRACE) -> int:
        """Re-enqueue pending rows older than ``grace`` s, free stuck ones; returns the count.

        A row this sweeper enqueued is not enqueued again within the lease, so a long queue
        is not flooded with copies (copies are harmless: the claim runs a row once).
        """
        now = now or utcnow()
        clock = time.monotonic()
        lease = self.settings["delivery"]["lease_seconds"]
        pending, processing = self._open_rows(now - timedelta(seconds=grace))
        self._sent = {i: t for i, t in self._sent.items() if i in pending}
        self._held = {i: self._held.get(i, clock) for i in processing}
        stuck = [i for i, seen in self._held.items() if clock - seen >= lease]
        if stuck:
            with transaction(self.sessions) as session:
                session.execute(
                    update(InboxItem)
                    .where(InboxItem.id.in_(stuck), unindexed(InboxItem.status) == "processing")
                    .values(status="pending")
                )
        due = sorted({i for i in pending if clock - self._sent.get(i, -lease) >= lease} | {*stuck})
        for item_id in due:
            self._sent[item_id] = clock
            self._held.pop(item_id, None)
        # batches, as the web process sends them: a backlog re-sent one row a message would
        # cost the worker a claim, a store and a settle for every row (inbox-batches.md)
        most = max(1, int(self.settings["webhooks"]["group_commit_max"]))
        for start in range(0, len(due), most):
            self._enqueue_many(due[start : start + most])
        if clock - self._pruned_at >= PRUNE_EVERY or not self._pruned_at:
            self._pruned_at = clock
            self.prune(now)
        return len(due)

    def _open_rows(self, before: datetime) -> tuple[set[int], set[int]]:
        with self.sessions() as session:
            rows = session.execute(
                select(InboxItem.id, InboxItem.status)
                .where(InboxItem.status.in_(("pending", "processing")))
                .where(InboxItem.received_at <= before)
                .order_by(InboxItem.id)
                .limit(1000)
            ).all()
        pending = {i for i, status in rows if status == "pending"}
        return pending, {i for i, status in rows if status == "processing"}

    def remember_days(self) -> float:
        days = self.settings["webhooks"]["remember_ids_days"]
        return max(days, MIN_REMEMBER_DAYS)

    def quarantine_days(self) -> float:
        return self.settings["quarantine_days"]

    def prune(self, now: datetime | None = None, quarantine_days: float | None = None) -> int:
        """Forget finished inbox rows and old quarantine items; returns how many went."""
        now = now or utcnow()
        days = self.quarantine_days() if quarantine_days is None else quarantine_days
        inbox_before = now - timedelta(days=self.remember_days())
        with transaction(self.sessions) as session:
            inbox = session.execute(
                delete(InboxItem).where(
                    InboxItem.status.in_(("done", "quarantined")),
                    InboxItem.received_at < inbox_before,
                )
            ).rowcount
            held = prune_quarantine(session, now - timedelta(days=days))
        return int(inbox or 0) + held

    # -- the quarantine -------------------------------------------------------------------

    def replay(self, item_id: int) -> Replayed:
        """Run a quarantined payload through Intake again (after a configuration fix).

        Accepted: the item is marked replayed. Still invalid, or still held by the source's
        ``secured`` policy: it stays, with the new errors, no new item is made, and
        :class:`InvalidRecord` (``422``) says why.
        """
        with self.sessions() as session:
            row = get_quarantined(session, item_id)
        if row.replayed_at is not None:
            raise Conflict(f"quarantine item {item_id} was already replayed")
        try:
            results, batch = self.intake.submit(
                row.payload, row.content_type, source=row.source, refuse_held=True
            )
        except PublisherError as exc:
            self._still_failing(item_id, exc.code, exc.errors or {"_payload": [exc.message]})
            raise
        failed = [(i, r) for i, r in enumerate(results) if r.status == "invalid"]
        if failed:
            errors = _item_errors(failed, batch)
            self._still_failing(item_id, _reason(failed[0][1]), errors)
            raise InvalidRecord("the quarantined payload is still not acceptable", errors=errors)
        with transaction(self.sessions) as session:
            session.execute(
                update(QuarantineItem)
                .where(QuarantineItem.id == item_id)
                .values(replayed_at=utcnow())
            )
        log.info("quarantine item %s replayed", item_id)
        return Replayed(item_id, "replayed", [r.to_dict() for r in results])

    def _still_failing(self, item_id: int, reason: str, errors: Mapping[str, list[str]]) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                update(QuarantineItem)
                .where(QuarantineItem.id == item_id)
                .values(reason=reason[:40], errors=dict(errors))
            )


@dataclass(frozen=True)
class Taken:
    """What became of one inbox row: its status, and its quarantine entry if it has one."""

    status: str  # done, quarantined
    quarantined: QuarantineItem | None = None
    forget: bool = False  # a replay of a purged record: its payload is not kept


_IDS = bindparam("ids", expanding=True)
#: built once: the worker runs them for every batch of rows (store.py on prebuilt statements);
#: by id, whatever the statistics say of how many rows are pending (db.unindexed)
_CLAIM = (
    update(InboxItem)
    .where(InboxItem.id.in_(_IDS), unindexed(InboxItem.status) == "pending")
    .values(status="processing")
    .returning(
        InboxItem.id,
        InboxItem.source,
        InboxItem.content_type,
        InboxItem.payload,
        InboxItem.request_id,
    )
)
_RELEASE = (
    update(InboxItem)
    .where(InboxItem.id.in_(_IDS), unindexed(InboxItem.status) == "processing")
    .values(status="pending")
)
_SETTLE = update(InboxItem).where(InboxItem.id.in_(_IDS)).values(status=bindparam("status"))
_FORGET = update(InboxItem).where(InboxItem.id.in_(_IDS)).values(payload=b"")


def _verdict(row: Any, results: list[ItemResult], batch: bool) -> Taken:
    """A parsed row's status from its records' results (Intake quarantines what the
    secured policy says to; an invalid record quarantines the row, with every error)."""
    failed = [(i, r) for i, r in enumerate(results) if r.status == "invalid"]
    if failed:
        errors = _item_errors(failed, batch)
        return Taken(
            "quarantined", _quarantine(row, _reason(failed[0][1]), errors, _single_id(results))
        )
    held = any(r.status == "quarantined" for r in results)
    gone = any(r.status == "gone" for r in results)
    return Taken("quarantined" if held else "done", forget=gone)


def _refused(row: Any, exc: BaseException) -> Taken:
    """A row whose taking failed on its own (not an outage): quarantined, with why."""
    if isinstance(exc, SQLAlchemyError):
        log.error("inbox item %s refused by the store: %s", row.id, type(exc).__name__)
        return Taken("quarantined", _quarantine(row, "invalid", STORE_REFUSED))
    log.error("inbox item %s failed: %s", row.id, type(exc).__name__)
    return Taken("quarantined", _quarantine(row, "internal_error", {}))


def _reason(result: ItemResult) -> str:
    return result.error.code if result.error is not None else "invalid"


def _item_errors(failed: list[tuple[int, ItemResult]], batch: bool) -> dict[str, list[str]]:
    """Field paths as the API gives them; in a batch, prefixed with the item's index."""
    errors: dict[str, list[str]] = {}
    for index, result in failed:
        for path, messages in (result.errors or {"_record": ["invalid"]}).items():
            errors[f"{index}.{path}" if batch else path] = list(messages)
    return errors


def _single_id(results: list[ItemResult]) -> str | None:
    return results[0].id if len(results) == 1 else None


def _quarantine(
    item: Any, reason: str, errors: Mapping[str, list[str]], record_id: str | None = None
) -> QuarantineItem:
    return QuarantineItem(
        **quarantine_values(item.source, item.content_type, item.payload, reason, errors, record_id)
    )
