"""The one path every record takes in: parse -> validate -> secure -> store -> enqueue.

The API, the CLI's ``ingest`` and the webhook inbox all call :class:`Intake`, so a record
is treated the same whichever door it came through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from publisher.config import Settings, source_policy
from publisher.db import transaction, writer_lock
from publisher.erasure import refuse_purged
from publisher.errors import EnvelopeError, Gone, InvalidRecord, PublisherError
from publisher.groupcommit import CommitFailed, GroupCommitter
from publisher.models import QuarantineItem
from publisher.outputs import OutputRecord
from publisher.parsing import Parsed, parse_body
from publisher.plugins import Broadcast
from publisher.quarantine import quarantine_values
from publisher.records import hashable_json, public_fields
from publisher.schemas import Validated, validate
from publisher.secured import (
    InvalidEnvelopeAlarm,
    Keyring,
    SecuredOutcome,
    SecuredResult,
    check_policies,
    secure_record,
)
from publisher.services import Services
from publisher.store import Incoming, Stored, retract_record, save_records

log = logging.getLogger("publisher.intake")
RETRIES = 5
#: PostgreSQL: deadlock detected, serialization failure
RETRYABLE_SQLSTATES = {"40P01", "40001"}
_INSERT_QUARANTINE = insert(QuarantineItem)  # built once, as store.py's statements
STORE_REFUSED = {"_record": ["The store refused this record's content (see the service log)."]}


class StillHeld(InvalidRecord):
    """A replayed item the source's ``secured`` policy would quarantine again (``422``)."""

    code = "secured"


@dataclass
class Prepared:
    """A record ready to store, or to quarantine."""

    incoming: Incoming
    quarantine: str | None = None  # the reason, when the policy says quarantine


@dataclass
class ItemResult:
    """The answer for one submitted item, as the API reports it."""

    status: str  # created, revised, unchanged, quarantined, invalid, gone (purged)
    id: str | None = None
    revision: int | None = None
    event: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: PublisherError | None = None

    def to_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"status": self.status}
        if self.id is not None:
            answer["id"] = self.id
        if self.revision is not None:
            answer["revision"] = self.revision
        if self.errors:
            answer["errors"] = self.errors
        if self.warnings:
            answer["warnings"] = self.warnings
        return answer


@dataclass
class Submission:
    """The items of one request or inbox row, and who sent them."""

    items: Sequence[Any]
    source: str = "api"
    request_id: str | None = None
    text_bound: int | None = None  # the parser's (parsing.Parsed.text_bound)


@dataclass
class Written:
    """What one transaction stored: an answer per item, and the records it stored."""

    results: list[ItemResult]
    stored: list[tuple[Stored, Prepared]]


