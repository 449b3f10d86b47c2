"""The per-source policy over what opening the envelope gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from publisher.config import DEFAULTS, source_policy
from publisher.errors import ConfigError, EnvelopeError, InvalidRecord
from publisher.secured.envelopes import INVALID, SecuredResult, seal
from publisher.secured.keyring import Keyring, generate_key
from publisher.secured.policy import decide, secure_record

DATA = Path(__file__).parent / "data"


def _seed() -> dict[str, Any]:
    text = (DATA / "seed-record.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1])


def test_default_policy_accepts_the_seed_record_as_sealed() -> None:
    policy = source_policy({"secured": DEFAULTS["secured"], "sources": {}}, "any")
    outcome = secure_record(_seed(), Keyring(), policy)
    assert (outcome.action, outcome.result.status) == ("accept", "sealed")
    assert outcome.error() is None


def test_absent_required_is_rejected_with_a_field_error() -> None:
    outcome = secure_record({"title": "t"}, Keyring(), {"required": True})
    assert outcome.action == "reject"
    error = outcome.error()
    assert isinstance(error, InvalidRecord) and "secured" in error.errors
    with pytest.raises(InvalidRecord):
        outcome.raise_for_reject()


def test_absent_optional_is_accepted() -> None:
    outcome = secure_record({"title": "t"}, Keyring(), {})
    assert (outcome.action, outcome.result.status) == ("accept", "absent")


@pytest.mark.parametrize(
    ("on_failure", "action"),
    [("reject", "reject"), ("quarantine", "quarantine"), ("sealed", "accept")],
)
def test_invalid_follows_on_failure(on_failure: str, action: str) -> None:
    outcome = decide(INVALID, {"on_failure": on_failure, "legacy": "refuse"})
    assert outcome.action == action
    assert outcome.result.status == "invalid"  # the status stays true whatever the action


def test_rejected_invalid_raises_the_one_uniform_error() -> None:
    keyring = Keyring.from_jwks([generate_key("legacy-cbc")])
    outcome = secure_record(_seed(), keyring, {"on_failure": "reject", "legacy": "refuse"})
    assert outcome.result == INVALID
    with pytest.raises(EnvelopeError) as info:
        outcome.raise_for_reject()
    assert info.value.message == EnvelopeError.MESSAGE


@pytest.mark.parametrize("on_sealed", ["accept", "quarantine", "reject"])
def test_sealed_follows_on_sealed(on_sealed: str) -> None:
    outcome = secure_record(_seed(), Keyring(), {"on_sealed": on_sealed, "required": True})
    assert outcome.action == on_sealed


def test_opened_envelopes_are_accepted() -> None:
    keyring = Keyring.from_jwks([generate_key("dir")])
    record = {"title": "t", "secured": seal({"email": "a@b"}, keyring, "jwe")}
    policy = {"required": True, "on_failure": "reject", "legacy": "refuse"}
    outcome = secure_record(record, keyring, policy)
    assert (outcome.action, outcome.result.status) == ("accept", "decrypted")
    assert outcome.result.protected == {"email": "a@b"}
    for status in ("verified", "decrypted-unauthenticated"):
        assert decide(SecuredResult(status), {"required": True}).action == "accept"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "policy", [{"on_failure": "drop"}, {"required": "yes"}, {"on_sealed": "ignore"}]
)
def test_wrong_policy_is_a_config_error(policy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        decide(INVALID, policy)
