"""Safe file writing for outputs: atomic replacement and an exclusive lock.

The built-in ``files`` and ``feeds`` outputs write files that other programs read while
they change (a static site generator, a web server, a feed reader), from several threads
and worker processes at once. Output plugins written elsewhere may use this module too:
it depends on the standard library only (``fcntl``, so POSIX systems).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

#: from this many files on, a batch is flushed with one ``syncfs`` per file system
SYNCFS_FROM = 4


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old file or the new one.

    The data goes to a temporary file in the same folder (so the rename stays on one file
    system), is flushed to disk, given ``mode``, and renamed over ``path``; then the folder
    is flushed so the rename itself survives a crash. On any error the temporary file is
    removed and ``path`` is left as it was. Missing parent folders are created.
    """
    atomic_write_many([(path, data)], mode)


def atomic_write_many(files: Sequence[tuple[Path, bytes]], mode: int = 0o644) -> None:
    """Replace several files, each atomically, with one flush to disk for all of them.

    What ``atomic_write`` does per file, but the temporary files are all written first and
    flushed together (on Linux with one ``syncfs`` per file system instead of one ``fsync``
    per file), then renamed, then each folder is flushed once. Each file is replaced all at
    once; the set is not (after a crash some may be new and some old), so callers write in
    an order that is safe to repeat, as a retried delivery does.
    """
    atomic_write_stages(files, mode=mode)


def atomic_write_stages(
    *stages: Sequence[tuple[Path, bytes]] | Callable[[], None], mode: int = 0o644
) -> None:
    """Groups of files replaced one group after the other, with one flush for all their data.

    Every temporary file of every group is written, then flushed to disk once (a flush can
    wait for seconds on a busy disk: one a batch, not one a group); then each group's files
    are renamed and its folders flushed before the next group's renames start, so a crash
    never leaves a later group's file without an earlier group's. A callable among the
    stages runs at its place (an output removing old files between its pages and its index).
    """
    groups = [stage for stage in stages if not callable(stage)]
    temps: list[str] = []
    try:
        for path, data in (item for group in groups for item in group):
            temps.append(_write_temp(path, data, mode))
        _flush(temps)
        pending = iter(temps)
        for stage in stages:
            if callable(stage):
                stage()
                continue
            for path, _ in stage:
                os.replace(next(pending), path)
            for folder in sorted({path.parent for path, _ in stage}):
                fsync_folder(folder)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _write_temp(path: Path, data: bytes, mode: int) -> str:
    """``data`` in a new temporary file beside ``path``, given ``mode``; its name.

    Plain ``os`` calls on a name of this process with a counter: a batch writes hundreds of
    these, and ``mkstemp``'s random names and file objects cost more than the write. The
    folder is made only when missing.
    """
    fd, tmp = _create_temp(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _create_temp(path: Path) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):  # a name taken can only be a dead writer's leftover: take the next
        tmp = os.path.join(path.parent, f".tmp-{_PROCESS}-{os.getpid()}-{next(_NAMES)}.part")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(tmp, flags, 0o600), tmp
    raise FileExistsError(f"no free temporary name beside {path}")


#: temporary names: unique per process (a random part, for writers in other pid namespaces
#: sharing the folder) and per file (a counter)
_PROCESS = secrets.token_hex(4)
_NAMES = itertools.count()


def _flush(paths: Sequence[str]) -> None:
    """Every byte of ``paths`` on disk: ``syncfs`` once per file system for a large batch."""
    if _SYNCFS is None or len(paths) < SYNCFS_FROM:
        for path in paths:
            _fsync_path(path, os.O_RDONLY)
        return
    by_device = {os.stat(path).st_dev: path for path in paths}
    for path in by_device.values():
        fd = os.open(path, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), path)
        finally:
            os.close(fd)


def _fsync_path(path: str | Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk: a rename or a new link in it survives a crash."""
    if os.name == "nt":  # pragma: no cover - no folder fsync there
        return
    _fsync_path(folder, os.O_RDONLY)


def _load_syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)`` (not in the ``os`` module); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNCFS = _load_syncfs()


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
