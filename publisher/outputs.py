"""What an output is, and what it is handed.

Outputs are small objects the core manages one by one: each (record, output) pair is a
delivery with its own status, attempts and error. A plugin returns them from the
``register_outputs`` hook. They never see the database, the queue or Flask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

EventKind = Literal["published", "updated", "retracted"]


@dataclass(frozen=True)
class Event:
    """One thing that happened to a record, as one output receives it.

    - ``kind``: ``"published"`` (first time live), ``"updated"`` (a meaningful change) or
      ``"retracted"`` (turned draft, deleted, expired).
    - ``delivery_id``: stable across retries and redeliveries of the same delivery, so an
      output (or a downstream subscriber) can drop duplicates: delivery is at least once.
    - ``record_id``: the record's id (the same as ``record.id``).
    - ``revision``: the record revision this event is about; compare it with what the output
      holds to ignore a late retry of an older one. A retraction keeps the last revision.
    - ``occurred_at``: when the core made the event (a zone-aware date-time).
    """

    kind: EventKind
    delivery_id: str
    record_id: str
    revision: int
    occurred_at: datetime


@dataclass(frozen=True)
class OutputRecord:
    """A stored record as an output sees it.

    - ``id``: the record's stable id.
    - ``revision``: the stored revision (1, 2, ...; a new one for every change that is kept).
    - ``fields``: the record's public fields, JSON-ready (date-times as ISO 8601 strings with
      zone); they never contain ``secured`` nor the body.
    - ``body``: the Markdown text after the front matter (``""`` when there is none).
    - ``secured_status``: what became of the ``secured`` field (``absent``, ``verified``,
      ``decrypted``, ``decrypted-unauthenticated``, ``sealed``, ``invalid``).
    - ``protected``: the decrypted protected fields, only ever set for outputs whose
      ``accepts_protected`` is true (else ``None``).
    - ``title`` (a property): ``fields["title"]`` as text.
    """

    id: str
    revision: int
    fields: Mapping[str, Any]
    body: str = ""
    secured_status: str = "absent"
    protected: Mapping[str, Any] | None = None

    @property
    def title(self) -> str:
        return str(self.fields.get("title", ""))


@runtime_checkable
class Output(Protocol):
    """The contract every output object fulfils (docs/plugins.md; the kit checks it).

    ``publish`` is called for ``published`` and ``updated`` events and must be idempotent (the
    same delivery may arrive twice). ``retract`` removes the record from the output. Raising
    any exception fails this attempt; raise :class:`DeliveryError` to say more.

    Deliveries of one (record, output) are ordered by the core, but a late retry can still
    bring an older revision after a newer one: an output compares ``event.revision`` with what
    it holds and ignores anything older. A retraction keeps the record's revision (a DELETE
    does not make a new one), so an output remembers what it retracted (a tombstone: id ->
    revision) and a publish of a revision at or below it does not bring the record back.

    An output may also have ``deliver_many(items)``, where ``items`` is a sequence of
    ``(record, event)`` pairs (any kind of event, in the order they should happen). The
    worker then hands it its share of a batch in one call instead of one call each; it
    returns one outcome per item, in order: ``None`` for delivered, an exception (a
    :class:`DeliveryError` to say more) for a failed one. If it raises, answers with the
    wrong number of outcomes or runs past the output's ``timeout``, every item of the call
    fails this attempt. Worth it when work can be shared: the built-in ``feeds`` renders
    each feed once per batch, ``files`` flushes a batch's files to disk together.

    And it may have ``inventory()`` (see :class:`Inventory`): what it holds now.
    """

    name: str
    accepts_protected: bool

    def publish(self, record: OutputRecord, event: Event) -> None: ...

    def retract(self, record: OutputRecord, event: Event) -> None: ...


@runtime_checkable
class Inventory(Protocol):
    """The optional ``inventory()`` of an output: ``{record id: revision}`` it holds now.

    Read from the output itself (its files, its feed state), never from a memory of the calls
    it received: two-way reconcile compares it with what the output should hold, and the
    contract kit (:class:`publisher.testing.OutputContract`) observes the output through it.
    Retracted records are not in it (their tombstones are the output's own business).
    """

    def inventory(self) -> Mapping[str, int]: ...


class BaseOutput:
    """A convenient base: a name, public by default, nothing to do on retract.

    ``name`` and ``accepts_protected`` may be class attributes of a subclass or constructor
    arguments; an argument given wins over the class attribute, an argument left out never
    hides it (``class Vault(BaseOutput): accepts_protected = True`` is honoured).
    """

    name: str = ""
    accepts_protected: bool = False

    def __init__(
        self,
        name: str | None = None,
        accepts_protected: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        if not self.name:
            raise TypeError(
                f"{type(self).__name__} needs a name: pass name= or set it on the class"
            )
        if accepts_protected is not None:
            self.accepts_protected = bool(accepts_protected)
        self.options: Mapping[str, Any] = dict(options or {})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, accepts_protected={self.accepts_protected})"
        )

    def publish(self, record: OutputRecord, event: Event) -> None:  # pragma: no cover
        raise NotImplementedError

    def retract(self, record: OutputRecord, event: Event) -> None:
        return None


class BatchOutput:
    """A base for outputs written as ``deliver_many``: publish and retract are batches of one.

    It takes no constructor arguments and defines no ``__init__``: subclasses define
    ``name``, ``accepts_protected`` (class attributes or their own ``__init__``) and
    ``deliver_many``.
    """

    def deliver_many(
        self, items: Sequence[tuple[OutputRecord, Event]]
    ) -> list[BaseException | None]:  # pragma: no cover - subclasses define it
        raise NotImplementedError

    def publish(self, record: OutputRecord, event: Event) -> None:
        self._one(record, event)

    def retract(self, record: OutputRecord, event: Event) -> None:
        self._one(record, event)

    def _one(self, record: OutputRecord, event: Event) -> None:
        (outcome,) = self.deliver_many([(record, event)])
        if outcome is not None:
            raise outcome


class DeliveryError(Exception):
    """An attempt failed; the delivery is retried on the output's schedule.

    ``retry_after`` (seconds) overrides the next delay, e.g. from a ``Retry-After`` header.
    ``permanent`` makes the delivery dead at once. ``disable_output`` also turns the whole
    output off until an operator enables it again (e.g. a downstream ``410 Gone``).
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        disable_output: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent or disable_output
        self.disable_output = disable_output


def each_outcome(
    items: Sequence[tuple[OutputRecord, Event]],
    publish: Callable[[OutputRecord, Event], None],
    retract: Callable[[OutputRecord, Event], None],
) -> list[BaseException | None]:
    """``publish`` or ``retract`` each item, in order; per item ``None``, or what it raised.

    The loop of a ``deliver_many``: one item that fails fails its own delivery only.
    """
    outcomes: list[BaseException | None] = []
    for record, event in items:
        try:
            (retract if event.kind == "retracted" else publish)(record, event)
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - this delivery fails, not the batch
            outcomes.append(exc)
    return outcomes
