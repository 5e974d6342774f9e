"""DICOM SEG output of ``mcgenref segment`` for DICOM inputs, read back and checked against
the source (references, geometry, coded segment, algorithm, pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

import mcgenref
from mcgenref.cli import app
from mcgenref.errors import InputError
from mcgenref.io.dicom_seg import seg_bytes
from mcgenref.io.dicom_write import mammogram_dataset

from ..inference.test_segment import _with_specks, tiny_model  # noqa: F401 (fixture)

runner = CliRunner()


def _source(tmp_path: Path, with_frame_of_reference: bool, name: str = "mg") -> tuple[Path, pydicom.Dataset]:
    extra = {"PixelSpacing": ["0.1", "0.1"], "PatientName": "SECRET^PERSON", "PatientID": "ID-987654"}
    if with_frame_of_reference:
        extra["FrameOfReferenceUID"] = pydicom.uid.generate_uid()
    ds = mammogram_dataset(_with_specks().astype(np.uint16) * 16, (0.1, 0.1), **extra)
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


def _check_seg(seg: pydicom.Dataset, src: pydicom.Dataset, mask_png: Path) -> None:
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns) and int(seg.NumberOfFrames) == 1
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPClassUID == src.SOPClassUID
    frame_src = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert frame_src.ReferencedSOPInstanceUID == src.SOPInstanceUID
    if "FrameOfReferenceUID" in src:
        assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    else:
        assert "FrameOfReferenceUID" not in seg
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "microcalcifications"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    cat = segment.SegmentedPropertyCategoryCodeSequence[0]
    typ = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (cat.CodingSchemeDesignator, cat.CodeValue) == ("SCT", "49755003")
    assert (typ.CodingSchemeDesignator, typ.CodeValue) == ("SCT", "18115005")
    assert seg.Manufacturer == "mcgenref" and seg.SoftwareVersions == mcgenref.__version__
    # the SEG copies the source's patient module (as DICOM requires), nothing more
    assert seg.PatientName == src.PatientName and seg.PatientID == src.PatientID
    assert not seg.get("PatientBirthDate")
    mask = np.asarray(Image.open(mask_png)) > 0
    assert np.array_equal(seg.pixel_array.astype(bool), mask)


def _algorithm(seg: pydicom.Dataset) -> tuple[str, str, dict[str, str]]:
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    params = {}
    if "AlgorithmParameters" in algo:
        params = dict(p.split("=", 1) for p in algo.AlgorithmParameters.split(","))
    assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    return algo.AlgorithmName, algo.AlgorithmVersion, params


@pytest.mark.parametrize("with_for", [False, True], ids=["no-frame-of-reference", "frame-of-reference"])
def test_classical_writes_seg_matching_source(tmp_path: Path, with_for: bool) -> None:
    path, src = _source(tmp_path, with_for)
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--method", "classical"])
    assert res.exit_code == 0, res.output
    seg = pydicom.dcmread(out / "mg_seg.dcm")
    _check_seg(seg, src, out / "mg_mask.png")
    assert (np.asarray(Image.open(out / "mg_mask.png")) > 0).any()  # the planted specks
    name, version, params = _algorithm(seg)
    assert (name, version) == ("classical-dog", mcgenref.__version__)
    assert params.get("method") == "classical" and "model_sha256" not in params
    # a rerun neither takes the SEG for an input nor redoes the image; a missing SEG is redone
    res = runner.invoke(app, ["segment", str(path.parent), "--out", str(out), "--method", "classical"])
    assert res.exit_code == 0 and "1 already done" in res.output, res.output
    (out / "mg_seg.dcm").unlink()
    res = runner.invoke(app, ["segment", str(path.parent), "--out", str(out), "--method", "classical"])
    assert res.exit_code == 0 and "1 segmented" in res.output, res.output
    assert (out / "mg_seg.dcm").is_file()


def test_model_seg_records_weights_sha256(tmp_path: Path, tiny_model: Path) -> None:  # noqa: F811
    path, src = _source(tmp_path, False)
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--model", str(tiny_model),
                              "--device", "cpu", "--config", str(_small_windows(tmp_path))])
    assert res.exit_code == 0, res.output
    seg = pydicom.dcmread(out / "mg_seg.dcm")
    _check_seg(seg, src, out / "mg_mask.png")
    sha = json.loads((tiny_model / "model.json").read_text())["weights"]["sha256"]
    name, version, params = _algorithm(seg)
    assert name == json.loads((tiny_model / "model.json").read_text()).get("name", "tiny")
    assert version == mcgenref.__version__
    assert params["model_sha256"] == sha and params["method"] == "model"


def _small_windows(tmp_path: Path) -> Path:
    cfg = tmp_path / "seg.json"
    cfg.write_text(json.dumps({"window_px": 64}))
    return cfg


def test_png_inputs_get_no_seg(tmp_path: Path) -> None:
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(_with_specks()).save(img)
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(img), "--out", str(out), "--method", "classical",
                              "--pixel-spacing", "0.1"])
    assert res.exit_code == 0, res.output
    assert (out / "a_meta.json").is_file() and not list(out.glob("*.dcm"))


def test_seg_bytes_refuses_a_mismatched_mask(tmp_path: Path) -> None:
    path, _ = _source(tmp_path, False)
    with pytest.raises(InputError, match="cannot build DICOM SEG"):
        seg_bytes(path, np.zeros((10, 10), bool), {"name": "x", "version": "1"})


def test_no_seg_switch_and_reruns(tmp_path: Path) -> None:
    path, _ = _source(tmp_path, False)
    out = tmp_path / "out"
    base = ["segment", str(path), "--out", str(out), "--method", "classical"]
    res = runner.invoke(app, [*base, "--no-seg"])
    assert res.exit_code == 0, res.output
    assert (out / "mg_meta.json").is_file() and not (out / "mg_seg.dcm").exists()
    # without the SEG the image is done for --no-seg (not "other settings")...
    res = runner.invoke(app, [*base, "--no-seg"])
    assert res.exit_code == 0 and "1 already done" in res.output, res.output
    # ...and redone, SEG included, when the SEG is wanted
    res = runner.invoke(app, base)
    assert res.exit_code == 0 and "1 segmented" in res.output, res.output
    assert (out / "mg_seg.dcm").is_file()
    res = runner.invoke(app, [*base, "--no-seg"])  # a SEG already there is fine
    assert res.exit_code == 0 and "1 already done" in res.output, res.output
    # redone without the SEG: the SEG of the earlier mask is removed, not left stale
    res = runner.invoke(app, [*base, "--no-seg", "--overwrite"])
    assert res.exit_code == 0 and not (out / "mg_seg.dcm").exists()


def test_write_seg_in_config_file_and_settings(tmp_path: Path) -> None:
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    path, _ = _source(tmp_path, False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"write_seg": False}))
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--method", "classical",
                              "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert not (out / "mg_seg.dcm").exists()
    # an output switch, not a result setting: the settings compared on reruns do not hold it
    on = Segmenter(SegmentConfig(method="classical")).settings()
    off = Segmenter(SegmentConfig(method="classical", write_seg=False)).settings()
    assert on == off and "write_seg" not in on["config"]
