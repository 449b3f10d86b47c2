"""``keys generate|list|rotate|export-public``, ``seal`` and ``open`` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from publisher.cli.keys import keys_group, open_command, seal_command
from publisher.errors import EnvelopeError


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def _run(command, args: list[str], keys_dir: Path, stdin: str | None = None):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(command, [*args, "--keys-dir", str(keys_dir)], input=stdin)
    return result


def test_generate_prints_the_kid_and_never_the_secret(keys_dir: Path) -> None:
    result = _run(keys_group, ["generate", "--kind", "A256KW", "--kid", "wrap-1"], keys_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "wrap-1"
    secret = json.loads((keys_dir / "wrap-1.json").read_text())["k"]
    assert secret not in result.output


def test_list_shows_keys_without_secret_material(keys_dir: Path) -> None:
    for kind in ("dir", "ES256", "legacy-cbc"):
        assert _run(keys_group, ["generate", "--kind", kind], keys_dir).exit_code == 0
    table = _run(keys_group, ["list"], keys_dir)
    listed = _run(keys_group, ["list", "--json"], keys_dir)
    rows = json.loads(listed.stdout)
    assert {r["kind"] for r in rows} == {"dir", "ES256", "legacy-cbc"}
    for path in keys_dir.glob("*.json"):
        jwk = json.loads(path.read_text())
        for member in ("k", "d"):
            if member in jwk:
                assert jwk[member] not in table.output + listed.output


def test_rotate_then_both_envelopes_open(keys_dir: Path, tmp_path: Path) -> None:
    first = _run(keys_group, ["rotate", "--kind", "dir"], keys_dir).stdout.strip()
    (tmp_path / "p.json").write_text('{"email": "a@example.org"}')
    old = _run(seal_command, [str(tmp_path / "p.json")], keys_dir).stdout.strip()
    second = _run(keys_group, ["rotate", "--kind", "dir"], keys_dir).stdout.strip()
    new = _run(seal_command, ["-"], keys_dir, stdin='{"email": "b@example.org"}').stdout.strip()
    assert first != second
    for envelope, kid, email in ((old, first, "a@example.org"), (new, second, "b@example.org")):
        result = _run(open_command, ["-"], keys_dir, stdin=envelope)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert (out["status"], out["kid"], out["protected"]) == ("decrypted", kid, {"email": email})


@pytest.mark.parametrize(
    ("fmt", "kind", "status"),
    [
        ("legacy", "legacy-cbc", "decrypted-unauthenticated"),
        ("jwe", "dir", "decrypted"),
        ("jws", "ES256", "verified"),
    ],
)
def test_seal_and_open_each_format(keys_dir: Path, fmt: str, kind: str, status: str) -> None:
    _run(keys_group, ["generate", "--kind", kind], keys_dir)
    sealed = _run(seal_command, ["--format", fmt, "-"], keys_dir, stdin="hello\n")
    assert sealed.exit_code == 0, sealed.output
    opened = _run(open_command, ["-"], keys_dir, stdin=sealed.stdout)
    assert json.loads(opened.stdout)["status"] == status
    assert json.loads(opened.stdout)["protected"] == {"text": "hello"}


def test_open_failure_is_non_zero_with_the_uniform_message(keys_dir: Path) -> None:
    _run(keys_group, ["generate", "--kind", "dir"], keys_dir)
    sealed = _run(seal_command, ["-"], keys_dir, stdin="x").stdout.strip()
    tampered = sealed[:-3] + ("AAA" if not sealed.endswith("AAA") else "BBB")
    result = _run(open_command, ["-"], keys_dir, stdin=tampered)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "invalid"
    assert EnvelopeError.MESSAGE in result.stderr


def test_open_sealed_exits_2(keys_dir: Path) -> None:
    seed = Path(__file__).parent / "data" / "seed-record.md"
    envelope = seed.read_text().split('secured: "')[1].split('"')[0]
    result = _run(open_command, ["-"], keys_dir, stdin=envelope)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["status"] == "sealed"


def test_open_a_detached_signature_with_its_record(keys_dir: Path, tmp_path: Path) -> None:
    from publisher.secured.envelopes import sign_record
    from publisher.secured.keyring import Keyring

    _run(keys_group, ["generate", "--kind", "Ed25519"], keys_dir)
    record = {"title": "t", "heat": 3}
    token = sign_record(record, Keyring.load(keys_dir))
    (tmp_path / "r.json").write_text(json.dumps({**record, "secured": token}))
    result = _run(open_command, ["--record", str(tmp_path / "r.json"), "-"], keys_dir, stdin=token)
    assert json.loads(result.stdout)["status"] == "verified"


def test_export_public_has_no_symmetric_or_private_keys(keys_dir: Path) -> None:
    for kind in ("dir", "RSA-OAEP-256", "ECDH-ES+A256KW"):
        _run(keys_group, ["generate", "--kind", kind], keys_dir)
    jwks = json.loads(_run(keys_group, ["export-public"], keys_dir).stdout)
    assert {k["alg"] for k in jwks["keys"]} == {"RSA-OAEP-256", "ECDH-ES+A256KW"}
    assert all("d" not in k for k in jwks["keys"])


def test_keys_dir_from_the_environment(tmp_path: Path) -> None:
    folder = tmp_path / "env-keys"
    runner = CliRunner(env={"PUBLISHER_KEYS_DIR": str(folder)})
    result = runner.invoke(keys_group, ["generate", "--kid", "from-env"])
    assert result.exit_code == 0, result.output
    assert (folder / "from-env.json").exists()


def test_a_world_readable_secret_key_is_a_clean_error(keys_dir: Path) -> None:
    _run(keys_group, ["generate", "--kid", "loose"], keys_dir)
    (keys_dir / "loose.json").chmod(0o644)
    result = _run(keys_group, ["list"], keys_dir)
    assert result.exit_code == 1 and "chmod 600" in result.output
