"""What a forked child must make anew: registered here, reset by one ``os.register_at_fork``.

A fork copies the memory of every thread but runs only the one that forked. State that
other threads were in the middle of using (a queue of callers waiting for a commit, the
lock file a writer held) is then owned by no thread of the child, and waiting on it would
hang the child. gunicorn forks its workers, huey and tests fork too; so each module that
keeps such state registers a function that resets it, and the child calls every one of
them before it runs anything else. Nobody has to compare ``os.getpid()`` on each use.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from collections.abc import Callable

Reset = Callable[[], None]

_resets: list[Callable[[], Reset | None]] = []  # each yields its reset, or None once gone
_guard = threading.Lock()


def after_fork(reset: Reset) -> None:
    """Call ``reset`` in every child this process forks from now on (before the child runs).

    A bound method is held weakly, so registering an object's method does not keep the
    object alive: once it is gone, its reset is dropped.
    """
    ref: Callable[[], Reset | None]
    if inspect.ismethod(reset):
        ref = weakref.WeakMethod(reset)
    else:

        def ref() -> Reset:
            return reset

    with _guard:
        _resets[:] = [r for r in _resets if r() is not None]
        _resets.append(ref)


def _in_child() -> None:
    global _guard
    _guard = threading.Lock()  # another thread may have held it at the fork
    live = [reset for reset in (ref() for ref in _resets) if reset is not None]
    for reset in live:
        reset()


os.register_at_fork(after_in_child=_in_child)
