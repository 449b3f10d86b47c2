"""Opening and sealing ``secured`` envelopes: interop, tampering, refusals, public vectors."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jwcrypto import jwe as jc_jwe
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from publisher.errors import ConfigError
from publisher.secured.canonical import canonical_bytes
from publisher.secured.envelopes import (
    INVALID,
    open_envelope,
    open_secured,
    seal,
    sign_record,
)
from publisher.secured.keyring import KINDS, Keyring, generate_key, rotate, write_key

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "vectors"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seed() -> dict[str, Any]:
    text = (DATA / "seed-record.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1])


def _keyring_with(tmp_path: Path, *kinds: str) -> tuple[Keyring, dict[str, dict[str, Any]]]:
    """Generate keys of ``kinds`` into a temp keys folder and load it like the service does."""
    jwks = {}
    for kind in kinds:
        jwk = generate_key(kind)
        write_key(tmp_path / "keys", jwk)
        jwks[kind] = jwk
    return Keyring.load(tmp_path / "keys"), jwks


def _refused(result: Any) -> bool:
    return result == INVALID or (result.status == "sealed" and result.protected is None)


# -- the seed record ------------------------------------------------------------------------


def test_seed_record_is_sealed_without_keys() -> None:
    seed = _seed()
    result = open_secured(seed["secured"], seed, Keyring())
    assert (result.status, result.format, result.protected) == ("sealed", "legacy", None)


def test_seed_record_is_sealed_with_only_non_legacy_keys(tmp_path: Path) -> None:
    seed = _seed()
    keyring, _ = _keyring_with(tmp_path, "dir", "A256KW", "ES256")
    assert open_secured(seed["secured"], seed, keyring).status == "sealed"


def test_seed_record_is_invalid_with_a_legacy_key_that_is_not_its_own(tmp_path: Path) -> None:
    seed = _seed()
    keyring, _ = _keyring_with(tmp_path, "legacy-cbc")
    assert open_secured(seed["secured"], seed, keyring) == INVALID


def test_absent_and_blank_values() -> None:
    assert open_secured(None, {}, Keyring()).status == "absent"
    assert open_secured("  ", {}, Keyring()).status == "absent"
    assert open_secured(42, {}, Keyring()) == INVALID  # type: ignore[arg-type]


# -- legacy CBC made with plain cryptography ---------------------------------------------------


def _cbc_envelope(key: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, str]:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    return ct, f"{base64.b64encode(ct).decode()};{base64.b64encode(iv).decode()}"


def _legacy_keyring(key: bytes, kid: str = "legacy-1") -> Keyring:
    return Keyring.from_jwks([{"kty": "oct", "use": "legacy-cbc", "kid": kid, "k": _b64u(key)}])


def test_legacy_envelope_from_cryptography_decrypts_unauthenticated() -> None:
    key, iv = bytes(range(32)), bytes(range(16, 32))
    _, envelope = _cbc_envelope(key, iv, json.dumps({"email": "a@example.org"}).encode())
    result = open_envelope(envelope, _legacy_keyring(key))
    assert result.status == "decrypted-unauthenticated"
    assert result.protected == {"email": "a@example.org"}
    assert (result.kid, result.format) == ("legacy-1", "legacy")


def test_legacy_tries_every_legacy_key() -> None:
    good, other = bytes(range(16)), bytes(range(100, 132))
    _, envelope = _cbc_envelope(good, b"\x01" * 16, b"plain text")
    keyring = Keyring.from_jwks(
        [
            {"kty": "oct", "use": "legacy-cbc", "kid": "a", "k": _b64u(other)},
            {"kty": "oct", "use": "legacy-cbc", "kid": "b", "k": _b64u(good)},
        ]
    )
    result = open_envelope(envelope, keyring)
    assert (result.status, result.kid, result.protected) == (
        "decrypted-unauthenticated",
        "b",
        {"text": "plain text"},
    )


def test_every_single_bit_flip_gives_decrypted_or_the_one_invalid_outcome() -> None:
    key, iv = bytes(range(32)), bytes(range(16))
    ct, _ = _cbc_envelope(key, iv, json.dumps({"secret": "x" * 20}).encode())
    keyring = _legacy_keyring(key)
    outcomes = set()
    for part in ("ct", "iv"):
        data = ct if part == "ct" else iv
        for bit in range(len(data) * 8):
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            c, i = (bytes(flipped), iv) if part == "ct" else (ct, bytes(flipped))
            env = f"{base64.b64encode(c).decode()};{base64.b64encode(i).decode()}"
            result = open_envelope(env, keyring)
            assert result.status == "decrypted-unauthenticated" or result == INVALID
            outcomes.add(result.status if result == INVALID else "decrypted")
    assert outcomes == {"decrypted", "invalid"}  # both happen: the test can tell them apart


@pytest.mark.parametrize(
    "envelope",
    [
        "not base64!;AAAAAAAAAAAAAAAAAAAAAA==",
        "AAAAAAAAAAAAAAAAAAAAAA==;AAAA",  # IV too short
        "AAAAAAAAAAAAAAAAAAAA;AAAAAAAAAAAAAAAAAAAAAA==",  # ciphertext not whole blocks
        ";AAAAAAAAAAAAAAAAAAAAAA==",
        "AAAAAAAAAAAAAAAAAAAAAA==;AAAAAAAAAAAAAAAAAAAAAB==",  # non-canonical base64
        "a;b;c",
    ],
)
def test_malformed_legacy_is_invalid_even_without_keys(envelope: str) -> None:
    assert open_envelope(envelope, Keyring()) == INVALID
    assert open_envelope(envelope, _legacy_keyring(bytes(16))) == INVALID


def _wycheproof(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / "wycheproof" / name).read_text(encoding="utf-8"))


def _cbc_cases() -> list[tuple[dict[str, Any], str]]:
    data = _wycheproof("aes_cbc_pkcs5_test.json")
    return [(t, f"tc{t['tcId']}") for g in data["testGroups"] for t in g["tests"]]


@pytest.mark.parametrize("case", [c for c, _ in _cbc_cases()], ids=[i for _, i in _cbc_cases()])
def test_wycheproof_aes_cbc(case: dict[str, Any]) -> None:
    """Valid cases decrypt to the message (or, if it is not UTF-8 text, to the same refusal
    as everything else); invalid ones (bad padding) always give the one invalid outcome."""
    key, iv, ct = (bytes.fromhex(case[k]) for k in ("key", "iv", "ct"))
    envelope = f"{base64.b64encode(ct).decode()};{base64.b64encode(iv).decode()}"
    result = open_envelope(envelope, _legacy_keyring(key))
    if case["result"] == "valid":
        try:
            text = bytes.fromhex(case["msg"]).decode("utf-8")
        except UnicodeDecodeError:
            assert result == INVALID  # not text: refused like any other failure
        else:
            assert result.status == "decrypted-unauthenticated"
            assert result.protected == {"text": text}
    else:
        assert result == INVALID


# -- envelopes made by an independent library (jwcrypto) --------------------------------------


@pytest.mark.parametrize("kind", ["dir", "A256KW", "RSA-OAEP-256", "ECDH-ES+A256KW"])
def test_jwe_made_by_jwcrypto_decrypts(tmp_path: Path, kind: str) -> None:
    keyring, jwks = _keyring_with(tmp_path, kind)
    jwk = jwks[kind]
    public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "created")}
    key = jc_jwk.JWK(**{k: v for k, v in public.items() if k != "enc"})
    token = jc_jwe.JWE(
        json.dumps({"email": "a@example.org"}).encode(),
        json.dumps({"alg": jwk["alg"], "enc": "A256GCM", "kid": jwk["kid"]}),
    )
    token.add_recipient(key)
    result = open_envelope(token.serialize(compact=True), keyring)
    assert result.status == "decrypted"
    assert (result.protected, result.kid, result.format) == (
        {"email": "a@example.org"},
        jwk["kid"],
        "jwe",
    )


@pytest.mark.parametrize("kind", ["RS256", "ES256", "Ed25519", "HS256"])
@pytest.mark.parametrize("detached", [True, False])
def test_jws_made_by_jwcrypto_verifies_over_the_canonical_form(
    tmp_path: Path, kind: str, detached: bool
) -> None:
    keyring, jwks = _keyring_with(tmp_path, kind)
    jwk = jwks[kind]
    seed = _seed()
    signer = jc_jws.JWS(canonical_bytes(seed))
    signer.add_signature(
        jc_jwk.JWK(**{k: v for k, v in jwk.items() if k != "created"}),
        protected=json.dumps({"alg": jwk["alg"], "kid": jwk["kid"]}),
    )
    head, payload, signature = signer.serialize(compact=True).split(".")
    token = f"{head}.{'' if detached else payload}.{signature}"
    record = {**seed, "secured": token}
    result = open_secured(token, record, keyring)
    assert (result.status, result.kid, result.format) == ("verified", jwk["kid"], "jws")
    changed = {**record, "heat": 5}
    assert open_secured(token, changed, keyring) == INVALID


def test_jwcrypto_can_open_what_we_seal(tmp_path: Path) -> None:
    keyring, jwks = _keyring_with(tmp_path, "dir")
    jwk = jwks["dir"]
    envelope = seal({"a": 1}, keyring, "jwe")
    token = jc_jwe.JWE()
    token.deserialize(envelope, key=jc_jwk.JWK(kty="oct", k=jwk["k"]))
    assert json.loads(token.payload) == {"a": 1}


@pytest.mark.parametrize("fmt", ["legacy", "jwe", "jws"])
def test_seal_and_open_round_trip(tmp_path: Path, fmt: str) -> None:
    keyring, _ = _keyring_with(tmp_path, *KINDS)
    for plaintext, expected in (({"a": "é"}, {"a": "é"}), ("just text", {"text": "just text"})):
        result = open_envelope(seal(plaintext, keyring, fmt), keyring)
        assert result.opened and result.protected == expected


def test_seal_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        seal({"a": 1}, Keyring(), "jwe")
    with pytest.raises(ValueError):
        seal({"a": 1}, Keyring(), "pgp")  # type: ignore[arg-type]


def test_sign_record_is_detached_and_verifies(tmp_path: Path) -> None:
    keyring, _ = _keyring_with(tmp_path, "ES256")
    seed = _seed()
    token = sign_record(seed, keyring)
    assert token.split(".")[1] == ""
    assert open_secured(token, {**seed, "secured": token}, keyring).status == "verified"
    assert open_envelope(token, keyring) == INVALID  # detached needs the record


def test_only_a_jws_needs_the_record_in_its_canonical_form(tmp_path: Path) -> None:
    """A record JCS cannot write (an integer beyond I-JSON) fails a JWS check, but an
    envelope that signs nothing is judged on its own."""
    keyring, _ = _keyring_with(tmp_path, "ES256")
    seed = _seed()
    token = sign_record(seed, keyring)
    huge = {**seed, "heat": 2**60}
    assert open_secured(token, {**huge, "secured": token}, keyring) == INVALID
    assert open_secured(seed["secured"], huge, keyring).status == "sealed"


def test_after_rotate_old_and_new_envelopes_open(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    old_kid = rotate(folder, "dir")
    old = seal({"v": "old"}, Keyring.load(folder), "jwe")
    new_kid = rotate(folder, "dir")
    keyring = Keyring.load(folder)
    new = seal({"v": "new"}, keyring, "jwe")
    assert keyring.active("dir").kid == new_kid != old_kid
    assert open_envelope(old, keyring).protected == {"v": "old"}
    assert open_envelope(old, keyring).kid == old_kid
    assert open_envelope(new, keyring).protected == {"v": "new"}


# -- refusals ---------------------------------------------------------------------------------


def _jwe_with_header(keyring: Keyring, key_id: str, **changes: Any) -> str:
    """A genuine dir+A256GCM JWE, then its header replaced (so the tag no longer matches)."""
    token = seal({"a": 1}, keyring, "jwe", kid=key_id).split(".")
    header = json.loads(_unb64u(token[0]))
    header.update(changes)
    header = {k: v for k, v in header.items() if v is not None}
    token[0] = _b64u(json.dumps(header).encode())
    return ".".join(token)


@pytest.fixture
def dir_keyring(tmp_path: Path) -> tuple[Keyring, str]:
    keyring, jwks = _keyring_with(tmp_path, "dir", "RS256", "legacy-cbc")
    return keyring, jwks["dir"]["kid"]


@pytest.mark.parametrize(
    "changes",
    [
        {"alg": "none"},
        {"alg": "RSA1_5"},
        {"kid": 42},
        {},  # untouched header: a genuine envelope, then the tag below is broken
    ],
)
def test_refused_headers_give_the_one_invalid_outcome_quickly(
    dir_keyring: tuple[Keyring, str], changes: dict[str, Any]
) -> None:
    keyring, kid = dir_keyring
    token = _jwe_with_header(keyring, kid, **changes)
    if not changes:
        parts = token.split(".")
        parts[4] = _b64u(bytes(b ^ 1 for b in _unb64u(parts[4])))  # tampered tag
        token = ".".join(parts)
    started = time.perf_counter()
    assert open_envelope(token, keyring) == INVALID
    assert time.perf_counter() - started < 0.5


REFUSED_MEMBERS = [
    {"zip": "DEF"},
    {"crit": ["exp"], "exp": 1},
    {"jwk": {"kty": "oct", "k": "AAAA"}},
    {"jku": "https://attacker.example/jwks"},
    {"x5u": "https://attacker.example/cert"},
    {"x5c": ["MIIB"]},
    {"b64": False},
]


def _genuine_jwe(secret: str, header: dict[str, Any]) -> str:
    """A JWE that jwcrypto really encrypted under this header with our key's bytes."""
    token = jc_jwe.JWE(b'{"a":1}', json.dumps(header))
    token.add_recipient(jc_jwk.JWK(kty="oct", k=secret))
    return token.serialize(compact=True)