class Intake:
    """Takes records in for one app's services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.hooks = Broadcast(services.pm, services.settings)
        check_policies(self.settings)  # a policy that would be a padding oracle stops start-up
        alarm = self.settings.get("secured_alarm") or {}
        self.envelope_alarm = InvalidEnvelopeAlarm(
            threshold=int(alarm.get("invalid", 20)), window=float(alarm.get("seconds", 60))
        )
        self._group: GroupCommitter[list[Prepared], Written] = GroupCommitter(
            self._write_groups, gate=lambda: writer_lock(services.engine)
        )

    def submit(
        self,
        body: bytes,
        content_type: str | None,
        *,
        source: str = "api",
        request_id: str | None = None,
        refuse_held: bool = False,
    ) -> tuple[list[ItemResult], bool]:
        """Parse a body and take in every record in it; returns results and batch-ness."""
        parsed = self.parse(body, content_type, source=source)
        results = self.take(
            parsed.items,
            source=source,
            request_id=request_id,
            refuse_held=refuse_held,
            text_bound=parsed.text_bound,
        )
        return results, parsed.batch

    def parse(self, body: bytes, content_type: str | None, *, source: str) -> Parsed:
        """A body's records, within the limits; what cannot be read is refused (and told)."""
        try:
            return self._parse(body, content_type)
        except PublisherError as exc:
            self._rejected(source, exc)
            raise

    def _parse(self, body: bytes, content_type: str | None) -> Parsed:
        limits = self.settings["limits"]
        parsed = parse_body(
            body,
            content_type,
            max_depth=limits["max_depth"],
            max_aliases=limits["max_yaml_aliases"],
        )
        if len(parsed.items) > limits["max_batch"]:
            raise InvalidRecord(
                f"a batch holds at most {limits['max_batch']} records",
                errors={"_batch": [f"{len(parsed.items)} records, limit {limits['max_batch']}"]},
            )
        return parsed

    def take(
        self,
        items: Sequence[Any],
        *,
        source: str = "api",
        request_id: str | None = None,
        defer: bool = False,
        refuse_held: bool = False,
        checked: Sequence[Validated | PublisherError] | None = None,
        text_bound: int | None = None,
    ) -> list[ItemResult]:
        """Validate and open each item, then store all accepted ones in one transaction.

        ``defer`` leaves enqueueing to the worker's sweeper (``publisher ingest``).
        ``refuse_held`` answers an item the secured policy would quarantine as invalid
        instead (a replay: the item already is in the quarantine, and stays there).
        ``checked`` is each item's :func:`validate` outcome when it was done elsewhere
        (``publisher ingest`` validates in worker processes). ``text_bound`` is the
        parser's word on the items' strings (:class:`~publisher.parsing.Parsed`).
        """
        (results,) = self.take_many(
            [Submission(items, source, request_id, text_bound)],
            defer=defer,
            refuse_held=refuse_held,
            checked=checked,
        )
        return results

    def take_many(
        self,
        submissions: Sequence[Submission],
        *,
        defer: bool = False,
        refuse_held: bool = False,
        checked: Sequence[Validated | PublisherError] | None = None,
    ) -> list[list[ItemResult]]:
        """:meth:`take` of several submissions (the worker's batch of inbox rows) with one
        transaction for all of them; each one's results, in order. ``checked`` runs over
        the items of every submission, one after the other."""
        answers: list[list[ItemResult | None]] = []
        prepared: list[tuple[list[ItemResult | None], int, str, Prepared]] = []
        flat = 0
        for submission in submissions:
            results: list[ItemResult | None] = []
            answers.append(results)
            for raw in submission.items:
                done = checked[flat] if checked is not None else None
                flat += 1
                try:
                    item = self._prepare_one(raw, submission, done, refuse_held)
                except PublisherError as exc:
                    self._rejected(submission.source, exc)
                    results.append(ItemResult("invalid", errors=exc.errors, error=exc))
                    continue
                prepared.append((results, len(results), submission.source, item))
                results.append(None)
        stored = self._store([item for *_, item in prepared], defer)
        for (results, index, source, _), result in zip(prepared, stored, strict=True):
            results[index] = result
            if result.status == "gone" and result.error is not None:
                self._rejected(source, result.error)  # a late replay must not revive it
        return [[r for r in results if r is not None] for results in answers]

    def _prepare_one(
        self,
        raw: Any,
        submission: Submission,
        checked: Validated | PublisherError | None,
        refuse_held: bool,
    ) -> Prepared:
        item = self.prepare(
            raw,
            source=submission.source,
            request_id=submission.request_id,
            checked=checked,
            text_bound=submission.text_bound,
        )
        if refuse_held and item.quarantine:
            raise StillHeld(
                "the secured field still cannot be opened",
                errors={"secured": [EnvelopeError.MESSAGE]},
            )
        return item

    def prepare(
        self,
        raw: Any,
        *,
        source: str,
        request_id: str | None = None,
        checked: Validated | PublisherError | None = None,
        text_bound: int | None = None,
    ) -> Prepared:
        """Validate and open one raw item (no storage); raises on anything to refuse."""
        self._notify("record_received", source=source, raw=raw if isinstance(raw, dict) else {})
        if isinstance(checked, PublisherError):
            raise checked
        validated = checked or validate(raw, self.settings, text_bound=text_bound)
        data = validated.data
        self._notify("record_validated", record=data, warnings=validated.warnings)
        outcome = open_under_policy(
            raw, data, self.services.keyring, self.settings, source, self.envelope_alarm
        )
        body = str(data.pop("body", "") or "")
        incoming = Incoming(
            id=data["id"],
            fields=data,
            body=body,
            source=source,
            secured_status=outcome.result.status,
            warnings=validated.warnings,
            request_id=request_id,
            secured_digest=secured_digest(outcome.result, self.services.keyring),
        )
        reason = "secured" if outcome.action == "quarantine" else None
        return Prepared(incoming, quarantine=reason)

    def _store(self, items: Sequence[Prepared], defer: bool = False) -> list[ItemResult]:
        """Store ``items`` in one transaction, then enqueue and tell the observers.

        Concurrent requests of this process share their transaction and its durable commit
        (:class:`~publisher.groupcommit.GroupCommitter`): each returns once the commit that
        holds its records succeeded, as before. If a shared batch fails, this request's
        items are written again alone, so one request's trouble never fails another's.
        """
        if not items:
            return []
        try:
            written = self._write_together(items, defer)
        except Exception as exc:
            if not is_data_problem(exc):
                raise
            written = self._write_each(items, defer)
        self._after_commit(written.stored, enqueue=not defer)
        return written.results

    def _write_together(self, items: Sequence[Prepared], defer: bool) -> Written:
        if defer:  # ``publisher ingest``: batches of its own, one caller
            return self._write(items, defer=True)
        try:
            return self._group.submit(list(items))
        except CommitFailed:
            return self._write(items)

    def _write_each(self, items: Sequence[Prepared], defer: bool) -> Written:
        """The store refused something in ``items`` (not an outage): find which, store the rest.

        Validation refuses what the stores are known to refuse; this is the net for what it
        does not know about (a plugin's change after validation, a database's own limit), so
        that one item fails alone, as a ``422`` at its index, never a batch or a retry loop.
        """
        results: list[ItemResult] = []
        stored: list[tuple[Stored, Prepared]] = []
        for item in items:
            try:
                written = self._write([item], defer)
            except Exception as exc:
                if not is_data_problem(exc):
                    raise
                log.warning("the store refused record %r: %s", item.incoming.id, type(exc).__name__)
                refused = InvalidRecord("the store cannot hold this record", errors=STORE_REFUSED)
                results.append(ItemResult("invalid", errors=refused.errors, error=refused))
                continue
            results += written.results
            stored += written.stored
        return Written(results, stored)

    def _write_groups(self, groups: list[list[Prepared]]) -> list[Written]:
        """The group committer's write: every request's items in one transaction."""
        written = self._write([item for group in groups for item in group])
        answers, start = [], 0
        for group in groups:
            mine = {id(item) for item in group}
            stored = [pair for pair in written.stored if id(pair[1]) in mine]
            answers.append(Written(written.results[start : start + len(group)], stored))
            start += len(group)
        return answers

    def _write(self, items: Sequence[Prepared], defer: bool = False) -> Written:
        # one lock order for every transaction (by record id), so two batches touching the
        # same records cannot deadlock each other on PostgreSQL
        order = sorted(range(len(items)), key=lambda i: items[i].incoming.id)
        for attempt in range(RETRIES):
            try:
                written = self._write_once([items[i] for i in order], defer)
                break
            except (IntegrityError, OperationalError) as exc:
                # two processes created the same new record at once (the loser retries and
                # finds the winner's row), or the database chose this transaction as a
                # deadlock victim; SQLite serialises writers and never gets here
                if attempt == RETRIES - 1 or not _retryable(exc):
                    raise
        answer: list[ItemResult] = [None] * len(items)  # type: ignore[list-item]
        for position, result in zip(order, written.results, strict=True):
            answer[position] = result
        return Written(answer, written.stored)

    def _write_once(self, items: Sequence[Prepared], defer: bool) -> Written:
        volatile = self.settings["volatile_fields"]
        with self.services.kept.transaction() as connection:
            # reads in the write transaction: no second connection per request, and a purge
            # cannot slip in between the check and the write
            gone = refuse_purged(connection, [item.incoming.id for item in items])
            live = [item for item in items if item.incoming.id not in gone]
            kept = [item for item in live if not item.quarantine]
            routes = self.services.dispatcher.routes(connection)
            for item in live:
                if item.quarantine:
                    connection.execute(_INSERT_QUARANTINE, _quarantine_row(item))
            outcomes = save_records(
                connection, [item.incoming for item in kept], routes, volatile=volatile, defer=defer
            )
        stored = list(zip(outcomes, kept, strict=True))
        outcome_of = {id(item): outcome for outcome, item in stored}
        results = [
            _gone(item.incoming.id, gone[item.incoming.id])
            if item.incoming.id in gone
            else ItemResult("quarantined", id=item.incoming.id)
            if item.quarantine
            else _result(outcome_of[id(item)], item)
            for item in items
        ]
        return Written(results, stored)

    def _after_commit(self, stored: Sequence[tuple[Stored, Prepared]], enqueue: bool) -> None:
        if enqueue:
            self.services.dispatcher.enqueue([d for o, _ in stored for d in o.deliveries])
        for outcome, item in stored:
            if outcome.status == "unchanged":
                continue
            view = OutputRecord(
                id=outcome.id,
                revision=outcome.revision,
                fields=public_fields(item.incoming.fields),
                body=item.incoming.body,
                secured_status=item.incoming.secured_status,
            )
            self._notify("record_stored", record=view, event=outcome.event)

    def retract(self, record_id: str, request_id: str | None = None) -> Stored:
        """Retract a record from every output that has it."""
        routes = self.services.dispatcher.routes()
        with transaction(self.services.sessions) as session:
            outcome = retract_record(session, record_id, routes, request_id)
        self.services.dispatcher.enqueue(outcome.deliveries)
        return outcome

    def _rejected(self, source: str, exc: PublisherError) -> None:
        self._notify("record_rejected", source=source, reason=exc.code, errors=exc.errors)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        try:
            getattr(self.hooks, hook)(**kwargs)
        except PublisherError:
            raise
        except Exception:  # noqa: BLE001 - an observing plugin must not break intake
            log.exception("plugin hook %s failed", hook)


