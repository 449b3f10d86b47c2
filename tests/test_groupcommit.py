"""Group commit: concurrent callers share one write, each gets its own result or the error."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from publisher.background import Feeder
from publisher.groupcommit import CommitFailed, GroupCommitter
from tests.concurrency import forked, wait_until

CALLERS = 12


class HeldWrites:
    """A ``write`` whose first call waits until every other caller has queued behind it.

    So the callers meet in two batches whatever the thread scheduling: the first (its
    leader, and whoever queued before the leader took it) and all the others.
    """

    def __init__(self, committer_of: Callable[[], GroupCommitter[Any, Any]], total: int):
        self.committer_of = committer_of
        self.total = total
        self.batches: list[list[int]] = []
        self.fail_batch: int | None = None  # index of the batch that raises

    def __call__(self, items: list[int]) -> list[int]:
        if not self.batches:
            wait_until(lambda: len(items) + len(self.committer_of()._queue) >= self.total)
        self.batches.append(list(items))
        if self.fail_batch == len(self.batches) - 1:
            raise OSError("disk I/O error")
        return [item * 10 for item in items]


def run_callers(committer: GroupCommitter[int, int], count: int) -> list[int | BaseException]:
    def call(item: int) -> int | BaseException:
        try:
            return committer.submit(item)
        except CommitFailed as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def make(total: int = CALLERS) -> tuple[GroupCommitter[int, int], HeldWrites]:
    holder: dict[str, GroupCommitter[int, int]] = {}
    writes = HeldWrites(lambda: holder["committer"], total)
    holder["committer"] = GroupCommitter(writes)
    return holder["committer"], writes


def test_callers_that_queue_during_a_write_share_the_next_one():
    committer, writes = make()
    results = run_callers(committer, CALLERS)
    assert results == [item * 10 for item in range(CALLERS)]  # each its own result
    assert len(writes.batches) == 2  # who queued during the first write shared the next
    assert len(writes.batches[1]) > 1
    assert sorted(item for batch in writes.batches for item in batch) == list(range(CALLERS))


def test_a_batch_is_at_most_max_batch_and_the_rest_follow():
    holder: dict[str, GroupCommitter[int, int]] = {}
    writes = HeldWrites(lambda: holder["committer"], CALLERS)
    holder["committer"] = committer = GroupCommitter(writes, max_batch=4)
    results = run_callers(committer, CALLERS)
    assert results == [item * 10 for item in range(CALLERS)]
    assert max(len(batch) for batch in writes.batches) == 4
    assert sum(len(batch) for batch in writes.batches) == CALLERS


def test_a_failed_write_fails_every_caller_of_its_batch_and_no_other():
    committer, writes = make()
    writes.fail_batch = 1  # the shared batch behind the first caller
    results = run_callers(committer, CALLERS)
    failed = set(writes.batches[1])
    assert len(failed) > 1
    for item, result in enumerate(results):
        if item in failed:
            assert isinstance(result, CommitFailed)
            assert isinstance(result.__cause__, OSError)
        else:
            assert result == item * 10
    # each caller got an exception of its own, never one object shared between threads
    assert len({id(r) for r in results if isinstance(r, CommitFailed)}) == len(failed)
    assert committer.submit(7) == 70  # and the committer goes on


def test_a_write_that_returns_the_wrong_number_of_results_fails_its_batch():
    committer: GroupCommitter[int, int] = GroupCommitter(lambda items: [])
    with pytest.raises(CommitFailed):
        committer.submit(1)


def test_a_gate_that_fails_fails_the_batch_and_the_committer_goes_on():
    calls = {"gate": 0}

    @contextmanager
    def gate() -> Iterator[None]:
        calls["gate"] += 1
        if calls["gate"] == 1:
            raise OSError("lock file unavailable")
        yield

    committer: GroupCommitter[int, int] = GroupCommitter(lambda items: items, gate=gate)
    with pytest.raises(CommitFailed):
        committer.submit(1)
    assert committer.submit(2) == 2


def test_the_gate_is_held_around_taking_and_writing_the_batch():
    held = threading.Lock()

    @contextmanager
    def gate() -> Iterator[None]:
        with held:
            yield

    def write(items: list[int]) -> list[bool]:
        return [held.locked() for _ in items]

    committer: GroupCommitter[int, bool] = GroupCommitter(write, gate=gate)
    assert committer.submit(1) is True


def test_a_forked_child_starts_with_an_idle_committer_of_its_own():
    """Forked while a leader writes and callers wait: those are threads of the parent, so
    the child's first caller leads at once instead of waiting for them forever."""
    writing, release = threading.Event(), threading.Event()

    def write(items: list[int]) -> list[int]:
        if not writing.is_set():
            writing.set()
            release.wait(10)
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(committer.submit, range(4))
        writing.wait(10)
        wait_until(lambda: len(committer._queue) == 3)  # the others wait behind the leader

        def child() -> None:
            assert committer.submit(7) == 70

        with forked(child) as exit_code:
            release.set()
        assert exit_code() == 0
        assert list(results) == [0, 10, 20, 30]  # the parent's callers all got theirs


def test_an_interrupt_in_the_write_still_wakes_the_batch_then_goes_on():
    def write(items: list[int]) -> list[int]:
        raise KeyboardInterrupt

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    with pytest.raises(KeyboardInterrupt):
        committer.submit(1)
    assert committer._busy is False  # nobody is left waiting for a leader that is gone


def test_the_feeder_hands_everything_waiting_to_one_feed():
    fed: list[list[str]] = []
    feeder = Feeder(fed.append)  # not started: this thread plays its part
    feeder.put(["a"])
    feeder.put(["b", "c"])
    feeder.put(["d"])
    feeder.feed(feeder.drain(feeder.waiting.get()))
    assert fed == [["a", "b", "c", "d"]]


def test_ids_the_feeder_holds_while_it_lingers_are_flushed_at_exit():
    fed: list[list[str]] = []
    feeder = Feeder(fed.append, linger=60.0)  # lingers far longer than the test
    feeder.put(["a"])
    feeder.start()
    wait_until(lambda: feeder.lingering == ["a"])  # taken from the queue, held
    feeder.put(["b"])
    feeder.flush()  # what atexit runs: the held id is not lost with the daemon thread
    assert fed == [["a"], ["b"]]
