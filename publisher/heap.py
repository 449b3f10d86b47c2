"""The serving processes' heap: what start-up built is left out of full collections.

CPython's collector walks every tracked object on a full (generation 2) pass. A web or
worker process holds ~150,000 of them before it serves anything (the libraries, the app,
its schemas and statements), and they live as long as the process; walking them took tens
of milliseconds, charged to whichever request or delivery batch allocated the object that
set the pass off: the p99 of a read (docs/performance.md). ``gc.freeze`` moves them to a
permanent generation the collector skips, so a full pass walks only what was made since.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once, when the process is built and before it serves: collect what start-up
    left as garbage, then freeze the rest."""
    gc.collect()
    gc.freeze()
