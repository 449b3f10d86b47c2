"""The tables. The deliveries table is the source of truth for what must still happen."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Record(Base):
    """The current revision of a record, and where it stands in its life."""

    __tablename__ = "records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(255), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(100))
    # draft, embargoed, published, expired, retracted
    state: Mapped[str] = mapped_column(String(20))
    published: Mapped[bool] = mapped_column(Boolean)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    meaning_hash: Mapped[str] = mapped_column(String(64))
    #: the revision of the last meaningful change: what an output holding the record should
    #: hold at least (a volatile-only edit makes a revision, not a new desired state)
    meaning_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    secured_status: Mapped[str] = mapped_column(String(32), default="absent")
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # the API's and the operator page's filters walk these newest first (keyset pages)
    __table_args__ = (
        Index("ix_records_state_seq", "state", "seq"),
        Index("ix_records_published_seq", "published", "seq"),
    )


class Revision(Base):
    """Every distinct content a record has had, newest last."""

    __tablename__ = "revisions"

    record_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("records.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text, default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    event: Mapped[str | None] = mapped_column(String(20), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecordTopic(Base):
    """Topics of a record's current revision, for filtering without scanning JSON.

    ``record_seq`` repeats the record's ``seq`` so that a topic's records are read newest
    first straight from ``ix_record_topics_topic_seq``: a page of a common topic costs a
    page, not a sort of every record with that topic.
    """

    __tablename__ = "record_topics"

    record_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("records.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    record_seq: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_record_topics_topic_seq", "topic", "record_seq"),)


#: the rows ``ix_deliveries_due`` holds
_WAITING = text("status = 'pending' OR status = 'dead'")


class Delivery(Base):
    """One transition of one (record, output) pair: its status, attempts, error and schedule.

    A delivery is planned as a target (``event`` retracted, or published/updated at
    ``revision``) and run only while it is still what the pair needs: the worker compares
    the record's desired state with what the output last confirmed (the placement), see
    ``publisher.convergence``. ``id`` is stable across retries and redeliveries of the same
    transition; outputs use it to drop duplicates.
    """

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(255))  # first of ix_deliveries_record_output
    revision: Mapped[int] = mapped_column(Integer)
    output: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # pending, done, dead, superseded
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    receives: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: when the transition happened (the change, the embargo's end, the expiry): the event time
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: send again although the output already confirmed it (a redelivery or a reconcile)
    resend: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # the waiting rows only (migration 0005): a WHERE must imply it, see queries.WAITING
        Index(
            "ix_deliveries_due",
            "status",
            "next_attempt_at",
            "output",
            sqlite_where=_WAITING,
            postgresql_where=_WAITING,
        ),
        Index("ix_deliveries_record_output", "record_id", "output"),
        # /api/v1/deliveries: newest change first, all of them or of one status
        Index("ix_deliveries_updated", "updated_at", "id"),
        Index("ix_deliveries_status_updated", "status", "updated_at", "id"),
    )


class Placement(Base):
    """The ledger: what is live where (pending, live, retracted, failed).

    ``held_revision`` is what the output last confirmed to hold (None: nothing); ``state``
    says where the pair stands for people (a transition pending, or failed).
    """

    __tablename__ = "placements"

    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    output: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    revision: Mapped[int] = mapped_column(Integer)
    held_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_placements_output_record", "output", "record_id"),)


class Attempt(Base):
    """One try of a delivery: when, how it ended, how long it took. Never rewritten."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # one of publisher.dispatch.ATTEMPT_OUTCOMES
    outcome: Mapped[str] = mapped_column(String(20))
    event: Mapped[str | None] = mapped_column(String(20), nullable=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)


class OutputState(Base):
    """Outputs an operator (or a downstream ``410 Gone``) turned off."""

    __tablename__ = "output_states"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Token(Base):
    """An API token, stored as a SHA-256 hash (tokens are random, so no slow hash needed)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Source(Base):
    """A webhook sender made with ``publisher sources add``; config may declare more."""

    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    secrets: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboxItem(Base):
    """A verified webhook payload, stored raw before it is parsed (the webhook 2xx)."""

    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    webhook_id: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending, done, quarantined
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("source", "webhook_id", name="uq_inbox_source_webhook_id"),
        Index("ix_inbox_status", "status"),
    )


class QuarantineItem(Base):
    """A record that failed validation or could not be opened, kept with the reason."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    content_type: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(String(40))
    errors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    record_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    #: the held count (a gauge, the operator page) reads the unreplayed ones only
    __table_args__ = (Index("ix_quarantine_replayed_at", "replayed_at"),)


class Tombstone(Base):
    """A purged record: all that is kept of it, so that a late replay cannot bring it back.

    ``purged_at`` is None while the purge waits for the outputs' receipts of its retraction;
    ``unconfirmed`` lists the outputs whose retraction ended dead (they may still hold it).
    """

    __tablename__ = "tombstones"

    record_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requested_by: Mapped[str] = mapped_column(String(200))
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unconfirmed: Mapped[list[str]] = mapped_column(JSON, default=list)


class Subscriber(Base):
    """A webhook subscriber added through the API or the CLI (YAML ones are not stored).

    ``secrets`` is newest first: ``[{"secret", "until"}]``; a rotated-out secret keeps
    signing beside the new one until its ``until`` (an ISO time), then is dropped.
    """

    __tablename__ = "subscribers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    events: Mapped[list[str]] = mapped_column(JSON)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_private: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutputHealth(Base):
    """Kept counts of how an output's deliveries end: updated as they settle, read cheaply.

    ``failing_since`` is the first failure after the last success (None while healthy);
    an output failing for ``delivery.pause_after_seconds`` is paused from it.
    """

    __tablename__ = "output_health"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
