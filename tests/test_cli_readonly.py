"""Commands that only read (``--help``, ``plugins``, ``validate``) create nothing on disk:
no database, no queue, no development key, in the folder they run in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PUBLISHER = str(Path(sys.executable).parent / "publisher")


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["plugins"],
        ["validate", "record.json"],
        ["deliveries", "--help"],
        ["no-such-command"],
    ],
)
def test_a_reading_command_in_an_empty_folder_creates_nothing(tmp_path: Path, args: list[str]):
    (tmp_path / "record.json").write_text(
        json.dumps({"title": "Hi", "webUrl": "https://example.com/hi"})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_")}
    env["PUBLISHER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    result = subprocess.run(
        [PUBLISHER, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode in (0, 2), result.stderr  # 2: click's usage error
    assert _files(tmp_path) == {"record.json"}, result.stdout + result.stderr
    if args == ["plugins"]:
        assert "files 0.1.0 (builtin)" in result.stdout
    if args[0] == "validate":
        assert "1 records checked, 0 invalid" in result.stdout
