"""Atomic output: every file is written to a temporary name in its folder and renamed.

A reader therefore sees either the old file, or the complete new one, never a half-written
file. :func:`staged_directory` does the same for a whole output folder.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from mcgenref.errors import OutputError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


@contextlib.contextmanager
def atomic_text_writer(path: str | Path) -> Iterator[IO[str]]:
    """Write a (possibly large) text file piece by piece, atomically (UTF-8).

    The pieces go to a temporary file in the same folder, renamed onto ``path`` only when the
    body finishes; if it raises, ``path`` is untouched and the temporary file removed. So a
    large file need not be held in memory to be written atomically.
    """
    path = Path(path)
    tmp_name = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            fh = os.fdopen(fd, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        with fh:
            try:
                yield fh  # the body's own read errors must be handled inside it
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            os.replace(tmp_name, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        tmp_name = None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def remove_stale(path: str | Path) -> None:
    """Remove ``path`` if it exists (an output the current settings no longer write)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot remove {path}: {exc.strerror or exc}") from None


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Lossless PNG of a 2-D uint8 or uint16 array (or HxWx3 uint8 for RGB).

    ``compress_level`` (zlib, 0-9) trades file size for time; the pixels are the same.
    """
    if array.dtype == np.uint16 and array.ndim == 2:
        img = Image.fromarray(array, mode=None)
    elif array.dtype == np.uint8 and array.ndim in (2, 3):
        img = Image.fromarray(array)
    else:
        raise TypeError(f"png_bytes: unsupported array {array.dtype} {array.shape}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_png_atomic(path: str | Path, array: np.ndarray, compress_level: int = 6) -> None:
    write_bytes_atomic(path, png_bytes(array, compress_level))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def check_writable_dir(path: Path) -> None:
    """Fail early with one clear line if ``path`` cannot hold new files.

    Permissions are not enough (we often run as root), so a probe file is really written.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".mcgenref-probe-") as fh:
            fh.write(b"x")
            fh.flush()
    except OSError as exc:
        raise OutputError(f"output folder {path} is not writable: {exc.strerror or exc}") from None


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output folder beside ``out`` and move it into place only on success.

    Yields the staging folder. If the body raises, the staging folder is removed and ``out``
    is untouched. An existing non-empty ``out`` is refused unless ``overwrite``; then it is
    replaced only after the new content is complete.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"output folder {out} exists and is not empty (use --overwrite)")
    parent = out.parent if str(out.parent) else Path(".")
    check_writable_dir(parent)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create a folder in {parent}: {exc.strerror or exc}") from None
    try:
        yield stage
        old = None
        if overwrite and out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        try:
            # without overwrite, out is absent or empty here unless another run filled it
            # meanwhile: the rename then fails (a non-empty folder is never replaced)
            os.replace(stage, out)
        except OSError as exc:
            if old is not None:
                os.replace(old, out)  # put the previous results back
            elif exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputError(
                    f"output folder {out} was filled by another run meanwhile; its files are "
                    "kept and this run's are discarded (use --overwrite)"
                ) from None
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise OutputError(f"cannot write output folder {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
