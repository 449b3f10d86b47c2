"""Key files: which JWKs (RFC 7517) the keyring accepts, and the :class:`KeyEntry` each becomes.

Why the checks are strict:

- A key file *pins* the one algorithm its key may be used with (``alg``; for a ``dir``
  key also ``enc``). The algorithm is never taken from an envelope's header, so a header
  cannot talk us into HMAC with a public key, RSA1_5, PBES2 or ``none``: those are not in
  the tables below, so no key file can name them.
- Weak or mismatched keys (short secrets, RSA under 2048 bits or with the ROCA flaw, the
  wrong curve) are refused before any cryptographic library sees them, and joserfc's
  security warnings become refusals.
- Error messages name the file but never echo key material.
- Legacy AES-CBC keys are ``oct`` JWKs with ``"use": "legacy-cbc"`` (16, 24 or 32 bytes).

Two non-standard members are allowed (JWK permits extra members): ``created`` (ISO 8601,
decides which key is active) and ``enc`` (only on ``dir`` keys; default ``A256GCM``).
"""

from __future__ import annotations

import base64
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from joserfc.jwk import JWKRegistry

from publisher.errors import ConfigError

LEGACY = "legacy-cbc"
#: content encryption algorithms and the key size (bytes) each needs
JWE_ENCS = {
    "A128GCM": 16,
    "A192GCM": 24,
    "A256GCM": 32,
    "A128CBC-HS256": 32,
    "A192CBC-HS384": 48,
    "A256CBC-HS512": 64,
}
#: key management algorithms we accept, by key type (RSA1_5 and PBES2 deliberately absent)
JWE_ALGS = {
    "dir": {"oct"},
    "A128KW": {"oct"},
    "A192KW": {"oct"},
    "A256KW": {"oct"},
    "A128GCMKW": {"oct"},
    "A192GCMKW": {"oct"},
    "A256GCMKW": {"oct"},
    "RSA-OAEP": {"RSA"},
    "RSA-OAEP-256": {"RSA"},
    "ECDH-ES": {"EC", "OKP"},
    "ECDH-ES+A128KW": {"EC", "OKP"},
    "ECDH-ES+A192KW": {"EC", "OKP"},
    "ECDH-ES+A256KW": {"EC", "OKP"},
}
#: signature algorithms we accept, by key type (``none`` deliberately absent)
JWS_ALGS = {
    **{f"HS{n}": {"oct"} for n in (256, 384, 512)},
    **{f"{p}{n}": {"RSA"} for p in ("RS", "PS") for n in (256, 384, 512)},
    **{f"ES{n}": {"EC"} for n in (256, 384, 512)},
    "Ed25519": {"OKP"},  # RFC 9864's fully specified name
    "EdDSA": {"OKP"},  # older, deprecated name: still accepted in key files
}
_ES_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_ECDH_CURVES = {"P-256", "P-384", "P-521", "X25519", "X448"}
_KW_SIZES = {"A128": 16, "A192": 24, "A256": 32}
_LEGACY_SIZES = (16, 24, 32)
_KEY_OPS = {
    "sig": {"sign", "verify"},
    "enc": {"encrypt", "decrypt", "wrapKey", "unwrapKey", "deriveKey", "deriveBits"},
}


@dataclass(frozen=True)
class KeyEntry:
    """One loaded key. ``key`` (joserfc key, or raw bytes for legacy) is kept out of repr."""

    kid: str
    kind: str
    kty: str
    alg: str | None
    use: str | None
    enc: str | None
    created: str | None
    private: bool
    key: Any = field(repr=False, compare=False)

    @property
    def purpose(self) -> str:
        """``legacy``, ``enc`` (JWE) or ``sig`` (JWS)."""
        if self.kind == LEGACY:
            return "legacy"
        return "enc" if self.alg in JWE_ALGS else "sig"

    def sort_key(self) -> tuple[datetime, str]:
        """Newest ``created`` wins; ties broken by kid so the choice is stable."""
        return (_parse_created(self.created), self.kid)


