"""The keyring: JWK files (RFC 7517) in the keys folder, one key per ``*.json`` file.

Why it is shaped like this:

- A key file *pins* the one algorithm its key may be used with (``alg``; for a ``dir``
  key also ``enc``). The algorithm is never taken from an envelope's header, so a header
  cannot talk us into HMAC with a public key, RSA1_5, PBES2 or ``none``.
- Keys are chosen by ``kid`` through an in-memory dict only; a ``kid`` never becomes a path.
- Several keys live side by side so they can be rotated: the newest ``created`` key of a
  kind (with private material) is *active* for sealing and signing, older ones still open.
- Secret key files readable by group or others are refused at load time.
- Legacy AES-CBC keys are ``oct`` JWKs with ``"use": "legacy-cbc"`` (16, 24 or 32 bytes).

Two non-standard members are allowed (JWK permits extra members): ``created`` (ISO 8601,
decides which key is active) and ``enc`` (only on ``dir`` keys; default ``A256GCM``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, JWKRegistry, OctKey, OKPKey, RSAKey

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
_MAX_KEY_FILE = 64 * 1024
_KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_OPS = {
    "sig": {"sign", "verify"},
    "enc": {"encrypt", "decrypt", "wrapKey", "unwrapKey", "deriveKey", "deriveBits"},
}
#: the kinds ``generate_key`` makes (``kind`` is ``legacy-cbc`` or the pinned ``alg``)
KINDS = (
    LEGACY,
    "dir",
    "A256KW",
    "RSA-OAEP-256",
    "ECDH-ES+A256KW",
    "RS256",
    "ES256",
    "Ed25519",
    "HS256",
)
#: ``EdDSA`` is deprecated by RFC 9864; asking for it makes an ``Ed25519`` key
KIND_ALIASES = {"EdDSA": "Ed25519"}
_JOSE_TYPES = {"oct": OctKey, "RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}


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


class Keyring:
    """The keys the service holds, looked up by ``kid`` in memory."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._by_kid: dict[str, KeyEntry] = {}
        for entry in entries:
            if entry.kid in self._by_kid:
                raise ConfigError(f"two keys share the kid {entry.kid!r}")
            self._by_kid[entry.kid] = entry

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Load every ``*.json`` file of the folder; a missing folder is an empty keyring."""
        folder = Path(path)
        if not folder.is_dir():
            return cls()
        entries, seen = [], {}
        for file in sorted(folder.glob("*.json")):
            if not file.is_file():
                continue
            entry = _load_file(file)
            if entry.kid in seen:
                raise ConfigError(
                    f"key files {seen[entry.kid]} and {file.name} share the kid {entry.kid!r}"
                )
            seen[entry.kid] = file.name
            entries.append(entry)
        return cls(entries)

    @classmethod
    def from_jwks(cls, jwks: Iterable[Mapping[str, Any]]) -> Keyring:
        """Build a keyring from JWK dicts already in memory (tests, tools); same checks."""
        return cls(entry_from_jwk(jwk, "<memory>") for jwk in jwks)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def get(self, kid: str) -> KeyEntry | None:
        """The key with this kid, or None. ``kid`` is only ever a dict key."""
        return self._by_kid.get(kid) if isinstance(kid, str) else None

    def of_kind(self, kind: str) -> list[KeyEntry]:
        """Keys of one kind (``legacy-cbc`` or an ``alg``), newest first."""
        kind = KIND_ALIASES.get(kind, kind)
        found = [e for e in self._by_kid.values() if e.kind == kind]
        return sorted(found, key=KeyEntry.sort_key, reverse=True)

    def active(self, kind: str) -> KeyEntry | None:
        """The key used to seal or sign for this kind: the newest one holding private material."""
        return next((e for e in self.of_kind(kind) if e.private), None)

    def newest(self, purpose: str) -> KeyEntry | None:
        """The newest active key for a purpose (``enc``, ``sig``, ``legacy``)."""
        actives = [self.active(k) for k in {e.kind for e in self if e.purpose == purpose}]
        found = [e for e in actives if e is not None]
        return max(found, key=KeyEntry.sort_key, default=None)

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """A JWKS of the public halves of asymmetric keys; symmetric keys never appear."""
        keys = []
        for entry in sorted(self, key=lambda e: e.kid):
            if entry.kty != "oct":
                public = dict(entry.key.as_dict(private=False))
                public.update(kid=entry.kid, alg=entry.alg, use=entry.purpose)
                keys.append(public)
        return {"keys": keys}

    def describe(self) -> list[dict[str, Any]]:
        """What an operator may see about each key: never secret material."""
        actives = {e.kid for e in (self.active(k) for k in {e.kind for e in self}) if e}
        return [
            {
                "kid": e.kid,
                "kind": e.kind,
                "kty": e.kty,
                "alg": e.alg,
                "use": e.use,
                "created": e.created,
                "active": e.kid in actives,
            }
            for e in sorted(self, key=lambda e: (e.kind, e.sort_key()))
        ]


def _parse_created(value: str | None) -> datetime:
    if value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _load_file(file: Path) -> KeyEntry:
    """Read one key file; refuse it when it holds a secret others could read."""
    try:
        st = file.stat()
        if st.st_size > _MAX_KEY_FILE:
            raise ConfigError(f"key file {file} is too large to be a JWK")
        data = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"key file {file} is not readable JSON") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"key file {file} must hold one JWK (a JSON object)")
    if _holds_secret(data) and os.name != "nt" and stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"key file {file} holds a secret key and is readable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod 600 {file}"
        )
    return entry_from_jwk(data, str(file))


def _holds_secret(jwk: Mapping[str, Any]) -> bool:
    return jwk.get("kty") == "oct" or "d" in jwk or "k" in jwk


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate_key(kind: str, kid: str | None = None) -> dict[str, Any]:
    """A new JWK (with private material) of one of :data:`KINDS`."""
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ConfigError(f"unknown key kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kid is not None and not _KID_RE.fullmatch(kid):
        raise ConfigError("a kid must be 1-64 letters, digits, '.', '_' or '-'")
    kid = (
        kid or f"{kind.lower().replace('+', '-')}-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
    )
    jwk = _new_material(kind)
    if kind == LEGACY:
        jwk["use"] = LEGACY
    else:
        jwk.update(alg=kind, use="enc" if kind in JWE_ALGS else "sig")
    if kind == "dir":
        jwk["enc"] = "A256GCM"
    jwk.update(kid=kid, created=_now())
    return jwk


def _new_material(kind: str) -> dict[str, Any]:
    if kind in (LEGACY, "dir", "A256KW", "HS256"):
        return {"kty": "oct", "k": _b64url(secrets.token_bytes(32))}
    if kind in ("RSA-OAEP-256", "RS256"):
        return dict(RSAKey.generate_key(2048).as_dict(private=True))
    if kind in ("ECDH-ES+A256KW", "ES256"):
        return dict(ECKey.generate_key("P-256").as_dict(private=True))
    return dict(OKPKey.generate_key("Ed25519").as_dict(private=True))


def key_filename(kid: str) -> str:
    """The file name for a kid: the kid itself when plain, else a digest of it."""
    if _KID_RE.fullmatch(kid):
        return f"{kid}.json"
    import hashlib

    return f"key-{hashlib.sha256(kid.encode()).hexdigest()[:16]}.json"


def write_key(folder: str | os.PathLike[str], jwk: Mapping[str, Any]) -> Path:
    """Write a key file with mode 0600, atomically, never replacing an existing file."""
    folder = Path(folder)
    entry = entry_from_jwk(jwk, "to write")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if Keyring.load(folder).get(entry.kid) is not None:
        raise ConfigError(f"the keyring already holds a key with kid {entry.kid!r}")
    final = folder / key_filename(entry.kid)
    tmp = folder / f".{final.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dict(jwk), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, final)  # atomic, and fails rather than overwrite
    except FileExistsError:
        raise ConfigError(f"key file {final} already exists") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate(folder: str | os.PathLike[str], kind: str) -> str:
    """Make a new active key of ``kind``; older keys stay so old envelopes still open."""
    Keyring.load(folder)  # refuse to rotate on top of a keyring that does not load
    jwk = generate_key(kind)
    write_key(folder, jwk)
    return str(jwk["kid"])


def ensure_dev_key(folder: str | os.PathLike[str]) -> str | None:
    """Make a development ``dir`` (A256GCM) key when the folder holds no key; return its kid."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.glob("*.json")):
        return None
    jwk = generate_key("dir", kid=f"dev-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}")
    write_key(folder, jwk)
    return str(jwk["kid"])
