"""Bad-input corpus (issue 6, part 1): one table of inputs the CLI must survive.

Each case builds its input under ``tmp_path``, runs ``mcgenref segment ... --method
classical`` (or ``mcgenref synth --negatives``) in-process, and checks the documented
behaviour:

* ``ok``: exit status 0 and, for ``segment``, all seven outputs of every expected image;
* ``error``: exit status 2, exactly one line starting with ``error:`` (``warning:`` lines may
  come before it) that contains the expected fragment, and no traceback.

Either way nothing is half-written: no temporary file (``.*.tmp``) or staging folder is left
behind, and an image that failed has no ``<stem>_meta.json`` (the record written last that
marks an image as finished). Faults that permissions cannot produce when running as root (a
read-only output folder, a full disk) are injected into :mod:`mcgenref.io.atomic`.

The last test runs two real ``mcgenref segment`` processes into one output folder at once.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.io.predictions import OUTPUT_SUFFIXES
from mcgenref.io import atomic
from mcgenref.io.dicom_write import dataset_bytes, mammogram_dataset

from ..conftest import phantom_mammogram

runner = CliRunner()

SHAPE = (160, 120)  # small: each classical segmentation takes a few ms
STEM = "mammo"


# --------------------------------------------------------------------------------------------
# input builders: each writes into the case folder and returns the input paths for the CLI
# --------------------------------------------------------------------------------------------


def _pixels8(seed: int = 0) -> np.ndarray:
    return phantom_mammogram(SHAPE, seed=seed)


def _pixels12(seed: int = 0) -> np.ndarray:
    return _pixels8(seed).astype(np.uint16) * 16


def _png(path: Path, array: np.ndarray | None = None, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(_pixels8() if array is None else array)
    (img.convert(mode) if mode else img).save(path)
    return path


def _dicom(path: Path, edit: Callable | None = None, pixels: np.ndarray | None = None,
           **attrs: object) -> Path:
    ds = mammogram_dataset(_pixels12() if pixels is None else pixels, (0.1, 0.1),
                           uid_entropy=["corpus"], **attrs)
    if edit is not None:
        edit(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dataset_bytes(ds))
    return path


def _tiff(path: Path, array: np.ndarray) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def _png_header_only(path: Path, rows: int, cols: int) -> Path:
    """A valid PNG signature + IHDR claiming ``rows`` x ``cols`` with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    ihdr = cols.to_bytes(4, "big") + rows.to_bytes(4, "big") + bytes([16, 0, 0, 0, 0])
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def one(build: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda d: [str(build(d))]


def b_png(d: Path) -> list[str]:
    return [str(_png(d / f"{STEM}.png"))]


def b_dicom(d: Path) -> list[str]:
    return [str(_dicom(d / f"{STEM}.dcm"))]


def b_truncated_pixels(d: Path) -> list[str]:
    full = dataset_bytes(mammogram_dataset(_pixels12(), (0.1, 0.1)))
    (d / f"{STEM}.dcm").write_bytes(full[: len(full) - 5000])
    return [str(d / f"{STEM}.dcm")]


def b_truncated_header(d: Path) -> list[str]:
    full = dataset_bytes(mammogram_dataset(_pixels12(), (0.1, 0.1)))
    (d / f"{STEM}.dcm").write_bytes(full[:300])
    return [str(d / f"{STEM}.dcm")]


def _del(keyword: str) -> Callable:
    return lambda ds: delattr(ds, keyword)


def _monochrome1_voi(ds) -> None:
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (4095 - _pixels12()).astype(np.uint16).tobytes()
    ds.WindowCenter = "1000"  # a narrow window that would clip the tissue if applied
    ds.WindowWidth = "200"
    ds.VOILUTFunction = "LINEAR"


def _signed(offset: int) -> Callable:
    """Signed 12-bit data (-2048..2047): the phantom halved, minus ``offset``."""
    def edit(ds) -> None:
        ds.PixelRepresentation = 1
        ds.PixelData = (_pixels12().astype(np.int16) // 2 - offset).tobytes()
    return edit


def _with(array: np.ndarray, value: float, where: tuple[slice, slice]) -> np.ndarray:
    out = array.astype(np.float32)
    out[where] = value
    return out


def _claims_60000(ds) -> None:
    ds.Rows = 60000
    ds.Columns = 60000  # PixelData stays 160x120: a decoder trusting the header would allocate 7 GB


def _spacing(value: list[str]) -> Callable:
    def edit(ds) -> None:
        ds.ImagerPixelSpacing = value
    return edit


def _tiff_bad_tag(path: Path) -> Path:
    """A TIFF whose StripOffsets tag has an invalid type (tifffile logs, then fails)."""
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, _pixels12())
    data = bytearray(buf.getvalue())
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd:ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry:entry + 2], "little") == 273:
            data[entry + 2:entry + 4] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


