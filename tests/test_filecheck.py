"""Files read and validated in worker processes, for ``publisher ingest``."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from publisher.filecheck import check_files
from tests.concurrency import wait_until

SETTINGS = {"strict": False, "limits": {"max_string": 100_000}}


def test_each_files_items_come_back_checked_in_order(tmp_path, seed_json):
    paths = []
    for n in range(5):
        path = tmp_path / f"{n}.ndjson"
        items = [dict(seed_json, id=f"file-{n}-{i}") for i in range(n + 1)]
        path.write_text("\n".join(json.dumps(item) for item in items))
        paths.append(path)
    with check_files(paths, SETTINGS, jobs=2) as checked:
        results = list(checked)
    assert [path for path, _ in results] == paths
    assert [[raw["id"] for raw, _ in items] for _, items in results] == [
        [f"file-{n}-{i}" for i in range(n + 1)] for n in range(5)
    ]


@pytest.mark.parametrize(("jobs", "workers"), [(0, 0), (1, 1), (2, 2)])
def test_jobs_is_the_number_of_worker_processes(tmp_path, seed_json, jobs, workers):
    """0 checks in the calling process; 1 already checks beside it, while it stores."""
    paths = [tmp_path / f"{n}.json" for n in range(3)]
    for path in paths:
        path.write_text(json.dumps(seed_json))
    with check_files(paths, SETTINGS, jobs=jobs) as checked:
        assert len(multiprocessing.active_children()) == workers
        assert [len(items) for _, items in checked] == [1, 1, 1]


def test_the_workers_start_reading_as_the_block_is_entered(tmp_path, seed_json):
    """So they check the first files while the ingesting process builds its app."""
    pipes = [tmp_path / f"{n}.json" for n in range(2)]
    for pipe in pipes:
        os.mkfifo(pipe)
    with check_files(pipes, SETTINGS, jobs=2) as checked:
        for pipe in pipes:  # nothing asked of ``checked`` yet: a worker must be reading
            descriptor = _open_once_read(pipe)
            os.write(descriptor, json.dumps(seed_json).encode())
            os.close(descriptor)
        results = list(checked)
    assert [len(items) for _, items in results] == [1, 1]


def test_leaving_the_block_early_stops_the_workers(tmp_path, seed_json):
    """An app that fails to build must not leave the workers reading the rest."""
    paths = []
    for n in range(40):
        path = tmp_path / f"{n}.json"
        path.write_text(json.dumps(dict(seed_json, id=f"early-{n}")))
        paths.append(path)
    with (
        pytest.raises(RuntimeError, match="the app failed"),
        check_files(paths, SETTINGS, jobs=2),
    ):
        raise RuntimeError("the app failed to build")
    assert multiprocessing.active_children() == []


def _open_once_read(pipe: Path) -> int:
    """The pipe's writing end, once some process has it open for reading."""
    opened: list[int] = []

    def reader_there() -> bool:
        try:
            opened.append(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return False
        return True

    wait_until(reader_there, seconds=60)
    return opened[0]
