"""``mcgenref info``: what the reader sees, for files whose answers are known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.errors import InputError
from mcgenref.io import read_image
from mcgenref.io.dicom_write import mammogram_dataset
from mcgenref.io.info import INFO_KEYS, describe_image, info_text

runner = CliRunner()


def _pixels() -> np.ndarray:
    rr, cc = np.mgrid[0:128, 0:96]
    return (100 + 10 * rr + cc).astype(np.uint16)  # 100 .. 1465, 12 bits


def _mag_mlo(path: Path) -> Path:
    """MONOCHROME1 right MLO magnification view with a rescale and a window."""
    ds = mammogram_dataset(_pixels(), (0.07, 0.065), ImageLaterality="R", ViewPosition="MLO",
                           EstimatedRadiographicMagnificationFactor="1.8", RescaleSlope="2",
                           RescaleIntercept="0", WindowCenter="1000", WindowWidth="2000",
                           PatientOrientation=["P", "FL"])
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_record_says_what_the_reader_did(tmp_path: Path) -> None:
    r = describe_image(_mag_mlo(tmp_path / "a.dcm"))
    assert tuple(r) == INFO_KEYS
    assert (r["format"], r["rows"], r["columns"]) == ("dicom", 128, 96)
    assert r["transfer_syntax"] == "Explicit VR Little Endian"
    assert r["pixel_spacing_mm"] == [0.07, 0.065] and r["spacing_source"] == "ImagerPixelSpacing"
    assert r["photometric_interpretation"] == "MONOCHROME1" and r["inverted"] is True
    assert r["bits_stored"] == 12
    assert r["modality_lut_applied"] is True and r["modality_lut"] == ["RescaleSlope", "RescaleIntercept"]
    assert r["voi_lut_in_file"] == ["WindowCenter", "WindowWidth"] and r["voi_lut_applied"] is False
    assert r["presentation_intent"] == "FOR PRESENTATION" and r["modality"] == "MG"
    assert (r["laterality"], r["laterality_from"], r["view"], r["view_from"]) == ("R", "tag", "MLO", "tag")
    assert r["magnification_factor"] == 1.8 and r["magnification_view"] is True
    assert (r["patient_orientation"], r["patient_orientation_valid"]) == ("P\\FL", True)
    # MONOCHROME1 after the slope of 2: x' = lo + hi - 2 x with lo, hi = 0, 2 * 4095
    assert r["value_range"] == [8190.0 - 2 * 1465, 8190.0 - 2 * 100]
    assert any("magnification view" in w for w in r["warnings"])
    json.dumps(r)  # JSON-able


def test_raster_record_takes_laterality_and_view_from_the_name(tmp_path: Path) -> None:
    path = tmp_path / "0_L-CC.png"
    Image.fromarray(_pixels()).save(path)
    r = describe_image(path)
    assert (r["format"], r["spacing_source"], r["bits_stored"]) == ("png", "default", 12)
    assert (r["laterality"], r["laterality_from"], r["view"], r["view_from"]) == ("L", "file name", "CC", "file name")
    assert r["voi_lut_in_file"] is None and r["patient_orientation"] is None
    assert any("no pixel spacing recorded" in w for w in r["warnings"])
    r = describe_image(path, pixel_spacing_mm=0.2)
    assert r["pixel_spacing_mm"] == [0.2, 0.2] and r["spacing_source"] == "user" and not r["warnings"]


def test_cli_text_and_json(tmp_path: Path) -> None:
    dcm = _mag_mlo(tmp_path / "a.dcm")
    res = runner.invoke(app, ["info", str(dcm)])
    assert res.exit_code == 0, res.output
    text = res.stdout
    for expected in ("0.07 x 0.065 mm (row, column; from ImagerPixelSpacing)",
                     "MONOCHROME1 (inverted)", "WindowCenter, WindowWidth (never applied)",
                     "R (tag)", "MLO (tag)", "yes, factor 1.8", "P\\FL (copied to a SEG)"):
        assert expected in text, text
    res = runner.invoke(app, ["info", str(dcm), "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert isinstance(records, list) and records[0]["file"] == str(dcm)
    assert info_text(records[0]).splitlines()[0] == str(dcm)


def test_bad_files_get_segments_error_and_the_others_go_on(tmp_path: Path) -> None:
    good = _mag_mlo(tmp_path / "good.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 200)
    with pytest.raises(InputError) as caught:
        read_image(bad)
    res = runner.invoke(app, ["info", str(good), str(bad), "--json"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"error: {caught.value}"]
    records = json.loads(res.stdout)
    assert [("error" in r) for r in records] == [True, False]  # sorted by path: bad, good
    res = runner.invoke(app, ["info", str(bad)])
    assert res.exit_code == 2 and res.stdout == "" and res.stderr == f"error: {caught.value}\n"
    res = runner.invoke(app, ["info", str(tmp_path / "missing.dcm")])
    assert res.exit_code == 2 and res.stderr.startswith("error: no such file or folder")
