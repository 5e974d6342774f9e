"""Library warnings (highdicom, pydicom, Pillow...) reach the terminal as one project line
naming the input, never in Python's raw form."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from mcgenref.io.dicom_write import mammogram_dataset
from mcgenref.io.library_warnings import (
    MAX_WARNING_CHARS,
    OneLineLogHandler,
    attributed_to,
    current_input,
    first_sentence,
    library_warning_line,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def _dicom_that_libraries_warn_about(path: Path) -> Path:
    """A left CC mammogram whose PatientName has one component (highdicom warns when it builds
    the SEG) and whose data set is encoded in implicit VR while its file meta says explicit
    (pydicom warns and logs "Expected explicit VR, but found implicit VR" and reads it)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[0:256, 0:192]
    inside = ((rr - 128) / 100.0) ** 2 + (cc / 150.0) ** 2 <= 1.0
    img = np.where(inside, 1800 + rng.normal(0, 60, rr.shape), 100.0)
    ds = mammogram_dataset(np.clip(img, 0, 4095).astype(np.uint16), (0.1, 0.1),
                           PatientName="SINGLECOMPONENT", ImageLaterality="L", ViewPosition="CC")
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)  # Explicit VR Little Endian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    return path


def test_segment_prints_library_warnings_as_project_lines(tmp_path: Path) -> None:
    src = _dicom_that_libraries_warn_about(tmp_path / "odd.dcm")
    proc = subprocess.run(
        [sys.executable, "-m", "mcgenref.cli", "segment", str(src), "--out", str(tmp_path / "o"),
         "--method", "classical", "--no-progress", "--no-report"],
        capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "odd_seg.dcm").is_file()
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), proc.stderr
    for raw in ("UserWarning", "Traceback", "site-packages", "http", "check_person_name"):
        assert raw not in proc.stderr, proc.stderr
    assert any(line.startswith("warning: odd.dcm: highdicom: ") and "single component" in line
               for line in lines), proc.stderr
    pydicom_lines = [line for line in lines if line.startswith("warning: odd.dcm: pydicom: ")]
    assert len(pydicom_lines) == 1, proc.stderr  # warned and logged: printed once
    assert "Expected explicit VR, but found implicit VR" in pydicom_lines[0]


def test_line_names_the_library_and_the_input() -> None:
    pil = "/x/lib/python3.11/site-packages/PIL/TiffImagePlugin.py"
    assert library_warning_line("Truncated File Read", pil) == "PIL: Truncated File Read"
    with attributed_to(Path("/data/a/IM1.dcm")):
        assert current_input() == "IM1.dcm"
        with attributed_to("IM2.png"):
            assert library_warning_line("Image file is odd here. More text.", pil) == "IM2.png: PIL: Image file is odd here."
        assert current_input() == "IM1.dcm"
    assert current_input() is None


def test_attribution_is_per_thread() -> None:
    seen: list[str | None] = []
    with attributed_to("main.dcm"):
        worker = threading.Thread(target=lambda: seen.append(current_input()))
        worker.start()
        worker.join()
    assert seen == [None]


def test_first_sentence_is_one_bounded_line() -> None:
    text = ("The string \"X\" is unlikely to represent the intended person name since it "
            "contains only a single component. Construct a person name according to\n"
            "https://example.org/x.html, or else.")
    assert first_sentence(text).endswith("single component.")
    long = "word " * 200
    out = first_sentence(long)
    assert len(out) == MAX_WARNING_CHARS and "\n" not in out and out.endswith("...")


def test_log_handler_gives_one_line_per_record() -> None:
    lines: list[str] = []
    handler = OneLineLogHandler(lines.append)
    log = logging.getLogger("highdicom.seg.sop")
    log.addHandler(handler)
    try:
        with attributed_to("a.dcm"):
            log.warning("value of argument %r is\npotentially invalid", "patient_name")
        log.info("not shown")
    finally:
        log.removeHandler(handler)
    assert lines == ["a.dcm: highdicom: value of argument 'patient_name' is potentially invalid"]


def test_library_api_keeps_python_warnings() -> None:
    """Outside the CLI nothing is rerouted: a script still gets the library's own warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("x", UserWarning, stacklevel=1)
    assert [type(w.message) for w in caught] == [UserWarning]
