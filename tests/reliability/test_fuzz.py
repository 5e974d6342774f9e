"""Bounded property-based fuzzing (issue 6, part 4): the readers and the CLI arguments.

The only exception a user may see is :class:`mcgenref.errors.McGenRefError` (printed by the
CLI as one ``error:`` line, exit status 2). Every target runs a fixed number of examples
with ``derandomize=True``: CI runs the same inputs every time, and the whole file takes a
few seconds.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.errors import ConfigError, McGenRefError, McGenRefWarning
from mcgenref.io import read_image
from mcgenref.io.dicom_write import dataset_bytes, mammogram_dataset
from mcgenref.io.meta import MAX_PIXEL_SPACING_MM, MIN_PIXEL_SPACING_MM
from mcgenref.io.readers import MAX_SIDE_PX, MIN_SIDE_PX
from mcgenref.io.spacing import parse_pixel_spacing

from ..conftest import phantom_mammogram

FUZZ = settings(
    derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
READER_EXAMPLES = 300
SPACING_EXAMPLES = 400
CLI_EXAMPLES = 60  # per command

SUFFIXES = (".dcm", ".dicom", ".png", ".pgm", ".tif", ".tiff", "")
FORMAT_OF = {".dcm": "dicom", ".dicom": "dicom", ".png": "png", ".pgm": "pgm",
             ".tif": "tiff", ".tiff": "tiff", "": "dicom"}


# --------------------------------------------------------------------------------------------
# (a) the image readers
# --------------------------------------------------------------------------------------------


def _seed_files() -> dict[str, bytes]:
    """Small valid files of every format: the starting points of the mutations."""
    import tifffile

    img8 = phantom_mammogram((40, 36), seed=3)
    img16 = img8.astype(np.uint16) * 200
    out: dict[str, bytes] = {}

    def pil(array: np.ndarray, fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format=fmt)
        return buf.getvalue()

    def tif(array: np.ndarray, **kw: object) -> bytes:
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **kw)
        return buf.getvalue()

    out[".png"] = pil(img8, "PNG")
    out[".png16"] = pil(img16, "PNG")
    out[".pgm"] = pil(img8, "PPM")
    out[".tif"] = tif(img16)
    out[".tiff"] = tif(img8.astype(np.float32) / 255.0)
    out[".tifw"] = tif(img8, photometric="miniswhite")
    out[".dcm"] = dataset_bytes(mammogram_dataset(img16 // 16, (0.1, 0.1), uid_entropy=["fz"]))
    ds = mammogram_dataset(4095 - img16 // 16, (0.1, 0.1), uid_entropy=["fz1"],
                           PhotometricInterpretation="MONOCHROME1", RescaleSlope="2",
                           RescaleIntercept="-10", WindowCenter="100", WindowWidth="50")
    out[".dcm1"] = dataset_bytes(ds)
    return out


SEEDS = _seed_files()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content): a seed file truncated, with bytes flipped / overwritten / inserted,
    or random bytes (sometimes behind a DICOM preamble)."""
    kind = draw(st.sampled_from(["mutate"] * 4 + ["random"]))
    if kind == "random":
        data = draw(st.binary(max_size=600))
        if draw(st.booleans()):
            data = bytes(128) + b"DICM" + data
        return draw(st.sampled_from(SUFFIXES)), data
    key = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[key])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        # most structure sits in the first few hundred bytes: bias positions there
        if draw(st.booleans()):
            pos = pos % min(len(data), 400)
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    suffix = {".png16": ".png", ".tifw": ".tif", ".dcm1": ".dcm"}.get(key, key)
    if draw(st.integers(0, 9)) == 0:  # now and then under another suffix
        suffix = draw(st.sampled_from(SUFFIXES))
    return suffix, bytes(data)


