"""Open and seal the ``secured`` field: legacy AES-CBC, JWE compact, JWS compact.

Uniformity is the rule that shapes this module: every failure to open (base64, length,
padding, tag, signature, wrong key, bad plaintext, header we refuse, a bug) ends in the one
constant :data:`INVALID` result, and callers raise :class:`publisher.errors.EnvelopeError`,
which has one fixed message. Nothing about the failure is logged or kept.

``sealed`` versus ``invalid``: ``sealed`` means the envelope is well formed and allowed,
but no key of ours is for it (a JWE/JWS whose ``kid`` is not in the keyring, or that names
no kid and no key is pinned to its ``alg``; a legacy envelope while we hold no legacy key;
a JWE for a key of which we hold only the public half). ``invalid`` means it is malformed,
uses something we refuse, or failed with a key of ours. Whether a kid is known is not
secret, so telling the two apart is no oracle.

JOSE crypto is joserfc's; this module only pre-checks headers (strict base64url, one JSON
object without duplicate members, size caps, allow-listed members and algorithms, and the
algorithm the key file pins). Legacy CBC uses ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from joserfc import jwe, jws
from joserfc.errors import SecurityWarning

from publisher.errors import ConfigError
from publisher.secured.canonical import canonical_bytes, canonical_json
from publisher.secured.keyring import JWE_ALGS, JWE_ENCS, JWS_ALGS, LEGACY, KeyEntry, Keyring

Status = Literal[
    "absent", "verified", "decrypted", "decrypted-unauthenticated", "sealed", "invalid"
]
Format = Literal["legacy", "jwe", "jws"]

MAX_ENVELOPE = 96 * 1024  # characters; protected fields are small
MAX_HEADER = 2048  # characters of the base64url header segment
_JWE_MEMBERS = frozenset({"alg", "enc", "kid", "typ", "cty", "epk", "apu", "apv", "iv", "tag"})
_JWS_MEMBERS = frozenset({"alg", "kid", "typ", "cty"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class SecuredResult:
    """What opening a ``secured`` value gave.

    ``protected`` is the decrypted plaintext: a JSON object stays a mapping; anything else
    (text, or JSON that is not an object) is kept as ``{"text": <the plaintext>}``. It is
    None unless the status is ``decrypted`` or ``decrypted-unauthenticated`` (or a JWS opened
    without a record, where it holds the attached payload).
    """

    status: Status
    protected: Mapping[str, Any] | None = None
    kid: str | None = None
    format: Format | None = None

    @property
    def opened(self) -> bool:
        return self.status in ("verified", "decrypted", "decrypted-unauthenticated")

    def public(self) -> dict[str, Any]:
        """The part that may be shown anywhere (API, logs): never the protected data."""
        return {"status": self.status, "kid": self.kid, "format": self.format}


ABSENT = SecuredResult("absent")
INVALID = SecuredResult("invalid")


@contextmanager
def _library(alg: str) -> Iterator[None]:
    """Call joserfc; only its naming deprecation of ``EdDSA`` (RFC 9864) is silenced."""
    with warnings.catch_warnings():
        if alg == "EdDSA":
            warnings.simplefilter("ignore", SecurityWarning)
        yield


class _Refused(Exception):
    """Internal: the envelope cannot be opened. Carries nothing, on purpose."""


def open_secured(
    value: str | None, record_fields: Mapping[str, Any], keyring: Keyring
) -> SecuredResult:
    """Open a record's ``secured`` value; a JWS is checked over the record's other fields.

    Only a JWS signs the record, so only a JWS pays for its canonical form (a JCS text of
    the whole record, the largest cost of opening a legacy or JWE envelope otherwise).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return ABSENT
    try:
        if detect_format(value) != "jws":
            return open_envelope(value, keyring)
        payload = canonical_bytes(record_fields)
    except Exception:  # every failure, even a bug, must look the same
        return INVALID
    return open_envelope(value, keyring, payload)


def open_envelope(value: str, keyring: Keyring, payload: bytes | None = None) -> SecuredResult:
    """Open an envelope on its own (CLI, tests): a JWS is checked against ``payload`` if given."""
    try:
        kind = detect_format(value)
        if kind == "legacy":
            return _open_legacy(value.strip(), keyring)
        if kind == "jwe":
            return _open_jwe(value.strip(), keyring)
        return _open_jws(value.strip(), keyring, payload)
    except Exception:  # every failure, even a bug, must look the same
        return INVALID