def _parse_created(value: str | None) -> datetime:
    if value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def entry_from_jwk(jwk: Mapping[str, Any], where: str) -> KeyEntry:
    """Check one JWK and turn it into a :class:`KeyEntry` (ConfigError names ``where``)."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 200:
        raise ConfigError(f"key {where}: a non-empty string 'kid' is required")
    created = jwk.get("created")
    if created is not None and not isinstance(created, str):
        raise ConfigError(f"key {where}: 'created' must be an ISO 8601 string")
    try:
        if jwk.get("use") == LEGACY:
            return _legacy_entry(jwk, kid, created)
        return _jose_entry(jwk, kid, created)
    except ConfigError as exc:
        raise ConfigError(f"key {where}: {exc.message}") from None


def _legacy_entry(jwk: Mapping[str, Any], kid: str, created: str | None) -> KeyEntry:
    if jwk.get("kty") != "oct":
        raise ConfigError("a legacy-cbc key must be an 'oct' key")
    raw = _b64url_member(jwk, "k")
    if len(raw) not in _LEGACY_SIZES:
        raise ConfigError("a legacy-cbc key must be 16, 24 or 32 bytes long")
    alg = jwk.get("alg")
    if alg is not None and alg != f"A{len(raw) * 8}CBC":
        raise ConfigError(
            f"a legacy-cbc key of {len(raw)} bytes may only say alg A{len(raw) * 8}CBC"
        )
    return KeyEntry(kid, LEGACY, "oct", alg, LEGACY, None, created, True, raw)


def _jose_entry(jwk: Mapping[str, Any], kid: str, created: str | None) -> KeyEntry:
    kty, alg = jwk.get("kty"), jwk.get("alg")
    allowed = {**JWE_ALGS, **JWS_ALGS}
    if not isinstance(alg, str) or alg not in allowed:
        raise ConfigError("'alg' is required and must be one of " + ", ".join(sorted(allowed)))
    if kty not in allowed[alg]:
        raise ConfigError(f"alg {alg} needs a key of type {' or '.join(sorted(allowed[alg]))}")
    purpose = "enc" if alg in JWE_ALGS else "sig"
    _check_use(jwk, purpose)
    enc = _dir_enc(jwk, alg)
    _check_size(jwk, alg, enc)
    key = _import(jwk)
    private = kty == "oct" or bool(key.is_private)
    return KeyEntry(kid, alg, str(kty), alg, jwk.get("use"), enc, created, private, key)


def _check_use(jwk: Mapping[str, Any], purpose: str) -> None:
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != purpose:
        raise ConfigError(f"'use' must be {purpose!r} for this alg")
    if ops is not None and (not isinstance(ops, list) or not set(ops) <= _KEY_OPS[purpose]):
        raise ConfigError(f"'key_ops' do not fit a {purpose} key")


def _dir_enc(jwk: Mapping[str, Any], alg: str) -> str | None:
    enc = jwk.get("enc")
    if alg != "dir":
        if enc is not None:
            raise ConfigError("'enc' is only meaningful on a 'dir' key")
        return None
    enc = "A256GCM" if enc is None else enc
    if enc not in JWE_ENCS:
        raise ConfigError("'enc' must be one of " + ", ".join(JWE_ENCS))
    return str(enc)


def _check_size(jwk: Mapping[str, Any], alg: str, enc: str | None) -> None:
    """Refuse weak or mismatched keys before any library sees them."""
    kty = jwk.get("kty")
    if kty == "oct":
        size = len(_b64url_member(jwk, "k"))
        need = _oct_size(alg, enc)
        if (alg.startswith("HS") and size < need) or (not alg.startswith("HS") and size != need):
            raise ConfigError(f"alg {alg} needs a {need}-byte key, this one has {size}")
    elif kty == "RSA":
        _check_rsa(_b64url_member(jwk, "n"), _b64url_member(jwk, "e"))
    elif alg in _ES_CURVES and jwk.get("crv") != _ES_CURVES[alg]:
        raise ConfigError(f"alg {alg} needs the curve {_ES_CURVES[alg]}")
    elif alg == "EdDSA" and jwk.get("crv") not in ("Ed25519", "Ed448"):
        raise ConfigError("alg EdDSA needs the curve Ed25519 or Ed448")
    elif alg == "Ed25519" and jwk.get("crv") != "Ed25519":
        raise ConfigError("alg Ed25519 needs the curve Ed25519")
    elif alg.startswith("ECDH-ES") and jwk.get("crv") not in _ECDH_CURVES:
        raise ConfigError(f"alg {alg} needs one of the curves {', '.join(sorted(_ECDH_CURVES))}")


def _oct_size(alg: str, enc: str | None) -> int:
    if alg == "dir":
        return JWE_ENCS[enc or "A256GCM"]
    if alg.startswith("HS"):
        return int(alg[2:]) // 8
    return _KW_SIZES[alg[:4]]


def _check_rsa(n: bytes, e: bytes) -> None:
    modulus, exponent = int.from_bytes(n, "big"), int.from_bytes(e, "big")
    if modulus.bit_length() < 2048:
        raise ConfigError("RSA keys must have at least 2048 bits")
    if exponent < 3 or exponent % 2 == 0:
        raise ConfigError("the RSA public exponent must be odd and at least 3")
    if _roca_fingerprint(modulus):
        raise ConfigError("this RSA key was made by a generator with the ROCA flaw; replace it")


#: ROCA (CVE-2017-15361) fingerprint: a flawed modulus is a power of 65537 modulo each prime
_ROCA_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73)
_ROCA_PRIMES += (79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157)


def _roca_fingerprint(modulus: int) -> bool:
    for prime in _ROCA_PRIMES + (163, 167):
        powers, value = set(), 1
        while value not in powers:
            powers.add(value)
            value = value * 65537 % prime
        if modulus % prime not in powers:
            return False
    return True


def _b64url_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", value):
        raise ConfigError(f"'{name}' must be a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise ConfigError(f"'{name}' must be a base64url string") from None


def _import(jwk: Mapping[str, Any]) -> Any:
    """Import with joserfc; its security warnings become refusals, and nothing is echoed."""
    members = {k: v for k, v in jwk.items() if k not in ("created", "enc")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return JWKRegistry.import_key(members)
    except Exception:
        raise ConfigError(f"not a valid {jwk.get('kty')} key") from None