@pytest.mark.parametrize("extra", REFUSED_MEMBERS)
def test_genuine_jwe_with_a_refused_header_member_is_invalid(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    keyring, jwks = _keyring_with(tmp_path, "dir")
    jwk = jwks["dir"]
    header = {"alg": "dir", "enc": "A256GCM", "kid": jwk["kid"]}
    assert open_envelope(_genuine_jwe(jwk["k"], header), keyring).status == "decrypted"
    started = time.perf_counter()
    assert open_envelope(_genuine_jwe(jwk["k"], {**header, **extra}), keyring) == INVALID
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "A256KW", "enc": "A256GCM"},  # same key bytes, another alg than the file pins
        {"alg": "dir", "enc": "A128CBC-HS256"},  # same key size, another enc than pinned
        {"alg": "PBES2-HS256+A128KW", "enc": "A256GCM"},  # never allowed
    ],
)
def test_genuine_jwe_with_an_algorithm_the_key_does_not_pin_is_invalid(
    tmp_path: Path, header: dict[str, Any]
) -> None:
    keyring, jwks = _keyring_with(tmp_path, "dir")
    jwk = jwks["dir"]
    token = _genuine_jwe(jwk["k"], {**header, "kid": jwk["kid"]})
    assert open_envelope(token, keyring) == INVALID