def b_text_named_dcm(d: Path) -> list[str]:
    p = d / "notes.dcm"
    p.write_text("Patient notes, not an image.\n" * 20)
    return [str(p)]


def b_jpeg_named_png(d: Path) -> list[str]:
    p = d / f"{STEM}.png"
    Image.fromarray(_pixels8()).save(p, format="JPEG")
    return [str(p)]


def b_empty_file(d: Path) -> list[str]:
    p = d / f"{STEM}.png"
    p.write_bytes(b"")
    return [str(p)]


def b_unknown_suffix(d: Path) -> list[str]:
    p = d / f"{STEM}.jpg"
    Image.fromarray(_pixels8()).save(p)
    return [str(p)]


def b_folder_named_png(d: Path) -> list[str]:
    p = d / "scans.png"
    p.mkdir()
    return [str(p)]


def b_folder_named_png_beside_image(d: Path) -> list[str]:
    folder = d / "in"
    (folder / "sub.png").mkdir(parents=True)
    _png(folder / f"{STEM}.png")
    return [str(folder)]


def b_unicode_spaces(d: Path) -> list[str]:
    return [str(_png(d / "ünï cödé" / f"{STEM} ✓.png"))]


def b_symlink_loop_folder(d: Path) -> list[str]:
    folder = d / "in"
    _png(folder / f"{STEM}.png")
    os.symlink(folder, folder / "loop")  # in/loop -> in
    return [str(folder)]


def b_symlink_loop_file(d: Path) -> list[str]:
    folder = d / "in"
    _png(folder / f"{STEM}.png")
    os.symlink(folder / "b.png", folder / "a.png")  # a.png -> b.png -> a.png
    os.symlink(folder / "a.png", folder / "b.png")
    return [str(folder)]


def b_symlink_loop_explicit(d: Path) -> list[str]:
    os.symlink(d / "self.png", d / "self.png")
    return [str(d / "self.png")]


def b_batch_one_bad(d: Path) -> list[str]:
    folder = d / "in"
    _png(folder / f"{STEM}.png")
    _png(folder / "broken.png", np.zeros((64, 64), np.uint16))  # constant
    return [str(folder)]


def b_two_images(d: Path) -> list[str]:
    folder = d / "in"
    _png(folder / "a.png", _pixels8(1))
    _png(folder / "b.png", _pixels8(2))
    return [str(folder)]


def b_same_stem(d: Path) -> list[str]:
    return [str(_png(d / "x" / f"{STEM}.png")), str(_dicom(d / "y" / f"{STEM}.dcm"))]


def b_same_stem_one_folder(d: Path) -> list[str]:
    return [str(_png(d / "x" / f"{STEM}.png")), str(_dicom(d / "x" / f"{STEM}.dcm"))]


def b_list_with_missing(d: Path) -> list[str]:
    _png(d / "in" / f"{STEM}.png")
    (d / "in" / "list.txt").write_text(f"# batch\n{STEM}.png\ngone1.png\n\ngone2.dcm\n")
    return ["@" + str(d / "in" / "list.txt")]


