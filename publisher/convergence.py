"""What each output should hold, and the one transition that takes it there.

Every (record, output) pair converges on the record's *desired state* for that output: live
at the record's last meaningful revision, or absent. The ledger (``placements``) keeps what
the output last *confirmed* to hold (``held_revision``). A delivery is a planned transition
between the two, and whoever runs it (first try, retry, redelivery, reconcile, catch-up after
an output is enabled again) first asks this module whether it is still the transition the
pair needs. So a frozen event is never replayed: a redelivered ``published`` after a
retraction finds the pair wants nothing, and an older revision never overwrites a newer one.

Pure functions, no database: ``store`` and ``dispatch`` bring the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

#: a delivery due "now" may reach a worker whose clock is a little behind the planner's
CLOCK_SLACK = timedelta(seconds=1)


class RecordLike(Protocol):
    id: str
    revision: int
    published: bool
    fields: Mapping[str, Any]
    published_at: datetime | None
    expires_at: datetime | None
    meaning_revision: int | None


class DeliveryLike(Protocol):
    event: str
    revision: int
    status: str


def desired_revision(
    record: RecordLike, wants: Callable[[Mapping[str, Any]], bool], now: datetime
) -> int | None:
    """The revision ``record`` should be live at on an output with routing rule ``wants``.

    None means the output should not hold it: a draft, a retraction, an embargo not yet
    ended, an expiry that came, or a routing rule that does not match.
    """
    if not record.published:
        return None
    if record.expires_at is not None and record.expires_at <= now + CLOCK_SLACK:
        return None
    if record.published_at is not None and record.published_at > now + CLOCK_SLACK:
        return None
    if not wants(record.fields):
        return None
    return record.meaning_revision or record.revision


def needed(held: int | None, want: int | None) -> str | None:
    """The event that takes an output from holding ``held`` to holding ``want``."""
    if want is None:
        return "retracted" if held is not None else None
    if held is None:
        return "published"
    return "updated" if held < want else None


def targets(delivery: DeliveryLike, want: int | None) -> bool:
    """Whether ``delivery`` was planned for the state the pair should now be in.

    A retraction targets "absent"; a publish or update targets "live at least at the
    revision it was planned for". One planned for an older meaningful revision is out of
    date: the newer content goes out under the newer transition's id, so a receiver that
    already dropped the old id as a duplicate still gets it.
    """
    if delivery.event == "retracted":
        return want is None
    return want is not None and delivery.revision >= want


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery that is about to run.

    ``send`` is the event to send (None: nothing to send); ``stale`` means the delivery
    is no longer the pair's transition and must make way for the one that is.
    """

    send: str | None
    stale: bool = False
    reason: str = ""


def decide(delivery: DeliveryLike, held: int | None, want: int | None, resend: bool) -> Decision:
    """Send, skip (the output already holds it) or retire a delivery that is due."""
    if not targets(delivery, want):
        return Decision(None, stale=True, reason="the record moved past this delivery")
    kind = needed(held, want)
    if kind is not None:
        return Decision(kind)
    if resend:  # asked to send again what the output already confirmed
        return Decision("retracted" if want is None else _resend_kind(delivery))
    return Decision(None, reason="the output already holds this state")


def _resend_kind(delivery: DeliveryLike) -> str:
    return "updated" if delivery.event == "updated" else "published"


def can_redeliver(delivery: DeliveryLike, held: int | None, want: int | None) -> bool:
    """Whether redelivering ``delivery`` still means something.

    A pending one is simply looked at now; a dead or done one may go again only while it is
    the transition the pair needs (dead) or the one that brought the output where it is
    (done). One the record has moved past (or superseded) has nothing left to say.
    """
    if delivery.status == "superseded":
        return False
    return targets(delivery, want)
