"""Group commit: the writes of many request threads in one transaction and one commit.

A durable commit costs an fsync (SQLite ``synchronous=FULL``) or a round trip (PostgreSQL),
and it costs about the same for one small row as for fifty. Under threaded workers, the
requests that arrive while a commit is in flight queue up, then share the next one: each
caller still returns only after the commit that holds its write succeeded, so what a
``202`` promises is unchanged, but the fsyncs per second stop bounding the requests per
second.

Leader/follower, no thread of its own: the first caller to find the committer idle leads.
It takes every queued item (up to ``max_batch``), runs ``write`` on them, wakes each
caller with its result, then hands the lead to the first caller that queued meanwhile, or
leaves the committer idle. So a queued item always has a request thread that will commit
it, and a graceful shutdown, which waits for in-flight requests, waits for their commits
too. A forked child starts with an idle committer and an empty queue
(:mod:`publisher.forksafe`): the callers queued at the fork are threads of the parent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, TypeVar

from publisher import forksafe

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 64


class CommitFailed(Exception):
    """The batch that held this caller's write failed; nothing of the batch was committed.

    Each caller gets its own instance (the write's exception is its ``__cause__``), so
    threads never raise one exception object at the same time.
    """


class _Waiter(Generic[T, R]):
    """One caller's item, and how its batch went.

    It sleeps on a plain lock, held from the start and released to wake it: cheaper than an
    ``Event`` (a condition variable around a lock), and each release follows an acquire.
    """

    __slots__ = ("item", "sleep", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.sleep = threading.Lock()
        self.sleep.acquire()
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None

    def settle(self, result: R | None, error: BaseException | None) -> None:
        self.result, self.error, self.done = result, error, True
        self.sleep.release()

    def outcome(self) -> R:
        if self.error is not None:
            raise CommitFailed(f"the batch failed: {type(self.error).__name__}") from self.error
        return self.result  # type: ignore[return-value]


class GroupCommitter(Generic[T, R]):
    """Runs ``write(items) -> results`` (one result per item, in order) for many threads.

    ``write`` must commit all of its items or none, and raise if it did not commit.
    ``gate``, if given, is entered by a leader *before* it takes its batch, so that what
    queues while the leader waits for it joins the batch: on SQLite, the writers' turn
    (:func:`publisher.db.writer_lock`), which ``write`` then holds for its transaction.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R]],
        max_batch: int = DEFAULT_MAX_BATCH,
        gate: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.write = write
        self.max_batch = max(1, max_batch)
        self.gate = gate
        self._idle()
        forksafe.after_fork(self._idle)

    def _idle(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Waiter[T, R]] = []
        self._busy = False  # a leader is running; while it is, queued items wait for it

    def submit(self, item: T) -> R:
        """Write ``item`` in the next batch and return its result once that is committed.

        Raises :class:`CommitFailed` if the batch failed.
        """
        waiter: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(waiter)
            leads = not self._busy
            self._busy = True
        if not leads:
            waiter.sleep.acquire()  # until its batch is settled or it is to lead
            if waiter.done:
                return waiter.outcome()
        self._lead()
        return waiter.outcome()

    def _lead(self) -> None:
        """Commit one batch (this caller's item is its first), then pass the lead on."""
        batch: list[_Waiter[T, R]] = []
        try:
            with self.gate():
                batch = self._take()
                self._run(batch)
        except BaseException as exc:  # noqa: BLE001 - the gate failed: fail its batch
            if not batch:
                batch = self._take()
                for waiter in batch:
                    waiter.settle(None, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._pass_lead()

    def _take(self) -> list[_Waiter[T, R]]:
        with self._lock:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        return batch

    def _pass_lead(self) -> None:
        """Wake the first caller that queued meanwhile to lead, or go idle."""
        with self._lock:
            if self._queue:
                self._queue[0].sleep.release()
            else:
                self._busy = False

    def _run(self, batch: list[_Waiter[T, R]]) -> None:
        try:
            results = list(self.write([waiter.item for waiter in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"write returned {len(results)} results for {len(batch)}")
        except BaseException as exc:  # noqa: BLE001 - every waiter of the batch gets it
            for waiter in batch:
                waiter.settle(None, exc)
            if not isinstance(exc, Exception):
                raise  # an interrupt or exit goes on, once the waiters are woken
        else:
            for waiter, result in zip(batch, results, strict=True):
                waiter.settle(result, None)
