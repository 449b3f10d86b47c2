"""Writing output files: each file replaced at once, a batch flushed to disk together."""

from __future__ import annotations

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