def _check_read(path: Path, suffix: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ours, and pydicom's about odd encodings
            img, meta = read_image(path)
    except McGenRefError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.float32 and img.ndim == 2
    assert np.isfinite(img).all()
    assert float(img.max()) > float(img.min())
    assert img.shape == (meta.rows, meta.columns)
    assert MIN_SIDE_PX <= min(img.shape) and max(img.shape) <= MAX_SIDE_PX
    assert meta.format == FORMAT_OF[suffix]
    assert len(meta.pixel_spacing_mm) == 2
    for v in meta.pixel_spacing_mm:
        assert MIN_PIXEL_SPACING_MM <= v <= MAX_PIXEL_SPACING_MM
    assert meta.voi_lut_applied is False
    meta.to_dict()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_seed_files_are_read(scratch: Path) -> None:
    """The mutations start from files the readers accept."""
    for key, data in SEEDS.items():
        suffix = {".png16": ".png", ".tifw": ".tif", ".dcm1": ".dcm"}.get(key, key)
        path = scratch / f"seed{suffix}"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", McGenRefWarning)
            img, _ = read_image(path)
        assert img.shape == (40, 36), key


@settings(FUZZ, max_examples=READER_EXAMPLES)
@given(case=mutated())
def test_read_image_returns_a_valid_image_or_a_clear_error(case: tuple[str, bytes],
                                                           scratch: Path) -> None:
    suffix, data = case
    path = scratch / f"fuzzed{suffix}"
    path.write_bytes(data)
    _check_read(path, suffix)


# --------------------------------------------------------------------------------------------
# (b) --pixel-spacing text
# --------------------------------------------------------------------------------------------


def _number_text() -> st.SearchStrategy[str]:
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    plausible = st.floats(min_value=0.0, max_value=2.0)
    return st.one_of(
        floats.map(repr), plausible.map(repr), plausible.map(lambda f: f"{f:.3g}"),
        st.sampled_from(["0", "-0", "0.1", ".1", "1.", "1e-1", "1E-2", "nan", "-inf", "Infinity",
                         "0x1", "1_0", "١", " 0.2 ", "0.1mm", "", " "]),
    )


SPACING_TEXT = st.one_of(
    st.text(max_size=24),
    _number_text(),
    st.tuples(_number_text(), st.sampled_from([",", "\\", ", ", " ,", ";", ",,", "x"]),
              _number_text()).map("".join),
    st.lists(_number_text(), min_size=0, max_size=4).map(",".join),
)


@settings(FUZZ, max_examples=SPACING_EXAMPLES)
@given(text=SPACING_TEXT)
def test_parse_pixel_spacing_returns_a_valid_pair_or_config_error(text: str) -> None:
    try:
        value = parse_pixel_spacing(text)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip()
        return
    assert isinstance(value, tuple) and len(value) == 2
    for v in value:
        assert isinstance(v, float) and math.isfinite(v)
        assert MIN_PIXEL_SPACING_MM <= v <= MAX_PIXEL_SPACING_MM
    parts = [p.strip() for p in text.strip().replace("\\", ",").split(",")]
    expected = [float(p) for p in parts] * (2 if len(parts) == 1 else 1)
    assert list(value) == expected


# --------------------------------------------------------------------------------------------
# (c) CLI arguments
# --------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Plausible and absurd things to name on a command line."""
    d = tmp_path_factory.mktemp("cli")
    good = d / "mammo.png"
    Image.fromarray(phantom_mammogram((160, 120))).save(good)
    (d / "truth").mkdir()
    mask = np.zeros((160, 120), np.uint8)
    mask[80:82, 30:32] = 255
    Image.fromarray(mask).save(d / "truth" / "mammo.png")
    pred = d / "pred"
    res = runner.invoke(app, ["segment", str(good), "--out", str(pred), "--method", "classical",
                              "--pixel-spacing", "0.2"])
    assert res.exit_code == 0, res.output
    (d / "notes.dcm").write_text("not DICOM")
    rgb = d / "rgb.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 40).save(rgb)
    (d / "bad.json").write_text("{not json")
    (d / "empty.json").write_text("{}")
    (d / "list.json").write_text("[1, 2]")
    (d / "weird.json").write_text('{"threshold": "high", "nope": 1}')
    (d / "folder.png").mkdir()
    return {
        "GOOD": str(good), "FOLDER": str(d), "TRUTH": str(d / "truth"), "PRED": str(pred),
        "TEXT_DCM": str(d / "notes.dcm"), "RGB": str(rgb), "MISSING": str(d / "missing.png"),
        "BAD_JSON": str(d / "bad.json"), "EMPTY_JSON": str(d / "empty.json"),
        "LIST_JSON": str(d / "list.json"), "WEIRD_JSON": str(d / "weird.json"),
        "DIR_PNG": str(d / "folder.png"),
    }


PATHS = ["GOOD", "FOLDER", "TRUTH", "PRED", "TEXT_DCM", "RGB", "MISSING", "DIR_PNG", "OUT",
         "OUT/sub dir", "BAD_JSON", "EMPTY_JSON", "LIST_JSON", "WEIRD_JSON"]
NUMBERS = ["0", "1", "2", "-1", "0.2", "0.5", "1.5", "nan", "inf", "-inf", "1e9", "abc", "",
           "0.1,0.1", "0.1,0.1,0.1", "32", "48", "8", "5000", "1000000"]
WORDS = ["classical", "model", "cpu", "cuda", "auto", "tpu", "masks", "inbreast", "mias", "xml",
         "--", "-", "--help"]

# per option: values a working call would use, then the absurd ones any option may get
OPTIONS: dict[str, dict[str, list[str] | None]] = {
    "segment": {"--out": ["OUT", "OUT/sub dir"], "--method": ["classical", "model"],
                "--pixel-spacing": ["0.2", "0.1", "0.1,0.08", "0.1\\0.08"],
                "--threshold": ["0.5", "0.3", "0.9"], "--device": ["cpu", "auto"],
                "--model": ["MISSING"], "--config": ["EMPTY_JSON"], "--overwrite": None},
    "synth": {"--out": ["OUT", "OUT/sub dir"], "--negatives": ["GOOD", "FOLDER"],
              "--count": ["1", "2"], "--seed": ["0", "7"], "--pixel-spacing": ["0.2", "0.1"],
              "--patch-size": ["32", "48"], "--config": ["EMPTY_JSON"], "--overwrite": None},
    "evaluate": {"--pred": ["PRED"], "--truth": ["TRUTH"], "--out": ["OUT", "OUT/sub dir"],
                 "--truth-format": ["masks"], "--tolerance-mm": ["1", "0.5"],
                 "--cluster-tolerance-mm": ["2", "0"], "--bootstrap": ["2", "5"],
                 "--seed": ["0", "3"]},
}
ABSURD = sorted(set(PATHS + NUMBERS + WORDS))
# values that would make a run legitimately long (not an error): kept out of the alphabet
LONG = {("synth", "--count"): {"1000000", "5000", "1e9"},
        ("evaluate", "--bootstrap"): {"1000000", "5000", "1e9"},
        ("synth", "--patch-size"): {"5000"}}


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    # hypothesis favours 0 and the bounds of integer ranges: test a middle value
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@st.composite
def argv(draw: st.DrawFn, command: str) -> list[str]:
    """Mostly the options a working call needs, then plausible or absurd extras (options
    repeated, unknown options, stray positionals, ``--opt=value`` spelling)."""
    opts = OPTIONS[command]
    args: list[str] = [command]
    if command == "segment":
        n_inputs = 0 if _rarely(draw, 8) else 2 if _rarely(draw, 5) else 1
        args += [draw(st.sampled_from(["GOOD", "FOLDER"])) if not _rarely(draw, 3)
                 else draw(st.sampled_from(PATHS)) for _ in range(n_inputs)]
        args += [] if _rarely(draw, 8) else ["--out", "OUT"]
        args += [] if _rarely(draw, 4) else ["--method", "classical"]
    elif command == "synth":
        args += [] if _rarely(draw, 8) else ["--out", "OUT"]
        args += ["--count", "1", "--patch-size", "32"]
    else:
        args += ["--pred", "PRED", "--truth", "TRUTH", "--out", "OUT", "--bootstrap", "3"]
    for _ in range(draw(st.integers(0, 4))):
        if _rarely(draw, 12):
            args.append(draw(st.sampled_from(["--bogus", "-x", "--out"])))
            continue
        name = draw(st.sampled_from(sorted(opts)))
        plausible = opts[name]
        if plausible is None:
            args.append(name)
            continue
        if not _rarely(draw, 3):
            value = draw(st.sampled_from(plausible))
        else:
            value = draw(st.sampled_from(
                [v for v in ABSURD if v not in LONG.get((command, name), set())]))
        args += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
    if command != "segment" and _rarely(draw, 10):
        args.insert(1, draw(st.sampled_from(PATHS)))  # a stray positional
    return args


def _resolve(args: list[str], files: dict[str, str], out: Path) -> list[str]:
    def one(token: str) -> str:
        head, sep, value = token.partition("=")
        if sep and head.startswith("--"):
            return f"{head}={one(value)}"
        if token == "OUT":
            return str(out)
        if token.startswith("OUT/"):
            return str(out / token[4:])
        return files.get(token, token)
    return [one(t) for t in args]


def _cli_case(command: str, args: list[str], files: dict[str, str]) -> None:
    # run in a scratch folder: a stray token taken as a relative output path ("--out cuda")
    # must not write into the caller's working directory
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    out = scratch / "out"
    cwd = os.getcwd()
    try:
        os.chdir(scratch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = runner.invoke(app, _resolve(args, files, out))
    finally:
        os.chdir(cwd)
        shutil.rmtree(scratch, ignore_errors=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"{args}: {res.exception!r}\n{res.output}"
    )
    assert res.exit_code in (0, 1, 2), (args, res.exit_code, res.output)
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 2 and "error:" in res.output:
        errors = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, res.output


@settings(FUZZ, max_examples=CLI_EXAMPLES)
@given(args=argv("segment"))
def test_cli_segment_arguments(args: list[str], files: dict[str, str]) -> None:
    _cli_case("segment", args, files)


@settings(FUZZ, max_examples=CLI_EXAMPLES)
@given(args=argv("synth"))
def test_cli_synth_arguments(args: list[str], files: dict[str, str]) -> None:
    _cli_case("synth", args, files)


@settings(FUZZ, max_examples=CLI_EXAMPLES)
@given(args=argv("evaluate"))
def test_cli_evaluate_arguments(args: list[str], files: dict[str, str]) -> None:
    _cli_case("evaluate", args, files)
