"""The distribution ``pip install .`` builds (``deploy/Containerfile``) holds the whole app.

The editable install the tests run on reads the source tree, so a package missing from
``pyproject.toml``'s list would pass every other test and break only a deployed copy.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ("*.py", "*.html", "*.css", "*.js", "*.ini", "*.mako")


def source_files() -> set[str]:
    """What the wheel must hold: every module and data file, as installed paths."""
    files: set[str] = set()
    for folder, installed in (("publisher", "publisher"), ("plugins", "publisher_plugins")):
        for pattern in DATA:
            for path in (ROOT / folder).rglob(pattern):
                if "__pycache__" not in path.parts:
                    relative = path.relative_to(ROOT / folder).as_posix()
                    files.add(f"{installed}/{relative}")
    return files


def test_the_wheel_holds_every_module_and_data_file_of_the_source_tree(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w"]
    subprocess.run([*command, str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("publisher-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = set(archive.namelist())
    assert sorted(source_files() - held) == []
