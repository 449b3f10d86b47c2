"""The keyring: JWK files (RFC 7517) in the keys folder, one key per ``*.json`` file.

Why it is shaped like this:

- What a key file may hold, and the algorithm it pins, is checked by
  :mod:`publisher.secured.keyfiles`; a key is only ever used with that pinned algorithm.
- Keys are chosen by ``kid`` through an in-memory dict only; a ``kid`` never becomes a path.
- Several keys live side by side so they can be rotated: the newest ``created`` key of a
  kind (with private material) is *active* for sealing and signing, older ones still open.
- Secret key files readable by group or others are refused at load time.
- New key files are written with mode 0600 and never replace an existing file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from publisher.errors import ConfigError
from publisher.fileio import fsync_folder
from publisher.secured.keyfiles import (
    JWE_ALGS,
    JWE_ENCS,
    JWS_ALGS,
    LEGACY,
    KeyEntry,
    entry_from_jwk,
)

log = logging.getLogger("publisher.secured.keyring")

__all__ = [
    "JWE_ALGS",
    "JWE_ENCS",
    "JWS_ALGS",
    "KINDS",
    "KIND_ALIASES",
    "LEGACY",
    "KeyEntry",
    "Keyring",
    "ensure_dev_key",
    "entry_from_jwk",
    "generate_key",
    "key_filename",
    "rotate",
    "write_key",
]

_MAX_KEY_FILE = 64 * 1024
_KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
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
    fsync_folder(folder)
    return final


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


class LiveKeyring(Keyring):
    """The keys folder as it is now, in every running process, without a restart.

    Each lookup first makes a cheap check, at most every ``check_seconds``: the folder's
    entries, sizes and modification times. When they changed (a key added, rotated or
    removed), the folder is loaded again; ``reload()`` (SIGHUP) forces it. A folder that
    fails to load (a half-written file, a bad key) keeps the keys in use and logs why.
    """

    def __init__(self, folder: str | os.PathLike[str], check_seconds: float = 1.0) -> None:
        self.folder = Path(folder)
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._stamp = self._signature()
        self._checked = time.monotonic()
        super().__init__(Keyring.load(self.folder))

    def reload(self) -> None:
        with self._lock:
            self._load(self._signature())

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = sorted(self.folder.glob("*.json"))
            stats = [(file.name, *_stat(file)) for file in files]
        except OSError:
            return ()
        return tuple(stats)

    def _load(self, stamp: tuple[tuple[str, int, int], ...]) -> None:
        try:
            fresh = Keyring.load(self.folder)
        except Exception as exc:  # noqa: BLE001 - keep serving with the keys we have
            log.warning("keys folder %s not reloaded: %s", self.folder, exc)
        else:
            self._by_kid = fresh._by_kid
            log.info("keys folder %s reloaded: %d keys", self.folder, len(fresh))
        self._stamp = stamp

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_seconds:
            return
        with self._lock:
            self._checked = now
            stamp = self._signature()
            if stamp != self._stamp:
                self._load(stamp)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._fresh()
        return super().__iter__()

    def __len__(self) -> int:
        self._fresh()
        return super().__len__()

    def get(self, kid: str) -> KeyEntry | None:
        self._fresh()
        return super().get(kid)

    def of_kind(self, kind: str) -> list[KeyEntry]:
        self._fresh()
        return super().of_kind(kind)


def _stat(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_size, info.st_mtime_ns
