"""What a forked child resets: registered once, run in the child before anything else."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from publisher import forksafe
from tests.concurrency import forked


class Counter:
    def __init__(self, marks: Path) -> None:
        self.marks = marks
        self.pid = os.getpid()

    def reset(self) -> None:
        with self.marks.open("a") as marks:
            marks.write(f"{self.pid}->{os.getpid()}\n")


def test_a_registered_reset_runs_in_the_child_and_not_in_the_parent(tmp_path):
    marks = tmp_path / "marks"
    counter = Counter(marks)
    forksafe.after_fork(counter.reset)

    def child() -> None:
        assert marks.read_text() == f"{counter.pid}->{os.getpid()}\n"

    with forked(child) as exit_code:
        pass
    assert exit_code() == 0
    assert marks.read_text().startswith(f"{os.getpid()}->")  # written by the child only
    assert len(marks.read_text().splitlines()) == 1


def test_an_objects_reset_does_not_keep_it_alive(tmp_path):
    marks = tmp_path / "marks"
    forksafe.after_fork(Counter(marks).reset)  # nobody else holds the object
    gc.collect()

    def child() -> None:
        assert not marks.exists()  # gone with its object: not run

    with forked(child) as exit_code:
        pass
    assert exit_code() == 0
