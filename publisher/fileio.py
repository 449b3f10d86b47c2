"""Safe file writing for outputs: atomic replacement and an exclusive lock.

The built-in ``files`` and ``feeds`` outputs write files that other programs read while
they change (a static site generator, a web server, a feed reader), from several threads
and worker processes at once. Output plugins written elsewhere may use this module too:
it depends on the standard library only (``fcntl``, so POSIX systems).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old file or the new one.

    The data goes to a temporary file in the same folder (so the rename stays on one file
    system), is flushed to disk, given ``mode``, and renamed over ``path``; then the folder
    is flushed so the rename itself survives a crash. On any error the temporary file is
    removed and ``path`` is left as it was. Missing parent folders are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # the rename is durable once the folder is
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created if missing).

    One writer at a time, across threads and processes: ``flock`` locks belong to an open
    file, so two threads of one process exclude each other as two processes do, and the
    kernel releases the lock if the holder dies. Read-modify-write cycles (an index, a
    feed's state) must run under it so concurrent deliveries never lose an update.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FileLock:
    """``locked`` for a hot path: the lock file is opened once per process, not per use.

    The lock belongs to the open file, so the threads of one process do not exclude each
    other through it: the caller lets one thread at a time hold it (the group commit's
    leader). A forked child opens its own file rather than share its parent's lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle_of: tuple[int, BinaryIO] | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        handle = self._handle()
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def _handle(self) -> BinaryIO:
        pid = os.getpid()
        if self._handle_of is None or self._handle_of[0] != pid:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle_of = (pid, open(self.path, "a+b"))  # noqa: SIM115 - kept open
        return self._handle_of[1]
