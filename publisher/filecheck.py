"""Files read and validated in worker processes, for ``publisher ingest``.

Why: validation is most of the CPU of ingesting (marshmallow over every field of every
record), and it needs nothing but the file and two settings, so it runs on every core while
the ingesting process stores what comes back, in order. The workers import only this,
``parsing`` and ``schemas`` (a fraction of a second): hooks, keys and the store stay in the
ingesting process, which opens ``secured`` and calls the plugins as it always did.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from publisher.errors import PublisherError
from publisher.parsing import parse_body, parse_file
from publisher.schemas import Validated, validate

#: one file's items, each with its validation (or why it failed), or why the file failed
Checked = list[tuple[Any, Validated | PublisherError]]
AHEAD = 4  # files read per worker ahead of the store (a bound on what waits in memory)


def read(path: Path) -> list[Any]:
    """The items of one file, or of standard input for ``-``."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        text = data.lstrip()
        kind = "text/markdown" if text.startswith(b"---") else "application/json"
        if text[:1] not in (b"{", b"[", b"-"):
            kind = "application/yaml"
        return parse_body(data, kind).items
    return parse_file(path).items


def check_file(path: Path, settings: dict[str, Any]) -> Checked:
    """Read one file and validate each item; raises what makes the file unreadable."""
    checked: Checked = []
    for raw in read(path):
        try:
            checked.append((raw, validate(raw, settings)))
        except PublisherError as exc:
            checked.append((raw, exc))
    return checked


def check_files(
    paths: Iterable[Path], settings: dict[str, Any], jobs: int
) -> Iterator[tuple[Path, Checked | Exception]]:
    """Each file's items in order, checked by ``jobs`` worker processes (1: in this one)."""
    needed = {
        "strict": settings["strict"],
        "limits": {"max_string": settings["limits"]["max_string"]},
    }
    files = list(paths)
    if jobs <= 1 or len(files) < 2 or any(str(path) == "-" for path in files):
        for path in files:
            yield path, _outcome(lambda path=path: check_file(path, needed))
        return
    # spawn: a fresh interpreter per worker, never a fork of this threaded process
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        window: deque[tuple[Path, Future[Checked]]] = deque()
        for path in files:
            window.append((path, pool.submit(check_file, path, needed)))
            if len(window) >= jobs * AHEAD:
                done, future = window.popleft()
                yield done, _outcome(future.result)
        while window:
            done, future = window.popleft()
            yield done, _outcome(future.result)


def _outcome(result: Any) -> Checked | Exception:
    try:
        return result()
    except (PublisherError, OSError) as exc:
        return exc