def open_under_policy(
    raw: Any,
    data: dict[str, Any],
    keyring: Keyring,
    settings: Settings,
    source: str,
    alarm: InvalidEnvelopeAlarm | None = None,
) -> SecuredOutcome:
    """Open ``secured`` and apply ``source``'s policy; raises when the policy rejects."""
    # a JWS signs the fields as the sender sent them, so check it over the raw mapping
    signed = raw if isinstance(raw, dict) else data
    outcome = secure_record(signed, keyring, source_policy(settings, source))
    if alarm is not None:  # a burst of invalid envelopes from one source: someone probing
        alarm.observe(source, outcome.result.status)
    outcome.raise_for_reject()
    return outcome


def dry_run(raw: Any, settings: Settings, keyring: Keyring, source: str) -> ItemResult:
    """What :meth:`Intake.take` would answer for ``raw``, storing nothing (``validate``).

    The same checks in the same order; plugins' hooks are not called (nothing happened).
    A record that would be stored is ``accepted``.
    """
    try:
        validated = validate(raw, settings)
        outcome = open_under_policy(raw, validated.data, keyring, settings, source)
    except PublisherError as exc:
        return ItemResult("invalid", errors=exc.errors, error=exc)
    status = "quarantined" if outcome.action == "quarantine" else "accepted"
    return ItemResult(status, id=validated.data["id"], warnings=validated.warnings)


