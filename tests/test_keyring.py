"""The keyring: key files, permissions, pinning, rotation, and what may be shown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from publisher.errors import ConfigError
from publisher.secured.keyring import (
    KINDS,
    Keyring,
    ensure_dev_key,
    generate_key,
    key_filename,
    rotate,
    write_key,
)

SECRET_MEMBERS = ("k", "d", "p", "q", "dp", "dq", "qi")


def _write_raw(folder: Path, name: str, jwk: dict, mode: int = 0o600) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(jwk))
    path.chmod(mode)
    return path


def test_every_kind_round_trips_through_the_folder(tmp_path: Path) -> None:
    jwks = [generate_key(kind) for kind in KINDS]
    for jwk in jwks:
        path = write_key(tmp_path, jwk)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = Keyring.load(tmp_path)
    assert len(keyring) == len(KINDS)
    for jwk in jwks:
        entry = keyring.get(jwk["kid"])
        assert entry is not None and entry.private
    assert keyring.get(jwks[1]["kid"]).enc == "A256GCM"  # dir keys pin their enc too


def test_describe_and_public_jwks_never_show_secrets(tmp_path: Path) -> None:
    jwks = [generate_key(kind) for kind in KINDS]
    for jwk in jwks:
        write_key(tmp_path, jwk)
    keyring = Keyring.load(tmp_path)
    shown = json.dumps(keyring.describe()) + json.dumps(keyring.public_jwks()) + repr(list(keyring))
    for jwk in jwks:
        for member in SECRET_MEMBERS:
            if member in jwk:
                assert jwk[member] not in shown
    public = keyring.public_jwks()["keys"]
    assert {k["kty"] for k in public} == {"RSA", "EC", "OKP"}
    assert all(not set(SECRET_MEMBERS) & set(k) for k in public)
    assert set(keyring.describe()[0]) >= {"kid", "kty", "alg", "use", "created", "active"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_key_files_readable_by_others_are_refused(tmp_path: Path, mode: int) -> None:
    path = _write_raw(tmp_path, "k.json", generate_key("dir"), mode)
    with pytest.raises(ConfigError) as info:
        Keyring.load(tmp_path)
    assert str(path) in info.value.message and f"chmod 600 {path}" in info.value.message
    assert generate_key.__name__ not in info.value.message


def test_public_key_files_may_be_world_readable(tmp_path: Path) -> None:
    jwk = generate_key("ES256")
    public = {k: v for k, v in jwk.items() if k != "d"}
    _write_raw(tmp_path, "sender.json", public, 0o644)
    entry = Keyring.load(tmp_path).get(jwk["kid"])
    assert entry is not None and not entry.private


@pytest.mark.parametrize(
    ("jwk", "words"),
    [
        ({"kty": "oct", "kid": "a", "k": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "'alg'"),
        ({"kty": "oct", "kid": "a", "alg": "none", "k": "AAAA"}, "'alg'"),
        ({"kty": "oct", "kid": "a", "alg": "HS256", "k": "AAAA"}, "32-byte"),
        ({"kty": "oct", "kid": "a", "use": "legacy-cbc", "k": "AAAA"}, "16, 24 or 32"),
        ({"kty": "oct", "kid": "a", "alg": "dir", "enc": "A128GCM", "k": "A" * 43}, "16-byte"),
        ({"kty": "oct", "kid": "a", "alg": "ES256", "k": "A" * 43}, "type EC"),
        ({"kty": "oct", "alg": "dir", "k": "A" * 43}, "'kid'"),
        ({"kty": "oct", "kid": "a", "alg": "A256KW", "use": "sig", "k": "A" * 43}, "'use'"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(jwk: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Keyring.from_jwks([jwk])
    assert words in info.value.message
    assert "AAAA" not in info.value.message  # never echo key material


def test_legacy_keys_of_each_size_load() -> None:
    import base64

    jwks = [
        {
            "kty": "oct",
            "use": "legacy-cbc",
            "kid": f"l{n}",
            "k": base64.urlsafe_b64encode(bytes(n)).decode().rstrip("="),
        }
        for n in (16, 24, 32)
    ]
    keyring = Keyring.from_jwks(jwks)
    assert [e.kind for e in keyring] == ["legacy-cbc"] * 3


def test_duplicate_kids_in_two_files_are_refused(tmp_path: Path) -> None:
    jwk = generate_key("dir", kid="same")
    _write_raw(tmp_path, "a.json", jwk)
    _write_raw(tmp_path, "b.json", {**generate_key("dir"), "kid": "same"})
    with pytest.raises(ConfigError, match="share the kid"):
        Keyring.load(tmp_path)


def test_write_key_never_overwrites(tmp_path: Path) -> None:
    jwk = generate_key("A256KW", kid="fixed")
    write_key(tmp_path, jwk)
    with pytest.raises(ConfigError):
        write_key(tmp_path, {**generate_key("A256KW"), "kid": "fixed"})
    assert json.loads((tmp_path / "fixed.json").read_text())["k"] == jwk["k"]
    assert not list(tmp_path.glob(".*tmp"))


def test_kid_is_never_a_path(tmp_path: Path) -> None:
    keyring = Keyring.from_jwks([{**generate_key("dir"), "kid": "../../etc/passwd"}])
    assert keyring.get("../../etc/passwd") is not None
    assert keyring.get("passwd") is None
    assert "/" not in key_filename("../../etc/passwd")
    path = write_key(tmp_path, {**generate_key("dir"), "kid": "a/b"})
    assert path.parent == tmp_path


def test_rotate_makes_a_new_active_key_and_keeps_the_old(tmp_path: Path) -> None:
    first = rotate(tmp_path, "ES256")
    second = rotate(tmp_path, "ES256")
    keyring = Keyring.load(tmp_path)
    assert keyring.active("ES256").kid == second
    assert keyring.get(first) is not None
    active = {row["kid"]: row["active"] for row in keyring.describe()}
    assert active == {first: False, second: True}


def test_newest_created_wins_whatever_the_file_order(tmp_path: Path) -> None:
    old = {**generate_key("dir", kid="zzz-old"), "created": "2020-01-01T00:00:00Z"}
    new = {**generate_key("dir", kid="aaa-new"), "created": "2024-01-01T00:00:00+00:00"}
    write_key(tmp_path, old)
    write_key(tmp_path, new)
    assert Keyring.load(tmp_path).active("dir").kid == "aaa-new"


def test_eddsa_is_an_alias_for_ed25519(tmp_path: Path) -> None:
    kid = rotate(tmp_path, "EdDSA")
    keyring = Keyring.load(tmp_path)
    assert keyring.active("EdDSA").kid == kid and keyring.get(kid).alg == "Ed25519"


def test_ensure_dev_key_only_when_empty(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    kid = ensure_dev_key(folder)
    assert kid and kid.startswith("dev-")
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    assert ensure_dev_key(folder) is None
    entry = Keyring.load(folder).get(kid)
    assert (entry.alg, entry.enc) == ("dir", "A256GCM")


def test_missing_folder_is_an_empty_keyring(tmp_path: Path) -> None:
    assert len(Keyring.load(tmp_path / "nope")) == 0


def test_unreadable_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    os.chmod(tmp_path / "broken.json", 0o600)
    with pytest.raises(ConfigError, match="broken.json"):
        Keyring.load(tmp_path)


def test_unknown_kind_and_bad_kid_are_refused() -> None:
    with pytest.raises(ConfigError):
        generate_key("RSA1_5")
    with pytest.raises(ConfigError):
        generate_key("dir", kid="../x")
