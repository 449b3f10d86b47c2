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

Opened envelopes (``verified``, ``decrypted``, ``decrypted-unauthenticated``) and an absent
optional one are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from publisher.envelopes import SecuredResult, open_secured
from publisher.errors import ConfigError, EnvelopeError, InvalidRecord, PublisherError
from publisher.keyring import Keyring

Action = Literal["accept", "quarantine", "reject"]
_ON_FAILURE = {"reject": "reject", "quarantine": "quarantine", "sealed": "accept"}
_ON_SEALED = ("accept", "quarantine", "reject")
REQUIRED_MESSAGE = "a secured field is required from this source"


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
    checked = {"required": False, "on_failure": "sealed", "on_sealed": "accept", **policy}
    if not isinstance(checked["required"], bool):
        raise ConfigError("secured.required must be true or false")
    if checked["on_failure"] not in _ON_FAILURE:
        raise ConfigError("secured.on_failure must be one of " + ", ".join(_ON_FAILURE))
    if checked["on_sealed"] not in _ON_SEALED:
        raise ConfigError("secured.on_sealed must be one of " + ", ".join(_ON_SEALED))
    return checked


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
    filled): a JWS covers exactly those fields (see :mod:`publisher.canonical`).
    """
    result = open_secured(fields.get("secured"), fields, keyring)
    return decide(result, policy)
