"""Helpers for tests that fork, or wait for another thread or process (never a timing check)."""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll until ``condition`` holds; fails the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        time.sleep(0.001)


@contextmanager
def forked(child: Callable[[], None], seconds: float = 30.0) -> Iterator[Callable[[], int]]:
    """Run ``child`` in a forked child process (exit code 0 if it returned, 1 if it raised).

    Yields a function that waits for the child (killing it after ``seconds``: a child that
    hangs is reported as -9) and returns its exit code; the block runs meanwhile, in the
    parent. The child never returns into pytest.
    """
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    status: list[int] = []

    def exit_code() -> int:
        if not status:
            deadline = time.monotonic() + seconds
            while not (done := os.waitpid(pid, os.WNOHANG))[0]:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    done = os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
            status.append(os.waitstatus_to_exitcode(done[1]))
        return status[0]

    try:
        yield exit_code
    finally:
        exit_code()
