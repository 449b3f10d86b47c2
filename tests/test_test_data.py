"""The suite's own data lives in the repository: a fresh clone tests with nothing beside it."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE / "data"
VECTORS = DATA / "vectors"
#: a path that climbs out of the repository (the checkout's parent holds nothing we may use)
_OUTSIDE = re.compile(r"parents\[[2-9]\]|parent\.parent\.parent|\.\./shared|\"shared\" /")


def test_every_vector_folder_keeps_its_licence() -> None:
    folders = [p for p in VECTORS.iterdir() if p.is_dir()]
    assert {p.name for p in folders} >= {"wycheproof", "rfc7520", "standard-webhooks"}
    for folder in folders:
        assert (folder / "LICENSE").read_text().strip(), folder


def test_the_vectors_the_tests_read_are_here() -> None:
    for name in (
        "wycheproof/aes_cbc_pkcs5_test.json",
        "wycheproof/json_web_signature_test.json",
        "wycheproof/json_web_encryption_test.json",
        "wycheproof/json_web_key_test.json",
        "rfc7520/jwe_rfc7520.json",
        "rfc7520/jws_rfc7520.json",
        "standard-webhooks/signing-example.json",
    ):
        assert (VECTORS / name).stat().st_size > 0, name
    assert (DATA / "seed-record.md").read_text().startswith("---")


def test_no_test_reads_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(HERE)}:{number}"
        for path in HERE.rglob("*.py")
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offenders == []
