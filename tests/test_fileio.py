"""Writing output files: each file replaced at once, a batch flushed to disk together."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher import fileio


def test_a_batch_replaces_every_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.txt").write_text("old")
    files = [(tmp_path / "a" / "old.txt", b"new")]
    files += [(tmp_path / f"f{n}" / "x.txt", b"%d" % n) for n in range(5)]
    fileio.atomic_write_many(files, mode=0o640)
    assert [path.read_bytes() for path, _ in files] == [data for _, data in files]
    assert {oct(path.stat().st_mode & 0o777) for path, _ in files} == {"0o640"}
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_a_large_batch_is_flushed_once_per_file_system(tmp_path: Path, monkeypatch) -> None:
    if fileio._SYNCFS is None:
        pytest.skip("syncfs(2) is Linux only")
    calls: list[int] = []
    real = fileio._SYNCFS

    def counting(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(fileio, "_SYNCFS", counting)
    fileio.atomic_write_many([(tmp_path / f"{n}.txt", b"x") for n in range(10)])
    assert len(calls) == 1
    fileio.atomic_write_many([(tmp_path / "small.txt", b"x")])  # below SYNCFS_FROM: fsync
    assert len(calls) == 1


def test_a_failed_flush_replaces_nothing(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("before")

    def failing(paths: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio, "_flush", failing)
    with pytest.raises(OSError, match="Input/output"):
        fileio.atomic_write_many([(target, b"after"), (tmp_path / "new.txt", b"x")])
    assert target.read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_stages_are_renamed_in_order_after_one_flush_for_all(tmp_path: Path, monkeypatch) -> None:
    """A batch's pages, then its index: one flush to disk for both (it can wait long on a
    busy disk), and no index file in place before every page is."""
    flushes: list[int] = []
    real = fileio._flush
    monkeypatch.setattr(fileio, "_flush", lambda paths: (flushes.append(len(paths)), real(paths)))
    pages = [(tmp_path / "pages" / f"{n}.md", b"page") for n in range(3)]
    index = [(tmp_path / "index" / f"{n}.json", b"{}") for n in range(3)]
    seen: list[tuple[bool, bool]] = []

    def between() -> None:  # runs after the pages, before the index
        seen.append((all(p.exists() for p, _ in pages), any(p.exists() for p, _ in index)))

    fileio.atomic_write_stages(pages, between, index)
    assert flushes == [6]
    assert seen == [(True, False)]
    assert all(path.read_bytes() == data for path, data in pages + index)
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_a_stale_temporary_name_is_skipped(tmp_path: Path, monkeypatch) -> None:
    """A writer killed mid-batch may leave a temporary file whose name comes round again."""
    monkeypatch.setattr(fileio, "_NAMES", iter([7, 7, 8]))
    stale = tmp_path / f".tmp-{fileio._PROCESS}-{os.getpid()}-7.part"
    stale.write_bytes(b"left behind")
    fileio.atomic_write_many([(tmp_path / "a.txt", b"a")])
    assert (tmp_path / "a.txt").read_bytes() == b"a"
    assert stale.read_bytes() == b"left behind"