def detect_format(value: Any) -> Format:
    """Tell the format by shape; raises _Refused for anything else."""
    if not isinstance(value, str) or len(value) > MAX_ENVELOPE:
        raise _Refused
    value = value.strip()
    if value.count(";") == 1 and "." not in value:
        return "legacy"
    dots = value.count(".")
    if dots == 4:
        return "jwe"
    if dots == 2:
        return "jws"
    raise _Refused


# -- legacy AES-CBC ---------------------------------------------------------------------


def _strict_b64(text: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4:
        raise _Refused
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:  # no stray bits in the last char
        raise _Refused
    return data


def _open_legacy(value: str, keyring: Keyring) -> SecuredResult:
    ct_text, iv_text = value.split(";")
    ciphertext, iv = _strict_b64(ct_text), _strict_b64(iv_text)
    if len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
        raise _Refused
    keys = keyring.of_kind(LEGACY)
    if not keys:
        return SecuredResult("sealed", format="legacy")
    # Constant structure: every key is tried in full, whatever the earlier ones gave.
    outcomes = [(entry, _cbc_open(entry.key, iv, ciphertext)) for entry in keys]
    opened = [(entry, found) for entry, found in outcomes if found is not None]
    if not opened:
        raise _Refused
    entry, protected = opened[0]
    return SecuredResult("decrypted-unauthenticated", protected, entry.kid, "legacy")


def _cbc_open(key: bytes, iv: bytes, ciphertext: bytes) -> Mapping[str, Any] | None:
    """Decrypt and unpad; None on any failure (padding and text alike).

    The plaintext is decoded and parsed whether the padding held or not, so the work done
    (and its time) does not tell a padding failure from a success.
    """
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plaintext, padded_well = unpadder.update(padded) + unpadder.finalize(), True
    except ValueError:
        plaintext, padded_well = padded, False
    try:
        protected = _protected(plaintext)
    except _Refused:
        return None
    return protected if padded_well else None


def is_legacy(value: Any) -> bool:
    """Whether ``value`` has the shape of a legacy AES-CBC envelope (not whether it opens)."""
    try:
        return detect_format(value) == "legacy"
    except Exception:  # noqa: BLE001 - not an envelope at all
        return False


def _protected(plaintext: bytes) -> Mapping[str, Any]:
    """Plaintext as protected fields: a JSON object, or ``{"text": ...}``; must be UTF-8."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused from None
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"text": text}
    return parsed if isinstance(parsed, dict) else {"text": text}


# -- JOSE ---------------------------------------------------------------------------------


def _b64url(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _Refused
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise _Refused
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Refused
    return result


def _header(segments: list[str], allowed: frozenset[str]) -> dict[str, Any]:
    """Check every segment's encoding and return the protected header, refused if not allowed."""
    if len(segments[0]) > MAX_HEADER:
        raise _Refused
    for segment in segments:
        _b64url(segment)
    try:
        header = json.loads(_b64url(segments[0]), object_pairs_hook=_no_duplicates)
    except (ValueError, binascii.Error):
        raise _Refused from None
    if not isinstance(header, dict) or not set(header) <= allowed:
        raise _Refused  # zip, crit, b64, jwk, jku, x5u, x5c, p2s, ... are all refused here
    if not isinstance(header.get("alg"), str):
        raise _Refused
    if "kid" in header and not isinstance(header["kid"], str):
        raise _Refused
    return header


def _candidates(keyring: Keyring, header: Mapping[str, Any], purpose: str) -> list[KeyEntry]:
    """Keys to try. Empty means sealed; a key that does not fit the header is refused."""
    alg, enc = header["alg"], header.get("enc")
    if "kid" in header:
        entry = keyring.get(header["kid"])
        if entry is None:
            return []
        if entry.purpose != purpose or entry.alg != alg or (entry.enc and entry.enc != enc):
            raise _Refused  # the key file pins the algorithm; the header cannot change it
        found = [entry]
    else:
        found = [e for e in keyring.of_kind(alg) if not e.enc or e.enc == enc]
    if purpose == "enc":
        found = [e for e in found if e.private]
    return found


def _open_jwe(token: str, keyring: Keyring) -> SecuredResult:
    header = _header(token.split("."), _JWE_MEMBERS)
    alg, enc = header["alg"], header.get("enc")
    if alg not in JWE_ALGS or enc not in JWE_ENCS:
        raise _Refused
    candidates = _candidates(keyring, header, "enc")
    if not candidates:
        return SecuredResult("sealed", kid=header.get("kid"), format="jwe")
    for entry in candidates:
        try:
            obj = jwe.decrypt_compact(token, entry.key, algorithms=[alg, enc])
        except Exception:  # noqa: S112 - any failure is the same refusal
            continue
        return SecuredResult("decrypted", _protected(obj.plaintext or b""), entry.kid, "jwe")
    raise _Refused


def _open_jws(token: str, keyring: Keyring, payload: bytes | None) -> SecuredResult:
    """Verify a JWS. With ``payload`` the signed content must be exactly those bytes."""
    segments = token.split(".")
    header = _header(segments, _JWS_MEMBERS)
    alg = header["alg"]
    if alg not in JWS_ALGS or (not segments[1] and payload is None):
        raise _Refused
    candidates = _candidates(keyring, header, "sig")
    if not candidates:
        return SecuredResult("sealed", kid=header.get("kid"), format="jws")
    detached = payload if not segments[1] else None
    for entry in candidates:
        try:
            with _library(alg):
                obj = jws.deserialize_compact(token, entry.key, algorithms=[alg], payload=detached)
        except Exception:  # noqa: S112 - any failure is the same refusal
            continue
        if payload is None:
            return SecuredResult("verified", _protected(obj.payload), entry.kid, "jws")
        if hmac.compare_digest(obj.payload, payload):
            return SecuredResult("verified", None, entry.kid, "jws")
    raise _Refused


# -- sealing --------------------------------------------------------------------------------


def _plaintext_bytes(plaintext: Mapping[str, Any] | str) -> bytes:
    if isinstance(plaintext, str):
        return plaintext.encode("utf-8")
    return canonical_json(dict(plaintext)).encode("utf-8")


def _pick(keyring: Keyring, kid: str | None, purpose: str) -> KeyEntry:
    entry = keyring.get(kid) if kid else keyring.newest(purpose)
    if entry is None or entry.purpose != purpose or (purpose != "enc" and not entry.private):
        what = f"key {kid!r}" if kid else f"active {purpose} key"
        raise ConfigError(f"no usable {what} in the keyring for this format")
    return entry


def seal(
    plaintext: Mapping[str, Any] | str, keyring: Keyring, fmt: Format, kid: str | None = None
) -> str:
    """Make an envelope of ``plaintext`` with the given (or the active) key."""
    data = _plaintext_bytes(plaintext)
    if fmt == "legacy":
        return _seal_legacy(data, _pick(keyring, kid, "legacy"))
    if fmt == "jwe":
        entry = _pick(keyring, kid, "enc")
        header = {"alg": entry.alg, "enc": entry.enc or "A256GCM", "kid": entry.kid}
        return jwe.encrypt_compact(header, data, entry.key, algorithms=list(header.values())[:2])
    if fmt == "jws":
        entry = _pick(keyring, kid, "sig")
        header = {"alg": entry.alg, "kid": entry.kid}
        with _library(entry.alg):
            return jws.serialize_compact(header, data, entry.key, algorithms=[entry.alg])
    raise ValueError(f"unknown envelope format {fmt!r}; use legacy, jwe or jws")


def _seal_legacy(data: bytes, entry: KeyEntry) -> str:
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(entry.key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return f"{base64.b64encode(ciphertext).decode()};{base64.b64encode(iv).decode()}"


def sign_record(fields: Mapping[str, Any], keyring: Keyring, kid: str | None = None) -> str:
    """A detached JWS (RFC 7515 appendix F) over the record's canonical form."""
    entry = _pick(keyring, kid, "sig")
    header = {"alg": entry.alg, "kid": entry.kid}
    with _library(entry.alg):
        token = jws.serialize_compact(
            header, canonical_bytes(fields), entry.key, algorithms=[entry.alg]
        )
    head, _, signature = token.split(".")
    return f"{head}..{signature}"
