"""The DICOM SEG of ``mcgenref segment`` against the standard's validator (``dciodvfy``, Debian
package dicom3tools; these tests skip where it is absent, CI installs it), its
PatientOrientation rule, its coded concepts and highdicom's read-back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless, RLELossless
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.io.dicom_seg import (
    calcification_concepts,
    is_valid_patient_orientation,
    mammography_patient_orientation,
    seg_bytes,
    seg_patient_orientation,
)
from mcgenref.io.dicom_write import mammogram_dataset

runner = CliRunner()
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed"
)


def _errors(path: Path) -> set[str]:
    """dciodvfy's error lines for ``path`` (it prints them on stderr, starting with Error)."""
    assert DCIODVFY is not None
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + "\n" + done.stderr).splitlines()
    return {line.strip() for line in lines if line.strip().startswith("Error")}


def _pixels() -> np.ndarray:
    """A 400x300 'left breast' (a textured half-ellipse against the image's left edge, so the
    chest wall is on the left) with a cluster of four specks, 12 bits."""
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[0:400, 0:300]
    inside = ((rr - 200) / 168.0) ** 2 + (cc / 240.0) ** 2 <= 1.0
    tissue = 120 + 30 * np.sin(rr / 9.0) * np.cos(cc / 13.0) + rng.normal(0, 6, rr.shape)
    img = np.where(inside, tissue, 8.0) + rng.normal(0, 2, rr.shape)
    for r, c in [(190, 60), (200, 66), (195, 72), (210, 58)]:
        img += 90 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 0.8**2))
    return (np.clip(img, 0, 255) * 16).astype(np.uint16)


def _source(folder: Path, name: str, *, monochrome1: bool = False, compressed: str | None = None,
            **tags: object) -> Path:
    pixels = _pixels()
    attrs: dict[str, object] = {"PatientName": "DOE^JANE", "PatientID": "ID-1",
                                "ImageLaterality": "L", "ViewPosition": "CC"}
    attrs.update(tags)
    attrs = {k: v for k, v in attrs.items() if v is not None}
    if monochrome1:
        pixels = (4095 - pixels).astype(np.uint16)
    ds = mammogram_dataset(pixels, (0.1, 0.1), **attrs)
    if monochrome1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    if compressed is not None:
        ds.compress(compressed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _segment(path: Path, out: Path) -> tuple[pydicom.Dataset, str]:
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--method", "classical",
                              "--no-progress", "--no-report"])
    assert res.exit_code == 0, res.output
    return pydicom.dcmread(out / f"{path.stem}_seg.dcm"), res.output