def _gone(record_id: str, error: Gone) -> ItemResult:
    return ItemResult("gone", id=record_id, errors=error.errors, error=error)


def _result(outcome: Stored, item: Prepared) -> ItemResult:
    return ItemResult(
        outcome.status,
        id=outcome.id,
        revision=outcome.revision,
        event=outcome.event,
        warnings=item.incoming.warnings,
    )


def is_outage(exc: BaseException) -> bool:
    """The database is down, gone or busy: try again later (never the payload's fault)."""
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def is_data_problem(exc: BaseException) -> bool:
    """The store refused what it was given: the same data would fail the same way again."""
    if isinstance(exc, SQLAlchemyError):
        return not is_outage(exc)
    return isinstance(exc, (UnicodeError, OverflowError))


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES


def _quarantine_row(item: Prepared) -> dict[str, Any]:
    """An API record held by its ``secured`` policy, kept as the JSON it amounts to."""
    fields = {**item.incoming.fields, "body": item.incoming.body}
    payload = json.dumps(fields, default=str).encode()
    errors = {"secured": [EnvelopeError.MESSAGE]}
    reason = item.quarantine or "unknown"
    source = item.incoming.source
    return quarantine_values(source, "application/json", payload, reason, errors, item.incoming.id)


def secured_digest(result: SecuredResult, keyring: Keyring) -> str | None:
    """What ``secured`` holds, for telling an edit from the same content sealed again.

    Senders seal with a fresh IV or CEK each time, so the envelope's bytes change while its
    content does not. An opened envelope counts by a digest of its plaintext, keyed with
    the opening key (a digest of low-entropy protected data must not be guessable from the
    database); a verified signature counts by its key alone (it covers the other fields).
    None keeps the envelope's bytes (nothing could be opened).
    """
    if not result.opened or result.kid is None:
        return None
    if result.status == "verified":
        return f"verified:{result.kid}"
    entry = keyring.get(result.kid)
    if entry is None or result.protected is None:
        return None
    material = (
        entry.key
        if isinstance(entry.key, bytes)
        else json.dumps(entry.key.as_dict(private=True), sort_keys=True).encode()
    )
    key = hmac.new(b"publisher secured digest", material, hashlib.sha256).digest()
    digest = hmac.new(key, hashable_json(result.protected), hashlib.sha256).hexdigest()
    return f"opened:{result.kid}:{digest}"
