"""Threads that run beside requests and workers: the feeder, the lanes, the sweeper, output
calls."""

from __future__ import annotations

import atexit
import contextvars
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from publisher.forksafe import after_fork

log = logging.getLogger("publisher.dispatch")


class Sweeps(Protocol):
    def sweep(self) -> int: ...


class Feeder(threading.Thread):
    """Enqueues delivery ids off the request path, in order, in this process.

    Ids still waiting when the process ends are flushed at exit; a hard kill loses them, and
    the sweeper enqueues those deliveries once they are ``lease_seconds`` old.
    """

    def __init__(self, feed: Callable[[Sequence[Any]], None], linger: float = 0.0) -> None:
        super().__init__(name="publisher-feeder", daemon=True)
        self.feed = feed
        # seconds to wait after the first id for more to join its feed (0: feed at once)
        self.linger = linger
        self.lingering: list[Any] = []
        self.waiting: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        atexit.register(self.flush)

    def usable(self) -> bool:
        """False in a forked child: threads do not survive a fork, and Python knows it."""
        return self.is_alive()

    def put(self, delivery_ids: list[Any]) -> None:
        self.waiting.put(delivery_ids)

    def run(self) -> None:
        while True:
            first = self.waiting.get()
            if self.linger:
                self.lingering = first  # taken from the queue, so ``flush`` must see it
                time.sleep(self.linger)
                self.lingering = []
            self.feed(self.drain(first))

    def drain(self, ids: list[Any]) -> list[Any]:
        """``ids`` and every list put since: one feed, so a feed may batch its queue writes."""
        while not self.waiting.empty():
            ids = ids + self.waiting.get_nowait()
        return ids

    def flush(self) -> None:
        # what the thread holds while it lingers too (if it feeds it as well, a task is
        # enqueued twice, which its consumer tolerates: the claim runs it once)
        held, self.lingering = self.lingering, []
        if held:
            self.feed(held)
        while not self.waiting.empty():
            self.feed(self.drain(self.waiting.get_nowait()))


class Feeding:
    """Where ids go after a commit: to ``feed`` at once (inline), or to this process's
    feeder thread (background: the committing request answers without a queue write).

    The thread starts on first use, and again in a forked child, where it did not survive.
    """

    def __init__(
        self, feed: Callable[[Sequence[Any]], None], *, background: bool, linger: float = 0.0
    ) -> None:
        self.feed = feed
        self.background = background
        self.linger = linger
        self._thread: Feeder | None = None

    def __call__(self, ids: list[Any]) -> None:
        if not self.background:
            self.feed(ids)
            return
        if self._thread is None or not self._thread.usable():
            self._thread = Feeder(self.feed, linger=self.linger)
            self._thread.start()
        self._thread.put(ids)

    def flush(self) -> None:
        """Feed what the thread still holds (closing the app; exit does it too)."""
        if self._thread is not None:
            self._thread.flush()