CASES = {
    # name: (source options, the SEG's expected PatientOrientation)
    "monochrome1": ({"monochrome1": True, "PatientOrientation": ["A", "R"]}, ["A", "R"]),
    "rle-compressed": ({"compressed": RLELossless, "PatientOrientation": ["A", "R"]}, ["A", "R"]),
    "j2k-compressed": ({"compressed": JPEG2000Lossless, "PatientOrientation": ["A", "R"]},
                       ["A", "R"]),
    # no PatientOrientation: derived from L, CC and the chest wall the breast mask finds (left)
    "no-orientation": ({}, ["A", "R"]),
    # malformed (what CBIS-DDSM writes): never copied, derived instead
    "malformed-orientation": ({"PatientOrientation": "CC"}, ["A", "R"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_seg_orientation_for_each_kind_of_source(tmp_path: Path, case: str) -> None:
    options, expected = CASES[case]
    src = _source(tmp_path / "in", case, **options)
    seg, _ = _segment(src, tmp_path / "out")
    assert list(seg.PatientOrientation) == expected
    mask = np.asarray(Image.open(tmp_path / "out" / f"{case}_mask.png")) > 0
    assert mask.any() and np.array_equal(seg.pixel_array.astype(bool), mask)


@needs_dciodvfy
@pytest.mark.parametrize("case", list(CASES))
def test_seg_has_no_error_its_source_lacks(tmp_path: Path, case: str) -> None:
    options, _ = CASES[case]
    src = _source(tmp_path / "in", case, **options)
    _segment(src, tmp_path / "out")
    introduced = _errors(tmp_path / "out" / f"{case}_seg.dcm") - _errors(src)
    assert not introduced, introduced


@needs_dciodvfy
def test_dciodvfy_sees_what_we_fixed(tmp_path: Path) -> None:
    """The check can fail: the malformed source's own errors, and a SEG left without
    PatientOrientation (highdicom's output) is reported missing."""
    src = _source(tmp_path / "in", "bad", PatientOrientation="CC")
    assert any("PatientOrientation" in e for e in _errors(src))
    seg, _ = _segment(src, tmp_path / "out")
    del seg.PatientOrientation
    seg.save_as(tmp_path / "no_po.dcm")
    assert any("PatientOrientation" in e for e in _errors(tmp_path / "no_po.dcm"))


def test_orientation_left_empty_when_it_cannot_be_told(tmp_path: Path) -> None:
    src = _source(tmp_path / "in", "nolat", ImageLaterality=None, ViewPosition=None)
    seg, _ = _segment(src, tmp_path / "out")  # the name carries no laterality/view either
    assert "PatientOrientation" in seg and seg.PatientOrientation == ""


@pytest.mark.parametrize("value, ok", [
    (["A", "R"], True), (["P", "FL"], True), (["A", "FR"], True), (["L", "F"], True),
    ("CC", False), (["A"], False), (["A", "P"], False), (["AP", "F"], False),
    (["A", "X"], False), (["AFRL", "H"], False), (["A", "R", "F"], False), ("", False),
    (["", "R"], False), (["RR", "F"], False),
])
def test_patient_orientation_validity(value: object, ok: bool) -> None:
    assert is_valid_patient_orientation(value) is ok


@pytest.mark.parametrize("lat, view, left, expected", [
    ("L", "CC", True, ["A", "R"]), ("R", "CC", False, ["P", "L"]),
    ("L", "MLO", True, ["A", "FR"]), ("R", "MLO", False, ["P", "FL"]),
    ("R", "CC", True, ["A", "L"]),  # a right breast shown with the chest wall on the left
    ("L", "ML", False, ["P", "F"]), ("L", "XCCL", True, ["A", "R"]),
    ("L", "FB", True, None), (None, "CC", True, None), ("L", "CC", None, None),
])
def test_mammography_orientation_rule(lat: str | None, view: str | None, left: bool | None,
                                      expected: list[str] | None) -> None:
    derived = mammography_patient_orientation(lat, view, left)
    assert derived == expected
    if derived is not None:
        assert is_valid_patient_orientation(derived)


def test_a_valid_source_orientation_wins_over_the_rule() -> None:
    ds = pydicom.Dataset()
    ds.PatientOrientation = ["P", "L"]
    assert seg_patient_orientation(ds, "L", "CC", True) == (["P", "L"], "source")
    ds.PatientOrientation = "CC"
    assert seg_patient_orientation(ds, "L", "CC", True) == (["A", "R"], "derived")
    assert seg_patient_orientation(ds, None, None, True) == ("", "empty")


def test_segment_codes_are_the_documented_ones() -> None:
    """Category in CID 7150 (as pydicom's copy of PS3.16 lists it); the type is SCT's
    morphologic abnormality 'pathologic calcification' (docs/segment.md says why)."""
    from pydicom.sr._cid_dict import cid_concepts

    category, prop_type = calcification_concepts()
    assert (category.scheme_designator, category.value) == ("SCT", "49755003")
    assert "MorphologicallyAbnormalStructure" in cid_concepts[7150]["SCT"]
    assert (prop_type.scheme_designator, prop_type.value) == ("SCT", "18115005")
    assert prop_type.meaning.lower() == "pathologic calcification"


def test_highdicom_reads_the_seg_back_without_pixel_spacing(tmp_path: Path) -> None:
    import highdicom as hd

    src = _source(tmp_path / "in", "hd")  # ImagerPixelSpacing only (no PixelSpacing)
    mask = np.zeros((400, 300), bool)
    mask[10:20, 30:35] = True
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_bytes(src, mask, {"name": "t", "version": "1"}))
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 1
    sop = pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([sop], segment_numbers=[1])
    assert np.array_equal(pixels[0, :, :, 0].astype(bool), mask)


def test_highdicom_refusal_with_pixel_spacing_is_the_documented_one(tmp_path: Path) -> None:
    """docs/segment.md: highdicom 0.28 refuses projection SEGs with PixelSpacing and no slice
    thickness; pydicom reads them. If highdicom starts reading them, update the docs."""
    import highdicom as hd

    src = _source(tmp_path / "in", "ps", PixelSpacing=["0.1", "0.1"])
    mask = np.zeros((400, 300), bool)
    mask[5, 5] = True
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_bytes(src, mask, {"name": "t", "version": "1"}))
    assert np.array_equal(pydicom.dcmread(path).pixel_array.astype(bool), mask)
    with pytest.raises(Exception, match="Pixel Measures"):
        hd.seg.segread(path)


@pytest.mark.realdata
@needs_dciodvfy
def test_cbis_ddsm_seg_validates(real_data: Path, tmp_path: Path) -> None:
    """A real CBIS-DDSM file: its PatientOrientation is 'CC' (malformed); the SEG gets the
    derived A\\R (left CC, chest wall on the left) and no error the source lacks; highdicom's
    person-name complaint is one project line."""
    src = real_data / "cbis-ddsm" / "P_00173_LCC.dcm"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    seg, _ = _segment(src, tmp_path / "out")
    assert list(seg.PatientOrientation) == ["A", "R"]
    seg_path = tmp_path / "out" / "P_00173_LCC_seg.dcm"
    assert not (_errors(seg_path) - _errors(src))
    res = runner.invoke(app, ["segment", str(src), "--out", str(tmp_path / "out"), "--method",
                              "classical", "--no-progress", "--no-report", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "UserWarning" not in res.stderr and "http" not in res.stderr, res.stderr
    assert "warning: P_00173_LCC.dcm: highdicom: The string" in res.stderr, res.stderr
