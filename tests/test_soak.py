"""A short run of bench/soak.py: gunicorn (4 workers) and two worker processes under mixed
load on PostgreSQL + Redis; every accepted record stored once, no lost update, every
delivery done. The 60-second run is ``make soak``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import require_scaleout

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
@pytest.mark.scaleout
# its own limits are 300 s (the run, and the wait for every delivery: a message lost in a
# worker comes back when its 120 s lease ends); the suite's 120 s default cut it first
@pytest.mark.timeout(330)
def test_soak_loses_nothing_under_mixed_load():
    require_scaleout()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "10"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "FAIL" not in run.stdout
    assert run.stdout.count("ok   ") == 5, run.stdout
