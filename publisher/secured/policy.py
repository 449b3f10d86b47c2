"""Apply a source's ``secured`` policy to what opening the envelope gave.

The status says what happened to the envelope; the action says what intake does with the
record. They are kept apart so that an operator always sees the truth (an envelope that
failed stays ``invalid`` even when the policy lets the record through).

Policy (``source_policy`` in :mod:`publisher.config`), with defaults:

- ``required`` (False): a record without ``secured`` is rejected when true.
- ``on_failure`` (``sealed``): an ``invalid`` envelope -> ``reject`` (422, the one uniform
  :class:`~publisher.errors.EnvelopeError`), ``quarantine`` (stored, not published), or
  ``sealed`` (accepted; the envelope is passed through unopened, status stays ``invalid``).
- ``on_sealed`` (``accept``): a well-formed envelope with no key of ours for it ->
  ``accept``, ``quarantine`` or ``reject``. The default accepts the example record.

- ``legacy`` (``accept``): legacy AES-CBC envelopes are opened; ``refuse``: they are never
  decrypted, and count as ``invalid``.

Opened envelopes (``verified``, ``decrypted``, ``decrypted-unauthenticated``) and an absent
optional one are accepted.

Legacy AES-CBC is unauthenticated, so whether its padding checks out must never be visible
to a client (a padding oracle recovers the plaintext; docs/secured.md). Hence: a source that
accepts legacy envelopes must use ``on_failure: sealed`` (``reject`` answers 422 versus 202,
``quarantine`` answers ``quarantined`` versus ``created``: both tell padding from success),
checked at start-up by :func:`check_policies`; :func:`visible_status` shows a client without
``read-protected`` every legacy envelope as ``sealed``; and :class:`InvalidEnvelopeAlarm`
counts invalid envelopes per source and raises an alarm on a burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, Metric

from publisher.errors import ConfigError, EnvelopeError, InvalidRecord, PublisherError
from publisher.secured.envelopes import INVALID, SecuredResult, is_legacy, open_secured
from publisher.secured.keyring import Keyring

log = logging.getLogger("publisher.secured.policy")

Action = Literal["accept", "quarantine", "reject"]
_ON_FAILURE = {"reject": "reject", "quarantine": "quarantine", "sealed": "accept"}
_ON_SEALED = ("accept", "quarantine", "reject")
_LEGACY = ("accept", "refuse")
REQUIRED_MESSAGE = "a secured field is required from this source"
ORACLE_MESSAGE = (
    "on_failure: {on_failure} would make legacy AES-CBC envelopes a padding oracle (a client"
    " could tell a padding failure from a success); for a source that accepts legacy"
    " envelopes use on_failure: sealed, or set legacy: refuse (see docs/secured.md)"
)
#: what a client without ``read-protected`` sees for any legacy envelope
LEGACY_VISIBLE_STATUS = "sealed"


@dataclass(frozen=True)
class SecuredOutcome:
    """The result of opening, and what intake must do with the record."""

    result: SecuredResult
    action: Action
    reason: str | None = None  # fixed, non-secret words for the quarantine or the log

    def error(self) -> PublisherError | None:
        """The error to answer when the action is ``reject`` (None otherwise)."""
        if self.action != "reject":
            return None
        if self.result.status == "absent":
            return InvalidRecord(REQUIRED_MESSAGE, errors={"secured": [REQUIRED_MESSAGE]})
        return EnvelopeError()

    def raise_for_reject(self) -> None:
        """Raise :meth:`error` if there is one: for callers that reject by exception."""
        error = self.error()
        if error is not None:
            raise error


def check_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a policy mapping and fill defaults; a wrong value is a ConfigError at start."""
    checked = {
        "required": False,
        "on_failure": "sealed",
        "on_sealed": "accept",
        "legacy": "accept",
        **policy,
    }
    if not isinstance(checked["required"], bool):
        raise ConfigError("secured.required must be true or false")
    if checked["on_failure"] not in _ON_FAILURE:
        raise ConfigError("secured.on_failure must be one of " + ", ".join(_ON_FAILURE))
    if checked["on_sealed"] not in _ON_SEALED:
        raise ConfigError("secured.on_sealed must be one of " + ", ".join(_ON_SEALED))
    if checked["legacy"] not in _LEGACY:
        raise ConfigError("secured.legacy must be one of " + ", ".join(_LEGACY))
    if checked["legacy"] == "accept" and checked["on_failure"] != "sealed":
        raise ConfigError("secured: " + ORACLE_MESSAGE.format(**checked))
    return checked


