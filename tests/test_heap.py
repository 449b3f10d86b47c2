"""A serving process leaves what it built at start-up out of the collector's full passes.

A full (generation 2) collection walks every tracked object: in a web process that is the
~150,000 objects of the loaded libraries and the app, and it took 80-90 ms here, in the
middle of whichever request happened to allocate the object that set it off (the p99 of
the deliveries page). Frozen, those objects are skipped, and a full pass walks only what
was made since.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

PROBE = """
import gc
from publisher.heap import freeze_startup_heap
built = [[n] for n in range(50_000)]
freeze_startup_heap()
later = [[n] for n in range(10)]
gc.collect()
print(gc.get_freeze_count(), len(gc.get_objects(generation=2)))
"""


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_what_was_built_before_the_freeze_is_not_walked_by_a_full_collection() -> None:
    frozen, walked = map(int, _run(PROBE).split())
    assert frozen >= 50_000
    assert walked < 5_000  # what was made after the freeze, and the interpreter's own few
