"""Everything about a record's ``secured`` field, behind one entry point.

The rest of publisher imports from here only (``tests/test_architecture.py`` checks it):

- :mod:`~publisher.secured.canonical`: the bytes a JWS signs (RFC 8785 over the record);
- :mod:`~publisher.secured.keyfiles`: which JWK files are accepted, and the algorithm each pins;
- :mod:`~publisher.secured.keyring`: the keys folder, by ``kid``; generation, rotation, reload;
- :mod:`~publisher.secured.envelopes`: open and seal (legacy AES-CBC, JWE, JWS), one uniform
  failure;
- :mod:`~publisher.secured.policy`: a source's policy applied to what opening gave.

The user's view is ``docs/secured.md``; why protected data is kept as it is,
``docs/decisions/protected-data-at-rest.md``.
"""

from publisher.secured.canonical import canonical_bytes
from publisher.secured.envelopes import SecuredResult, open_envelope, open_secured, seal
from publisher.secured.keyring import (
    KIND_ALIASES,
    KINDS,
    Keyring,
    LiveKeyring,
    ensure_dev_key,
    generate_key,
    rotate,
    write_key,
)
from publisher.secured.policy import (
    InvalidEnvelopeAlarm,
    SecuredOutcome,
    check_policies,
    secure_record,
    visible_status,
)

__all__ = [
    "KINDS",
    "KIND_ALIASES",
    "InvalidEnvelopeAlarm",
    "Keyring",
    "LiveKeyring",
    "SecuredOutcome",
    "SecuredResult",
    "canonical_bytes",
    "check_policies",
    "ensure_dev_key",
    "generate_key",
    "open_envelope",
    "open_secured",
    "rotate",
    "seal",
    "secure_record",
    "visible_status",
    "write_key",
]