def b_out_is_file(d: Path) -> list[str]:
    (d / "out").write_text("a file where the output folder should be")
    return b_png(d)


# --------------------------------------------------------------------------------------------
# faults injected into mcgenref.io.atomic (root ignores permissions, so simulate them)
# --------------------------------------------------------------------------------------------


def _os_with(**overrides: Callable) -> types.SimpleNamespace:
    """A stand-in for the ``os`` module as seen by mcgenref.io.atomic only."""
    ns = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


def _raiser(code: int, after: int = 0) -> Callable:
    calls = {"n": 0}

    def fail(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(code, os.strerror(code))
        real = {errno.ENOSPC: os.fsync, errno.EROFS: os.replace}[code]
        return real(*args, **kwargs)
    return fail


def f_read_only_replace(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(atomic, "os", _os_with(replace=_raiser(errno.EROFS)))


def f_read_only_folder(mp: pytest.MonkeyPatch) -> None:
    def fail(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    import tempfile
    fake = types.SimpleNamespace(mkstemp=fail, mkdtemp=fail, NamedTemporaryFile=fail,
                                 gettempdir=tempfile.gettempdir)
    mp.setattr(atomic, "tempfile", fake)


def f_disk_full(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(atomic, "os", _os_with(fsync=_raiser(errno.ENOSPC)))


def f_disk_full_mid_batch(mp: pytest.MonkeyPatch) -> None:
    # the first image's 7 files are written; the 3rd file of the second image hits a full disk
    mp.setattr(atomic, "os", _os_with(fsync=_raiser(errno.ENOSPC, after=len(OUTPUT_SUFFIXES) + 2)))


def f_disk_full_synth(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(atomic, "os", _os_with(fsync=_raiser(errno.ENOSPC, after=1)))


# --------------------------------------------------------------------------------------------
# extra checks
# --------------------------------------------------------------------------------------------


def _meta(out: Path, stem: str = STEM) -> dict:
    return json.loads((out / f"{stem}_meta.json").read_text())


def c_inverted_no_voi(out: Path) -> None:
    image = _meta(out)["image"]
    assert image["inverted"] is True and image["photometric_interpretation"] == "MONOCHROME1"


def c_default_spacing(out: Path) -> None:
    m = _meta(out)
    assert m["pixel_spacing_mm"] == [0.1, 0.1] and m["pixel_spacing_source"] == "default"


def c_user_spacing(out: Path) -> None:
    assert _meta(out)["pixel_spacing_mm"] == [0.2, 0.15]


def c_first_image_intact(out: Path) -> None:
    for suffix in OUTPUT_SUFFIXES:
        assert (out / f"a{suffix}").is_file(), suffix
    assert _meta(out, "a")["input"] == "a.png"
    assert not (out / "b_meta.json").exists()
    assert not (out / "b_overlay.png").exists()


def c_mirrored(out: Path) -> None:
    assert _meta(out / "x")["input"] == f"{STEM}.png"
    assert _meta(out / "y")["input"] == f"{STEM}.dcm"
    assert not (out / f"{STEM}_meta.json").exists()
    assert (out / "summary.csv").is_file()


def c_nothing_written(out: Path) -> None:
    assert not out.exists()


def c_good_image_of_batch_done(out: Path) -> None:
    assert all((out / f"{STEM}{s}").is_file() for s in OUTPUT_SUFFIXES)


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], list[str]]
    expect: str  # "ok" or "error"
    fragment: str = ""  # in the error line, or in a warning line for "ok"
    args: tuple[str, ...] = ()
    command: str = "segment"
    stems: tuple[str, ...] = (STEM,)  # images expected complete ("ok") or absent ("error")
    fault: Callable[[pytest.MonkeyPatch], None] | None = None
    check: Callable[[Path], None] | None = None
    max_s: float | None = None
    out: str = "out"
    xfail: str = ""  # a known bug (strict: the case fails loudly once it is fixed)


CASES: list[Case] = [
    # --- baselines: the corpus machinery itself accepts good input
    Case("valid-png-with-spacing", b_png, "ok", args=("--pixel-spacing", "0.2,0.15"),
         check=c_user_spacing),
    Case("valid-dicom", b_dicom, "ok"),
    # --- DICOM
    Case("dicom-truncated-pixel-data", b_truncated_pixels, "error", "mammo.dcm"),
    Case("dicom-truncated-header", b_truncated_header, "error", "mammo.dcm"),
    Case("dicom-without-pixel-data", one(lambda d: _dicom(d / f"{STEM}.dcm", _del("PixelData"))),
         "error", "no pixel data"),
    Case("dicom-modality-CT-not-mammogram", one(lambda d: _dicom(d / f"{STEM}.dcm", Modality="CT")),
         "error", "modality CT is not a mammogram"),
    Case("dicom-without-modality-is-read-with-warning",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _del("Modality"))), "ok", "no Modality tag"),
    Case("dicom-tomosynthesis-volume",
         one(lambda d: _dicom(d / f"{STEM}.dcm", SOPClassUID="1.2.840.10008.5.1.4.1.1.13.1.3")),
         "error", "tomosynthesis"),
    Case("dicom-rgb", one(lambda d: _dicom(d / f"{STEM}.dcm", PhotometricInterpretation="RGB")),
         "error", "colour image"),
    Case("dicom-monochrome1-with-voi-window-is-inverted-window-ignored",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _monochrome1_voi)), "ok", check=c_inverted_no_voi),
    Case("dicom-signed-pixel-representation", one(lambda d: _dicom(d / f"{STEM}.dcm", _signed(32))),
         "ok"),
    Case("dicom-signed-pixel-representation-all-negative",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _signed(1400))), "ok"),
    Case("dicom-header-claims-60000x60000-refused-before-allocating",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _claims_60000)), "error",
         "60000x60000 pixels exceeds the limit", max_s=2.0),
    Case("dicom-bits-stored-32", one(lambda d: _dicom(d / f"{STEM}.dcm", BitsStored=32)),
         "error", "BitsStored 32"),
    Case("text-file-named-dcm", b_text_named_dcm, "error", "notes.dcm"),
    # --- DICOM spacing stored in the file: invalid values are skipped with a warning
    Case("dicom-spacing-missing-uses-default-with-warning",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _del("ImagerPixelSpacing"))), "ok",
         "no pixel spacing recorded", check=c_default_spacing),
    Case("dicom-spacing-zero-ignored-with-warning",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _spacing(["0", "0"]))), "ok",
         "ignoring invalid ImagerPixelSpacing", check=c_default_spacing),
    Case("dicom-spacing-negative-ignored-with-warning",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _spacing(["-0.1", "-0.1"]))), "ok",
         "ignoring invalid ImagerPixelSpacing", check=c_default_spacing),
    Case("dicom-spacing-absurd-10mm-ignored-with-warning",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _spacing(["10", "10"]))), "ok",
         "ignoring invalid ImagerPixelSpacing", check=c_default_spacing),
    # --- PNG / TIFF
    Case("png-1-bit", one(lambda d: _png(d / f"{STEM}.png", mode="1")), "error", "1-bit"),
    Case("png-rgb", one(lambda d: _png(d / f"{STEM}.png", mode="RGB")), "error", "RGB colour"),
    Case("png-palette", one(lambda d: _png(d / f"{STEM}.png", mode="P")), "error", "palette"),
    Case("png-gray-with-alpha", one(lambda d: _png(d / f"{STEM}.png", mode="LA")), "error",
         "alpha"),
    Case("png-16-bit-all-zero", one(lambda d: _png(d / f"{STEM}.png", np.zeros((128, 96), np.uint16))),
         "error", "empty (constant)"),
    Case("png-1x1", one(lambda d: _png(d / f"{STEM}.png", np.full((1, 1), 100, np.uint8))),
         "error", "too small"),
    Case("png-header-claims-60000x60000-refused-before-allocating",
         one(lambda d: _png_header_only(d / f"{STEM}.png", 60000, 60000)), "error", "exceeds",
         max_s=2.0),
    Case("png-empty-file", b_empty_file, "error", "empty"),
    Case("jpeg-named-png", b_jpeg_named_png, "error", "not PNG"),
    Case("unknown-suffix-jpg", b_unknown_suffix, "error", "unsupported file type"),
    Case("png-missing-spacing-uses-default-with-warning", b_png, "ok",
         "no pixel spacing recorded", check=c_default_spacing),
    Case("tiff-with-nan", one(lambda d: _tiff(d / f"{STEM}.tif", _with(
        _pixels8(), np.nan, (slice(70, 72), slice(10, 12))))), "error", "NaN or infinite"),
    Case("tiff-with-inf", one(lambda d: _tiff(d / f"{STEM}.tiff", _with(
        _pixels8(), np.inf, (slice(80, 81), slice(20, 21))).astype(np.float64))), "error",
         "NaN or infinite"),
    Case("tiff-corrupt-tag-one-line-no-library-log", one(lambda d: _tiff_bad_tag(d / f"{STEM}.tif")),
         "error", "cannot read"),
    Case("tiff-float-finite", one(lambda d: _tiff(d / f"{STEM}.tif",
                                                  _pixels8().astype(np.float32) / 255)), "ok"),
    # --- --pixel-spacing on the command line: refused before any file is read
    Case("cli-spacing-zero", b_png, "error", "pixel spacing", args=("--pixel-spacing", "0")),
    Case("cli-spacing-negative", b_png, "error", "pixel spacing", args=("--pixel-spacing=-0.1",)),
    Case("cli-spacing-absurd-10mm", b_png, "error", "outside the plausible range",
         args=("--pixel-spacing", "10")),
    Case("cli-spacing-micrometres-70", b_png, "error", "is it in mm",
         args=("--pixel-spacing", "70")),
    Case("cli-spacing-not-a-number", b_png, "error", "not a number", args=("--pixel-spacing", "abc")),
    Case("cli-spacing-three-values", b_png, "error", "cannot parse pixel spacing",
         args=("--pixel-spacing", "0.1,0.1,0.1")),
    Case("cli-spacing-nan", b_png, "error", "pixel spacing", args=("--pixel-spacing", "nan")),
    Case("cli-spacing-inf", b_png, "error", "pixel spacing", args=("--pixel-spacing", "inf")),
    # --- paths and folders
    Case("unicode-and-spaces-in-path", b_unicode_spaces, "ok", stems=(f"{STEM} ✓",),
         out="résultats à/out put"),
    Case("folder-named-png-given-as-input", b_folder_named_png, "error", "no images found"),
    Case("folder-named-png-inside-input-folder-is-skipped", b_folder_named_png_beside_image, "ok"),
    Case("symlink-loop-folder-is-not-followed", b_symlink_loop_folder, "ok"),
    Case("symlink-loop-file-named-png-in-folder-is-skipped", b_symlink_loop_file, "ok"),
    Case("symlink-loop-given-explicitly", b_symlink_loop_explicit, "error", "self.png"),
    Case("missing-input", lambda d: [str(d / "nowhere.png")], "error", "no such file"),
    Case("two-inputs-with-one-stem-from-two-folders-are-mirrored", b_same_stem, "ok",
         stems=(f"x/{STEM}", f"y/{STEM}"), check=c_mirrored),
    Case("two-inputs-with-one-stem-in-one-folder", b_same_stem_one_folder, "error",
         "share the name"),
    Case("list-file-naming-missing-files-refused-before-any-work", b_list_with_missing, "error",
         "gone1.png (line 3 of", check=c_nothing_written),
    Case("batch-with-one-bad-image-finishes-the-good-one", b_batch_one_bad, "error",
         "1 of 2 images failed", stems=("broken",), check=c_good_image_of_batch_done),
    # --- the output folder
    Case("output-path-is-a-file", b_out_is_file, "error", "not writable"),
    Case("output-folder-read-only-probe-fails", b_png, "error", "Read-only file system",
         fault=f_read_only_folder),
    Case("output-folder-read-only-rename-fails", b_png, "error", "Read-only file system",
         fault=f_read_only_replace),
    Case("disk-full", b_png, "error", "No space left on device", fault=f_disk_full),
    Case("disk-full-mid-batch-keeps-finished-images", b_two_images, "error",
         "No space left on device", stems=("b",), fault=f_disk_full_mid_batch,
         check=c_first_image_intact),
    # --- mcgenref synth --negatives reads through the same readers
    Case("synth-valid-negative", b_png, "ok", command="synth"),
    Case("synth-truncated-dicom-negative", b_truncated_pixels, "error", "mammo.dcm",
         command="synth"),
    Case("synth-rgb-negative", one(lambda d: _png(d / f"{STEM}.png", mode="RGB")), "error",
         "RGB colour", command="synth"),
    Case("synth-non-mg-negative", one(lambda d: _dicom(d / f"{STEM}.dcm", Modality="US")),
         "error", "modality US", command="synth"),
    Case("synth-negative-claims-60000x60000",
         one(lambda d: _dicom(d / f"{STEM}.dcm", _claims_60000)), "error", "exceeds the limit",
         command="synth", max_s=2.0),
    Case("synth-spacing-absurd-10mm", b_png, "error", "outside the plausible range",
         args=("--pixel-spacing", "10"), command="synth"),
    Case("synth-disk-full", b_png, "error", "No space left on device", command="synth",
         fault=f_disk_full_synth),
]


