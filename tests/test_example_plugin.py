"""docs/examples/publisher-archive, the example a reader copies: pip-installed, it passes the
contract kit with its one test class, is listed by ``publisher plugins``, and receives
records in the real service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "publisher-archive"
PUBLISHER = str(Path(sys.executable).parent / "publisher")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example copied (as a reader would) and pip-installed into a target folder."""
    base = tmp_path_factory.mktemp("archive")
    package = base / "publisher-archive"
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("data", "*.egg-info"))
    site = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(package)],
        check=True,
    )
    return package, site


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_")}
    return env | {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])} | extra


def test_its_one_test_class_passes_the_contract_kit(installed, tmp_path):
    package, site = installed
    tests = tmp_path / "tests"
    shutil.copytree(package / "tests", tests)  # run against the installed module, not the copy
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
        cwd=tmp_path,
        env=_env(site),  # entry points autoload: the kit must still load it once, alone
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 passed" in result.stdout, result.stdout
    assert list(tmp_path.iterdir()) == [tests]  # it wrote nothing outside its tmp_path


def test_it_is_listed_by_publisher_plugins(installed, tmp_path):
    _, site = installed
    listed = subprocess.run(
        [PUBLISHER, "plugins"], cwd=tmp_path, env=_env(site), capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert "archive 1.0.0 (entry-point)" in listed.stdout
    assert "outputs: archive" in listed.stdout
    assert list(tmp_path.iterdir()) == []


def test_it_receives_records_in_the_real_service(installed, tmp_path):
    _, site = installed
    script = textwrap.dedent(
        """
        import json, sys
        from publisher.testing import PluginApp

        folder = sys.argv[1]
        with PluginApp(folder, autoload=True, builtins=True) as app:
            names = sorted(info.name for info in app.plugins())
            answer = app.submit(
                {"title": "Archived", "webUrl": "https://example.com/arch", "published": True}
            )
            app.run_deliveries()
            live = app.output("archive").inventory()
            statuses = {d["output"]: d["status"] for d in app.deliveries(answer["id"])}
            app.retract(answer["id"])
            app.run_deliveries()
            after = app.output("archive").inventory()
        print(json.dumps({"names": names, "id": answer["id"], "live": live,
                          "statuses": statuses, "after": after}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=_env(site),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert {"archive", "files", "feeds"} <= set(seen["names"])
    assert seen["statuses"] == {"archive": "done", "feeds": "done", "files": "done"}
    assert seen["live"] == {seen["id"]: 1}
    assert seen["after"] == {}
    lines = (tmp_path / "data" / "archive" / "archive.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["published", "retracted"]