class Lanes:
    """One small pool of threads per output, so that outputs never wait for each other.

    A slow or hanging output fills only its own lane: the others, and huey's threads, go on.
    A lane holds at most ``backlog`` deliveries (the ids of the messages it runs or keeps
    waiting), so that what this process cannot start soon stays on the queue, where another
    worker process takes it. ``submit`` on a full lane pushes back: while the lane moves (a
    message of it finished in the last ``wait`` seconds) the caller, a huey thread, waits
    up to ``wait`` seconds for room instead of taking more from the queue; a lane that does
    not move refuses at once. A refused message (False) goes back on the queue for later.
    While another lane has nothing waiting, a full lane takes up to twice ``backlog``
    instead, and its caller goes back to the queue: the next message may be for that lane.
    Messages that wait in a lane for the same call merge when a thread takes them (their
    first argument, a list of ids, joined up to ``merge`` ids): under load a lane makes
    fewer, larger calls, so the work per transaction grows with the backlog instead of the
    transactions. A forked child starts with no lanes (threads do not survive a fork).
    """

    def __init__(self, threads: int, backlog: int, merge: int = 1, wait: float = 0.0) -> None:
        self.threads = max(1, threads)
        self.backlog = max(1, backlog)
        self.merge = max(1, merge)
        self.wait = max(0.0, wait)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[_Message]] = {}
        self._running: dict[str, int] = {}
        self._moved: dict[str, float] = {}  # when a message of the lane last finished
        self._idle = threading.Condition()
        self._closed = False
        after_fork(self._reset)

    def submit(self, name: str, func: Callable[..., Any], *args: Any) -> bool:
        message = _Message(func, args, contextvars.copy_context())
        with self._idle:
            if not self._admits(name, message.size):
                return False
            if not self._held.get(name):
                self._moved[name] = time.monotonic()  # an idle lane wakes up: it moves
            self._held[name] = self._held.get(name, 0) + message.size
            self._waiting.setdefault(name, deque()).append(message)
            if self._running.get(name, 0) >= self.threads:
                return True  # a running thread of the lane takes it next
            self._running[name] = self._running.get(name, 0) + 1
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = ThreadPoolExecutor(
                    self.threads, thread_name_prefix=f"publisher-lane-{name}"
                )
        pool.submit(self._drain, name)
        return True

    def _admits(self, name: str, size: int) -> bool:
        """Whether the lane takes ``size`` more deliveries now, waiting for room while it
        moves (the caller holds ``_idle``; waiting releases it)."""
        if self._closed:
            return False
        if self._room(name, size) or not self._moving(name):
            return self._room(name, size)
        if self._others_hungry(name, size):
            return True
        self._idle.wait_for(lambda: self._room(name, size) or not self._moving(name), self.wait)
        return self._room(name, size)  # a lane that stopped moving meanwhile refuses

    def _room(self, name: str, size: int) -> bool:
        """Whether the lane takes ``size`` more deliveries (an empty lane takes any message)."""
        held = self._held.get(name, 0)
        return not self._closed and (held == 0 or held + size <= self.backlog)

    def _others_hungry(self, name: str, size: int) -> bool:
        """Whether a full lane takes a message anyway (up to twice its backlog) because
        another lane has nothing waiting: its caller, a huey thread, then goes back to the
        queue, where the next message may be for that lane, instead of waiting here."""
        if self._held.get(name, 0) + size > 2 * self.backlog:
            return False
        return any(not waiting for other, waiting in self._waiting.items() if other != name)

    def _moving(self, name: str) -> bool:
        """Whether a message of the lane finished in the last ``wait`` seconds."""
        moved = self._moved.get(name)
        return moved is not None and time.monotonic() - moved < self.wait

    def _drain(self, name: str) -> None:
        """Run the lane's waiting messages, merged where they can be, until none is left."""
        while True:
            with self._idle:
                waiting = self._waiting.get(name)
                if not waiting or self._closed:
                    self._running[name] = self._running.get(name, 1) - 1
                    return
                message, size = _take(waiting, self.merge)
            try:
                message.context.run(message.func, *message.args)
            except Exception:  # noqa: BLE001 - the lease expires and the sweeper sends it again
                log.exception("delivery of %s failed in its lane", name)
            finally:
                with self._idle:
                    self._held[name] = self._held.get(name, size) - size
                    self._moved[name] = time.monotonic()
                    self._idle.notify_all()

    def close(self, wait: float = 5.0) -> None:
        """Stop every lane: held messages are dropped (their leases expire and the sweeper
        sends them again), running ones get ``wait`` seconds to end; nothing new starts.

        The pools' threads are not daemons: a lane left running would outlive its app.
        """
        with self._idle:
            pools, self._pools, self._held, self._closed = list(self._pools.values()), {}, {}, True
            self._waiting, self._running = {}, {}
            self._idle.notify_all()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait
        for pool in pools:
            for thread in list(pool._threads):  # the executor's own set of its threads
                thread.join(max(0.0, deadline - time.monotonic()))

    def _reset(self) -> None:
        """In a forked child: no lane threads came along, so none is held."""
        self._pools, self._held, self._idle = {}, {}, threading.Condition()
        self._waiting, self._running, self._moved = {}, {}, {}

    def held(self, name: str) -> int:
        """Deliveries the lane of ``name`` runs or holds now."""
        with self._idle:
            return self._held.get(name, 0)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every lane is empty (tests, and a graceful stop)."""
        with self._idle:
            return self._idle.wait_for(lambda: not any(self._held.values()), timeout)


@dataclass
class _Message:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    context: contextvars.Context  # the receiving task's: log lines keep its ids

    @property
    def size(self) -> int:
        """The deliveries it stands for: its list of ids, or one."""
        ids = self.args[0] if self.args else None
        return max(1, len(ids)) if isinstance(ids, list) else 1


def _take(waiting: deque[_Message], limit: int) -> tuple[_Message, int]:
    """The first message, with the ids of those behind it for the same call merged in;
    and how many deliveries it holds."""
    first = waiting.popleft()
    if not first.args or not isinstance(first.args[0], list):
        return first, first.size
    ids, size = list(first.args[0]), first.size
    while waiting and _same_call(waiting[0], first) and len(ids) + len(waiting[0].args[0]) <= limit:
        merged = waiting.popleft()
        ids += merged.args[0]
        size += merged.size
    return _Message(first.func, (ids, *first.args[1:]), first.context), size


def _same_call(message: _Message, first: _Message) -> bool:
    return (
        message.func == first.func
        and bool(message.args)
        and isinstance(message.args[0], list)
        and message.args[1:] == first.args[1:]
    )


class SweeperThread(threading.Thread):
    """Runs ``Dispatcher.sweep`` every ``interval`` seconds until stopped."""

    def __init__(self, dispatcher: Sweeps, interval: float) -> None:
        super().__init__(name="publisher-sweeper", daemon=True)
        self.dispatcher = dispatcher
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.dispatcher.sweep()
            except Exception:  # noqa: BLE001 - keep sweeping through a database blip
                log.exception("sweep failed")


def call_with_timeout(
    func: Callable[..., Any], args: tuple[Any, ...], timeout: float
) -> BaseException | None:
    """Run ``func(*args)`` in a thread; a hanging output costs one thread, not the worker."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            func(*args)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported as a failed attempt
            outcome.append(exc)

    context = contextvars.copy_context()  # the output's log lines keep the delivery's ids
    thread = threading.Thread(
        target=context.run, args=(target,), name="publisher-output-call", daemon=True
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return TimeoutError(f"output did not answer within {timeout:g} s")
    return outcome[0] if outcome else RuntimeError("output call ended without a result")