@pytest.mark.parametrize("extra", REFUSED_MEMBERS[2:])  # jwcrypto will not sign crit:exp
def test_genuine_jws_with_a_refused_header_member_is_invalid(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    keyring, jwks = _keyring_with(tmp_path, "HS256")
    jwk = jwks["HS256"]

    def token(header: dict[str, Any]) -> str:
        signer = jc_jws.JWS(b"payload")
        signer.add_signature(jc_jwk.JWK(kty="oct", k=jwk["k"]), protected=json.dumps(header))
        return signer.serialize(compact=True)

    header = {"alg": "HS256", "kid": jwk["kid"]}
    assert open_envelope(token(header), keyring).status == "verified"
    if "b64" in extra:
        extra = {**extra, "crit": ["b64"]}
    assert open_envelope(token({**header, **extra}), keyring, b"payload") == INVALID


def test_unknown_kid_is_sealed_not_opened(dir_keyring: tuple[Keyring, str]) -> None:
    keyring, kid = dir_keyring
    result = open_envelope(_jwe_with_header(keyring, kid, kid="someone-else"), keyring)
    assert (result.status, result.protected, result.kid) == ("sealed", None, "someone-else")


def test_hmac_with_an_asymmetric_key_is_refused(dir_keyring: tuple[Keyring, str]) -> None:
    """The classic confusion: HS256 keyed with the RSA public key's bytes."""
    keyring, _ = dir_keyring
    rsa = keyring.active("RS256")
    public = json.dumps(rsa.key.as_dict(private=False), sort_keys=True).encode()
    signer = jc_jws.JWS(b"{}")
    signer.add_signature(
        jc_jwk.JWK(kty="oct", k=_b64u(public)),
        protected=json.dumps({"alg": "HS256", "kid": rsa.kid}),
    )
    assert open_envelope(signer.serialize(compact=True), keyring) == INVALID


def test_size_caps_and_shapes(dir_keyring: tuple[Keyring, str]) -> None:
    keyring, kid = dir_keyring
    good = seal({"a": 1}, keyring, "jwe", kid=kid)
    assert open_envelope(good, keyring).status == "decrypted"
    big_header = _jwe_with_header(keyring, kid, typ="x" * 4000)
    huge = good + "A" * 200_000
    duplicate = _b64u(b'{"alg":"dir","alg":"dir","enc":"A256GCM","kid":"%s"}' % kid.encode())
    for token in (
        big_header,
        huge,
        ".".join([duplicate, *good.split(".")[1:]]),
        good.replace(".", "..", 1),
        json.dumps({"protected": good.split(".")[0]}),  # JSON serialisation: not accepted
        "a.b",
        "",
    ):
        result = open_envelope(token, keyring)
        assert result == INVALID, token[:80]


# -- public vectors: Wycheproof JOSE ------------------------------------------------------------
# Categories where our documented policy gives another verdict than the vector file, by tcId.
# Everything else must match: valid opens, invalid gets the uniform refusal (INVALID, or
# ``sealed`` when the token names a kid or alg we hold no key for).
JWS_VALID_WE_REFUSE = {
    # The key file pins the algorithm: these keys say PS256 but sign PS384 (RFC 7520 fig. 20).
    346: "pinned alg",
    350: "pinned alg",
    # The key says "ES521", which is no registered algorithm: the key itself is refused.
    # (The same RFC 7520 examples open below with correctly labelled keys.)
    347: "key refused",
    351: "key refused",
    # A '?' inside a segment: we decode base64url strictly (RFC 7515 section 2).
    372: "strict base64url",
    373: "strict base64url",
}
# In this copy of the file these "invalid padding" cases are byte-for-byte the valid case 357
# (their padding characters are missing), so they must verify like it.
JWS_SAME_AS_VALID = {367: 357, 370: 357}
JWE_VALID_WE_REFUSE = {
    **{n: "RSA1_5 refused (key refused)" for n in (100, 101, 102, 103, 104, 105, 112, 128)},
    132: "dir key labelled 'A128GCM' instead of alg dir + enc: key refused",
    135: "zip refused (compression before encryption leaks length)",
}
# A keyset mixing a secret HS256 key and a public EC key: accepted on purpose, since the keys
# folder holds both; each key is pinned to one alg, so no confusion between them is possible.
JWK_INVALID_WE_OPEN = {1: "mixed keyset"}


def _group_keyring(group: dict[str, Any], prefer_public: bool) -> Keyring | None:
    key = (group.get("public") if prefer_public else None) or group["private"]
    try:
        return Keyring.from_jwks(key.get("keys", [key]))
    except ConfigError:
        return None


def _jose_cases(name: str, field: str) -> list[Any]:
    data = _wycheproof(name)
    cases = []
    for group in data["testGroups"]:
        for test in group["tests"]:
            cases.append(pytest.param(group, test, field, id=f"tc{test['tcId']}"))
    return cases


def _token(test: dict[str, Any], field: str) -> str:
    value = test[field]
    return value if isinstance(value, str) else json.dumps(value)


def _assert_uniform_refusal(token: str, keyring: Keyring, result: Any) -> None:
    if result.status == "sealed":  # only when we truly hold no key for it
        header = json.loads(_unb64u(token.split(".")[0]))
        kid = header.get("kid")
        assert (kid is not None and keyring.get(kid) is None) or not keyring.of_kind(header["alg"])
        assert result.protected is None
    else:
        assert result == INVALID


def _signed_content(token: str) -> bytes | None:
    parts = token.split(".")
    try:
        return _unb64u(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


@pytest.mark.parametrize(
    ("group", "test", "field"), _jose_cases("json_web_signature_test.json", "jws")
)
def test_wycheproof_jws(group: dict[str, Any], test: dict[str, Any], field: str) -> None:
    keyring = _group_keyring(group, prefer_public=True)
    token, tc = _token(test, field), test["tcId"]
    result = open_envelope(token, keyring or Keyring(), _signed_content(token))
    if JWS_VALID_WE_REFUSE.get(tc) == "key refused":
        assert keyring is None
    if tc in JWS_SAME_AS_VALID:
        same = JWS_SAME_AS_VALID[tc]
        assert token == _token(_by_id("json_web_signature_test.json", same), field)
        assert result.status == "verified"
    elif test["result"] == "valid" and tc not in JWS_VALID_WE_REFUSE:
        assert result.status == "verified", result
    else:
        _assert_uniform_refusal(token, keyring or Keyring(), result)


@pytest.mark.parametrize(("group", "test", "field"), _jose_cases("json_web_key_test.json", "jws"))
def test_wycheproof_jwk(group: dict[str, Any], test: dict[str, Any], field: str) -> None:
    """Key checks: weak, mislabelled or malformed keys are refused when the keyring loads."""
    keyring = _group_keyring(group, prefer_public=True)
    token, tc = _token(test, field), test["tcId"]
    result = open_envelope(token, keyring or Keyring(), _signed_content(token))
    if test["result"] == "valid" or tc in JWK_INVALID_WE_OPEN:
        assert result.status == "verified", result
    else:
        _assert_uniform_refusal(token, keyring or Keyring(), result)


def _by_id(name: str, tc: int) -> dict[str, Any]:
    tests = (t for g in _wycheproof(name)["testGroups"] for t in g["tests"])
    return next(t for t in tests if t["tcId"] == tc)


@pytest.mark.parametrize(
    ("group", "test", "field"), _jose_cases("json_web_encryption_test.json", "jwe")
)
def test_wycheproof_jwe(group: dict[str, Any], test: dict[str, Any], field: str) -> None:
    keyring = _group_keyring(group, prefer_public=False)
    token = _token(test, field)
    result = open_envelope(token, keyring or Keyring())
    tc = test["tcId"]
    if "RSA1_5" in JWE_VALID_WE_REFUSE.get(tc, "") or tc == 132:
        assert keyring is None  # refused at load, not silently ignored
    if test["result"] == "valid" and tc not in JWE_VALID_WE_REFUSE:
        assert result.status == "decrypted", result
        if "pt" in test:
            assert result.protected == {"text": bytes.fromhex(test["pt"]).decode()}
    else:
        _assert_uniform_refusal(token, keyring or Keyring(), result)


# -- public vectors: RFC 7520 cookbook ----------------------------------------------------------


def _rfc7520_keys() -> dict[tuple[str, str], dict[str, Any]]:
    """The cookbook's keys by (kid, kty): the fixtures name files that are not shipped, and
    Wycheproof carries the same keys. Their ``alg`` labels are replaced by the examples' own."""
    keys = {}
    for name in ("json_web_signature_test.json", "json_web_encryption_test.json"):
        for group in _wycheproof(name)["testGroups"]:
            if group["comment"].startswith("rfc") or group["comment"] == "rfc_7520":
                key = group["private"]
                keys[(key["kid"], key["kty"])] = key
    return keys


def _pinned(key: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    pinned = {k: v for k, v in key.items() if k not in ("alg", "key_ops")}
    pinned["alg"] = header["alg"]
    if header["alg"] == "dir":
        pinned["enc"] = header["enc"]
    return pinned


def _rfc7520(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / "rfc7520" / name).read_text(encoding="utf-8"))


_KTY = {"R": "RSA", "P": "RSA", "E": "EC", "H": "oct", "d": "oct", "A": "oct"}


@pytest.mark.parametrize("test", _rfc7520("jws_rfc7520.json")["tests"], ids=lambda t: t["name"])
def test_rfc7520_jws(test: dict[str, Any]) -> None:
    header = test["protected"]
    key = _rfc7520_keys()[(header["kid"], _KTY[header["alg"][0]])]
    keyring = Keyring.from_jwks([_pinned(key, header)])
    result = open_envelope(test["compact"], keyring)
    assert result.status == "verified"
    assert result.protected == {"text": _rfc7520("jws_rfc7520.json")["payload"]}
    assert open_envelope(json.dumps(test["flattened_json"]), keyring) == INVALID


@pytest.mark.parametrize("test", _rfc7520("jwe_rfc7520.json")["tests"], ids=lambda t: t["name"])
def test_rfc7520_jwe(test: dict[str, Any]) -> None:
    header = test["protected"]
    kty = {"RSA1_5": "RSA", "RSA-OAEP": "RSA", "dir": "oct"}.get(header["alg"], "EC")
    key = _rfc7520_keys()[(header["kid"], kty)]
    if header["alg"] == "RSA1_5":
        # Deliberately not allowed (Bleichenbacher): the key cannot even be loaded for it,
        # and with any other key the envelope gets the uniform refusal.
        with pytest.raises(ConfigError):
            Keyring.from_jwks([_pinned(key, header)])
        other = {**_pinned(key, {"alg": "RSA-OAEP"})}
        assert open_envelope(test["compact"], Keyring.from_jwks([other])) == INVALID
        return
    result = open_envelope(test["compact"], Keyring.from_jwks([_pinned(key, header)]))
    assert result.status == "decrypted"
    assert "Frodo" in result.protected["text"]
