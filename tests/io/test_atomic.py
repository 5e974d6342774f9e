from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import OutputError
from mcgenref.io.atomic import (
    atomic_text_writer,
    remove_stale,
    staged_directory,
    write_bytes_atomic,
    write_png_atomic,
)


def test_png_round_trip_16_and_8_bit(tmp_path: Path) -> None:
    a16 = (np.arange(64 * 64, dtype=np.uint32) * 16).reshape(64, 64).astype(np.uint16)
    a8 = (np.arange(64 * 64) % 256).reshape(64, 64).astype(np.uint8)
    write_png_atomic(tmp_path / "a16.png", a16)
    write_png_atomic(tmp_path / "a8.png", a8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a16.png")), a16)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a8.png")), a8)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    import os

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_staged_directory_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(out) as stage:
            (stage / "a.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []

    with staged_directory(out) as stage:
        (stage / "a.txt").write_text("done")
    assert (out / "a.txt").read_text() == "done"

    with pytest.raises(OutputError, match="not empty"):
        with staged_directory(out):
            pass
    with staged_directory(out, overwrite=True) as stage:
        (stage / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        with staged_directory(f):
            pass


def test_atomic_text_writer_streams_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    with atomic_text_writer(target) as fh:
        for piece in ("<p>", "é", "</p>"):
            fh.write(piece)
        assert not target.exists()  # nothing visible until the body is done
    assert target.read_text(encoding="utf-8") == "<p>é</p>"
    with pytest.raises(ValueError, match="boom"), atomic_text_writer(target) as fh:
        fh.write("half")
        raise ValueError("boom")
    assert target.read_text(encoding="utf-8") == "<p>é</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]
    with pytest.raises(OutputError, match="cannot write"), atomic_text_writer(tmp_path / "no" / "x"):
        pass


def test_remove_stale(tmp_path: Path) -> None:
    f = tmp_path / "old_seg.dcm"
    f.write_bytes(b"x")
    remove_stale(f)
    remove_stale(f)  # absent: nothing to do
    assert not f.exists()
