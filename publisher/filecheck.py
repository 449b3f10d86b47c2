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
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from publisher.errors import PublisherError
from publisher.parsing import Parsed, parse_body, parse_file
from publisher.schemas import Validated, validate

#: one file's items, each with its validation (or why it failed), or why the file failed
Checked = list[tuple[Any, Validated | PublisherError]]
AHEAD = 4  # files read per worker ahead of the store (a bound on what waits in memory)


def read(path: Path) -> list[Any]:
    """The items of one file, or of standard input for ``-``."""
    return _parse(path).items


def _parse(path: Path) -> Parsed:
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        text = data.lstrip()
        kind = "text/markdown" if text.startswith(b"---") else "application/json"
        if text[:1] not in (b"{", b"[", b"-"):
            kind = "application/yaml"
        return parse_body(data, kind)
    return parse_file(path)


def check_file(path: Path, settings: dict[str, Any]) -> Checked:
    """Read one file and validate each item; raises what makes the file unreadable."""
    checked: Checked = []
    parsed = _parse(path)
    for raw in parsed.items:
        try:
            checked.append((raw, validate(raw, settings, text_bound=parsed.text_bound)))
        except PublisherError as exc:
            checked.append((raw, exc))
    return checked


@contextmanager
def check_files(
    paths: Iterable[Path], settings: Mapping[str, Any], jobs: int
) -> Iterator[Iterator[tuple[Path, Checked | Exception]]]:
    """Each file's items in order, checked by ``jobs`` worker processes (0: in this one).

    The workers start as the block is entered, not when the first file is asked for: the
    ingesting process builds its app meanwhile (imports, migrations, plugins), and by then
    the first files are checked. Leaving the block stops the workers,
    even with files unread (an app that failed to build).
    """
    needed = {
        "strict": settings["strict"],
        "limits": {"max_string": settings["limits"]["max_string"]},
    }
    files = list(paths)
    if jobs < 1 or len(files) < 2 or any(str(path) == "-" for path in files):
        yield ((path, _outcome(lambda path=path: check_file(path, needed))) for path in files)
        return
    # spawn: a fresh interpreter per worker, never a fork of this threaded process
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead = iter(files)
        window = deque(
            (path, pool.submit(check_file, path, needed)) for path in islice(ahead, jobs * AHEAD)
        )
        yield _in_order(pool, window, ahead, needed)
    finally:
        pool.shutdown(cancel_futures=True)


def _in_order(
    pool: ProcessPoolExecutor,
    window: deque[tuple[Path, Future[Checked]]],
    ahead: Iterator[Path],
    needed: dict[str, Any],
) -> Iterator[tuple[Path, Checked | Exception]]:
    """The window's results in order, each taken one replaced by the next file's check."""
    while window:
        done, future = window.popleft()
        following = next(ahead, None)
        if following is not None:
            window.append((following, pool.submit(check_file, following, needed)))
        yield done, _outcome(future.result)


def _outcome(result: Any) -> Checked | Exception:
    try:
        return result()
    except (PublisherError, OSError) as exc:
        return exc