def _command(case: Case, inputs: list[str], out: Path) -> list[str]:
    if case.command == "segment":
        return ["segment", *inputs, "--out", str(out), "--method", "classical", *case.args]
    negatives = [x for p in inputs for x in ("--negatives", p)]
    spacing = () if "--pixel-spacing" in case.args else ("--pixel-spacing", "0.2")
    return ["synth", *negatives, "--out", str(out), "--count", "2", "--patch-size", "48",
            *spacing, *case.args]


_PROGRESS = re.compile(r"^(segmenting|synthesising)\b|^\d+ segmented, \d+ already done -> ")


def _leftovers(root: Path) -> list[str]:
    """Temporary files and staging folders anywhere under ``root``."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if (name.startswith(".") and (name.endswith(".tmp") or ".partial-" in name
                                          or ".old-" in name or "mcgenref-probe" in name)):
                bad.append(os.path.join(dirpath, name))
    return bad


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.expect for c in CASES} == {"ok", "error"}


def _params() -> list:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                         if c.xfail else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "case"
    work.mkdir()
    inputs = case.build(work)
    out = work / case.out
    if case.fault is not None:
        case.fault(monkeypatch)
    t0 = time.perf_counter()
    res = runner.invoke(app, _command(case, inputs, out))
    elapsed = time.perf_counter() - t0
    monkeypatch.undo()
    text = res.output
    assert "Traceback" not in text, text
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    # nothing but our own lines: no library logging, no Python warnings
    noise = [line for line in lines if not line.startswith(("error:", "warning:"))
             and not _PROGRESS.match(line)]
    assert noise == [], text

    if case.expect == "ok":
        assert res.exit_code == 0, text
        assert not errors, text
        if case.fragment:
            assert any(line.startswith("warning:") and case.fragment in line for line in lines), text
        if case.command == "segment":
            for stem in case.stems:
                for suffix in OUTPUT_SUFFIXES:
                    assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
                assert _meta(out, stem)["image_size"] == list(SHAPE)
        else:
            assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
            assert (out / "dataset.json").is_file()
    else:
        assert res.exit_code == 2, text
        assert len(errors) == 1, text
        assert case.fragment in errors[0], text
        assert lines[-1] == errors[0], text  # nothing after the error line
        assert len(errors[0]) < 500, errors[0]
        if case.command == "segment" and out.is_dir():
            for stem in case.stems:
                assert not (out / f"{stem}_meta.json").exists(), stem
        if case.command == "synth":
            assert not out.exists() or (out.is_file() and case.id == "output-path-is-a-file")
    assert _leftovers(work) == []
    if case.max_s is not None:
        assert elapsed < case.max_s, f"took {elapsed:.2f} s"
    if case.check is not None:
        case.check(out)


# --------------------------------------------------------------------------------------------
# two runs writing to one output folder at once (real processes)
# --------------------------------------------------------------------------------------------


def test_two_concurrent_runs_into_one_output_folder(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    stems = [f"img{i}" for i in range(4)]
    for i, stem in enumerate(stems):
        _png(folder / f"{stem}.png", _pixels8(i))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mcgenref.cli", "segment", str(folder), "--out", str(out),
           "--method", "classical", "--pixel-spacing", "0.2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (stdout, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr
        assert "Traceback" not in stderr and "error:" not in stderr, stderr
        assert "segmented" in stdout, stdout
    assert _leftovers(tmp_path) == []
    expected = {f"{s}{suffix}" for s in stems for suffix in OUTPUT_SUFFIXES} | {"summary.csv"}
    assert {p.name for p in out.iterdir()} == expected | {"report.html"}
    # both runs wrote the report atomically: the last rename wins, whole
    assert (out / "report.html").read_text().rstrip().endswith("</html>")
    for stem in stems:
        meta = _meta(out, stem)
        assert meta["input"] == f"{stem}.png" and meta["image_size"] == list(SHAPE)
        json.loads((out / f"{stem}_clusters.json").read_text())
        header = (out / f"{stem}_calcifications.csv").read_text().splitlines()[0]
        assert header.startswith(("y", "x", "id")) or "," in header
        for suffix in ("_prob.png", "_mask.png", "_overlay.png", "_breast.png"):
            with Image.open(out / f"{stem}{suffix}") as im:
                im.load()
                assert im.size == (SHAPE[1], SHAPE[0])


def test_two_concurrent_synth_runs_into_one_output_folder(tmp_path: Path) -> None:
    """``synth`` builds its folder aside and moves it into place: one run wins whole, the
    other is refused (the folder is no longer empty) and the winner's files are untouched."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mcgenref.cli", "synth", "--out", str(out), "--count", "3",
             "--patch-size", "48", "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for seed in (1, 2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    assert "Traceback" not in loser
    lines = [line for line in loser.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0], loser
    winner_seed = 1 if procs[0].returncode == 0 else 2
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["base_seed"] == winner_seed and dataset["count"] == 3
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3
    for sub in ("images", "masks"):
        assert sorted(p.name for p in (out / sub).iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_folder_filled_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """The commit-time half of the race above, deterministically."""
    from mcgenref.errors import OutputError

    out = tmp_path / "out"
    with pytest.raises(OutputError, match="filled by another run meanwhile"), \
            atomic.staged_directory(out) as stage:
        (stage / "mine.txt").write_text("mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")  # another run finished first
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic.staged_directory(out, overwrite=True) as stage:
        (stage / "mine.txt").write_text("mine")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_evaluate_with_no_truth_calcification_prints_na(tmp_path: Path) -> None:
    """Found by the CLI fuzzing: with no calcification in the truth (normal images only)
    the sensitivities are undefined (None); the summary line said TypeError instead."""
    img = _png(tmp_path / "in" / f"{STEM}.png")
    (tmp_path / "truth").mkdir()
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(tmp_path / "truth" / f"{STEM}.png")
    pred = tmp_path / "pred"
    res = runner.invoke(app, ["segment", str(img), "--out", str(pred), "--method", "classical",
                              "--pixel-spacing", "0.2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(tmp_path / "truth"),
                              "--out", str(tmp_path / "ev"), "--bootstrap", "2"])
    assert res.exception is None and res.exit_code == 0, res.output
    assert "MC sensitivity n/a" in res.output
    json.loads((tmp_path / "ev" / "metrics.json").read_text())