def check_policies(settings: Mapping[str, Any]) -> None:
    """Every source's policy (and the default) at start-up: a bad one is a clear ConfigError."""
    default = dict(settings.get("secured") or {})
    where = "secured"
    try:
        check_policy(default)
        for name, source in (settings.get("sources") or {}).items():
            where = f"sources.{name}.secured"
            check_policy({**default, **((source or {}).get("secured") or {})})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def decide(result: SecuredResult, policy: Mapping[str, Any]) -> SecuredOutcome:
    """Map a result to an action under ``policy`` (pure: easy to test and to document)."""
    checked = check_policy(policy)
    status = result.status
    if status == "absent":
        if checked["required"]:
            return SecuredOutcome(result, "reject", "secured required")
        return SecuredOutcome(result, "accept")
    if status == "invalid":
        return SecuredOutcome(result, _ON_FAILURE[checked["on_failure"]], "secured invalid")
    if status == "sealed":
        return SecuredOutcome(result, checked["on_sealed"], "secured sealed")
    return SecuredOutcome(result, "accept")


def secure_record(
    fields: Mapping[str, Any], keyring: Keyring, policy: Mapping[str, Any]
) -> SecuredOutcome:
    """Open the record's ``secured`` field and apply the source's policy.

    ``fields`` must be the record as received (before ``id`` is derived or defaults are
    filled): a JWS covers exactly those fields (see :mod:`publisher.secured.canonical`).
    """
    envelope = fields.get("secured")
    if check_policy(policy)["legacy"] == "refuse" and is_legacy(envelope):
        return decide(INVALID, policy)  # never decrypted: nothing to observe
    return decide(open_secured(envelope, fields, keyring), policy)


def visible_status(status: str, envelope: Any, may_read_protected: bool) -> str:
    """The ``secured.status`` a client may see: a legacy envelope's is ``sealed`` without
    ``read-protected``, since ``decrypted-unauthenticated`` versus ``invalid`` would tell
    whether its padding checked out (a padding oracle)."""
    if may_read_protected or not is_legacy(envelope):
        return status
    return LEGACY_VISIBLE_STATUS


class InvalidEnvelopeAlarm:
    """Counts invalid envelopes per source; a burst logs a warning and counts an alarm.

    A padding-oracle probe sends many envelopes that fail; senders with a bug do too. Either
    way an operator should hear of it. A Prometheus collector (registered on the app's
    registry): ``publisher_secured_invalid_total{source}`` and
    ``publisher_secured_invalid_bursts_total{source}``. Per process, like the counters.
    """

    def __init__(
        self,
        threshold: int = 20,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, int(threshold))
        self.window = float(window)
        self.clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._alarmed_at: dict[str, float] = {}
        self.invalid: dict[str, int] = {}
        self.bursts: dict[str, int] = {}

    def observe(self, source: str, status: str) -> bool:
        """Note one opened envelope's status; True when this one raised the alarm."""
        if status != "invalid":
            return False
        now = self.clock()
        with self._lock:
            self.invalid[source] = self.invalid.get(source, 0) + 1
            recent = self._recent.setdefault(source, deque())
            recent.append(now)
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            last = self._alarmed_at.get(source)
            if len(recent) < self.threshold or (last is not None and now - last < self.window):
                return False
            self._alarmed_at[source] = now
            self.bursts[source] = self.bursts.get(source, 0) + 1
            count = len(recent)
        log.warning(
            "alarm: %d invalid secured envelopes from source %r within %.0f s"
            " (a broken sender, or someone probing for a padding oracle)",
            count,
            source,
            self.window,
        )
        return True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            invalid, bursts = dict(self.invalid), dict(self.bursts)
        total = CounterMetricFamily(
            "publisher_secured_invalid", "Invalid secured envelopes, by source", labels=["source"]
        )
        for source, count in sorted(invalid.items()):
            total.add_metric([source], count)
        yield total
        alarms = CounterMetricFamily(
            "publisher_secured_invalid_bursts",
            "Alarms raised on a burst of invalid secured envelopes, by source",
            labels=["source"],
        )
        for source, count in sorted(bursts.items()):
            alarms.add_metric([source], count)
        yield alarms
