"""End-to-end segmentation on small generated images (classical and a tiny random model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.inference.segment import SegmentConfig, Segmenter
from mcgenref.models.checkpoint import save_model
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor

from ..conftest import phantom_mammogram

runner = CliRunner()


def _with_specks(seed: int = 0) -> np.ndarray:
    img = phantom_mammogram((400, 300), seed=seed).astype(np.float32)
    rr, cc = np.mgrid[0:400, 0:300]
    for r, c in [(190, 60), (200, 66), (195, 72), (210, 58)]:  # one cluster of 4 specks
        img += 90 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 0.8**2))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def specks_png(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "case one.png"
    path.parent.mkdir()
    Image.fromarray(_with_specks()).save(path)
    return path


#: what the segmentor trainer records, as far as the segmentor's contract needs it
TINY_EXTRA = {"pixel_spacing_mm": [0.2, 0.2], "threshold_logit": 0.0,
              "intensity": {"low_percentile": 1.0, "high_percentile": 99.0}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = SegmentorConfig(channels=(4, 8, 16))
    folder = tmp_path_factory.mktemp("m") / "tiny"
    save_model(folder, build_segmentor(cfg), cfg, TINY_EXTRA)
    return folder


def test_classical_finds_the_planted_cluster(specks_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(specks_png), "--out", str(out), "--method", "classical",
                              "--pixel-spacing", "0.1"])
    assert res.exit_code == 0, res.output
    stem = "case one"
    for suffix in ("_prob.png", "_mask.png", "_calcifications.csv", "_clusters.json",
                   "_overlay.png", "_breast.png", "_meta.json"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    prob = np.asarray(Image.open(out / f"{stem}_prob.png"))
    mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
    assert prob.dtype == np.uint16 and prob.shape == (400, 300)
    assert set(np.unique(mask)) <= {0, 255}
    rows = list(csv.DictReader(open(out / f"{stem}_calcifications.csv")))
    near = [r for r in rows if abs(float(r["y"]) - 200) < 15 and abs(float(r["x"]) - 65) < 15]
    assert len(near) >= 3
    clusters = json.loads((out / f"{stem}_clusters.json").read_text())["clusters"]
    hit = [c for c in clusters if abs(c["y"] - 200) < 15 and abs(c["x"] - 65) < 15]
    assert hit and hit[0]["count"] >= 3
    d = hit[0]["descriptors"]  # the 4 specks lie within 2.2 mm of each other (rows 190-210)
    assert 0 < d["extent_mm"] <= 2.3 and d["distribution"] in ("grouped", "linear")
    assert d["area_mm2"] > 0 and d["size_mean_mm"] > 0
    assert "not a diagnosis" in json.loads((out / f"{stem}_clusters.json").read_text())[
        "descriptor_rule"]["description"]
    meta = json.loads((out / f"{stem}_meta.json").read_text())
    assert meta["pixel_spacing_mm"] == [0.1, 0.1] and meta["image_size"] == [400, 300]
    # nothing outside the breast
    breast = np.asarray(Image.open(out / f"{stem}_breast.png")) > 0
    assert prob[~breast].max() == 0


def test_rerun_skips_and_other_settings_need_overwrite(specks_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["segment", str(specks_png.parent), "--out", str(out), "--method", "classical"]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "case one_meta.json").stat().st_mtime_ns
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "1 already done" in res.output
    assert (out / "case one_meta.json").stat().st_mtime_ns == before
    res = runner.invoke(app, [*args, "--threshold", "0.7"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, [*args, "--pixel-spacing", "0.2"])  # another spacing: other results
    assert res.exit_code == 2 and "--overwrite" in res.output
    (out / "case one_overlay.png").unlink()  # an incomplete image is simply redone
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "1 segmented" in res.output
    assert runner.invoke(app, [*args, "--threshold", "0.7", "--overwrite"]).exit_code == 0
    assert json.loads((out / "case one_meta.json").read_text())["threshold"] == 0.7


def test_model_path_resamples_to_model_spacing(specks_png: Path, tiny_model: Path) -> None:
    seg = Segmenter(SegmentConfig(window_px=64), model_path=tiny_model, device="cpu",
                    pixel_spacing_mm=0.1)
    result = seg.segment(specks_png)
    assert result.prob.shape == (400, 300)
    det = result.meta.detector
    assert det["model_pixel_spacing_mm"] == [0.2, 0.2]
    assert det["model_grid_shape"] == [200, 150]
    assert 0 < det["windows"] <= det["windows_total"]
    assert result.prob[~result.region].max() == 0.0
    assert result.meta.model["sha256"] == json.loads((tiny_model / "model.json").read_text())["weights"]["sha256"]


def test_no_patient_identifiers_in_outputs(tmp_path: Path) -> None:
    from mcgenref.io.dicom_write import mammogram_dataset

    pixels = _with_specks().astype(np.uint16) * 16
    ds = mammogram_dataset(pixels, (0.1, 0.1), PatientName="SECRET^PERSON", PatientID="ID-987654")
    path = tmp_path / "img.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--method", "classical"])
    assert res.exit_code == 0, res.output
    for f in out.iterdir():
        if f.name.endswith("_seg.dcm"):
            continue  # a DICOM SEG must copy the source's patient module (test_dicom_seg.py)
        data = f.read_bytes()
        assert b"SECRET" not in data and b"987654" not in data, f.name
    assert (out / "img_seg.dcm").is_file()


def test_bad_inputs(tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["segment", str(empty), "--out", str(tmp_path / "o"), "--method", "classical"])
    assert res.exit_code == 2 and res.output.startswith("error:")
    bad_model = tmp_path / "bad_model"
    bad_model.mkdir()
    (bad_model / "model.pt").write_bytes(b"\x80\x04pickle")
    img = tmp_path / "x.png"
    Image.fromarray(_with_specks()).save(img)
    res = runner.invoke(app, ["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(bad_model)])
    assert res.exit_code == 2 and res.output.startswith("error:")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in tiny_model.iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    w = truncated / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    res = runner.invoke(app, ["segment", str(img), "--out", str(tmp_path / "o"), "--model", str(truncated)])
    assert res.exit_code == 2 and res.output.startswith("error:")
    assert not (tmp_path / "o" / "x_meta.json").exists()


def test_segment_then_evaluate_against_masks(specks_png: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    assert runner.invoke(app, ["segment", str(specks_png), "--out", str(pred), "--method",
                               "classical", "--pixel-spacing", "0.1"]).exit_code == 0
    truth = tmp_path / "truth"
    truth.mkdir()
    mask = np.zeros((400, 300), np.uint8)
    for r, c in [(190, 60), (200, 66), (195, 72), (210, 58)]:
        mask[r - 1 : r + 2, c - 1 : c + 2] = 255
    Image.fromarray(mask).save(truth / "case one.png")
    out = tmp_path / "eval"
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out",
                              str(out), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["object"]["n_truth"] == 4 and metrics["object"]["tp"] >= 3
    assert (out / "per_image.csv").is_file() and (out / "froc_objects.png").is_file()
    bad = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out",
                              str(out), "--truth-format", "xml"])
    assert bad.exit_code == 2 and bad.output.startswith("error:")


def test_fill_outside_extends_nearest_breast_value() -> None:
    from mcgenref.inference.segment import fill_outside

    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    region = np.zeros((5, 5), bool)
    region[1:4, 1:4] = True
    filled = fill_outside(image, region)
    assert np.array_equal(filled[region], image[region])
    assert filled[0, 2] == image[1, 2] and filled[4, 4] == image[3, 3] and filled[2, 0] == image[2, 1]


def test_skin_margin_spares_the_chest_wall_edge() -> None:
    from mcgenref.inference.segment import inside_skin_margin

    region = np.zeros((100, 100), bool)
    region[20:80, :60] = True  # touches the left image border (chest wall)
    kept = inside_skin_margin(region, (0.1, 0.1), 1.0)
    assert kept[50, 0] and kept[50, 45] and not kept[50, 55] and not kept[22, 30]
    assert kept.sum() == 40 * 50  # rows 30..69, cols 0..49 (edge within 1 mm removed)
    assert np.array_equal(inside_skin_margin(region, (0.1, 0.1), 0.0), region)


def test_fill_outside_within_a_box_holding_the_region_fills_it_as_the_whole_image() -> None:
    from mcgenref.inference.segment import fill_outside

    rng = np.random.default_rng(0)
    for width in (40, 64):  # 64: the feature transform runs on 8 more (outside) columns
        image = rng.random((50, width)).astype(np.float32)
        yy, xx = np.mgrid[:50, :width]
        region = ((yy - 25) / 14.0) ** 2 + ((xx - 10) / 20.0) ** 2 <= 1
        whole = fill_outside(image, region)
        box = (slice(5, 48), slice(0, 33))
        part = fill_outside(image, region, within=box)
        np.testing.assert_array_equal(part[box], whole[box])
        outside_box = np.ones(region.shape, bool)
        outside_box[box] = False
        np.testing.assert_array_equal(part[outside_box], image[outside_box])


@pytest.mark.parametrize("spacing, margin", [((0.07, 0.07), 2.0), ((0.1, 0.1), 2.0),
                                             ((0.2, 0.2), 5.0), ((0.085, 0.09), 1.3)])
def test_skin_margin_is_the_distance_transform_threshold(spacing, margin) -> None:  # type: ignore[no-untyped-def]
    from scipy import ndimage

    from mcgenref.inference.segment import inside_skin_margin

    shape = (230, 170)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    region = ((yy - 115) / 100.0) ** 2 + (xx / 150.0) ** 2 <= 1
    region[40:45, 60:64] = False  # a hole: an edge inside too
    k = max(1, int(0.5 / max(spacing)))  # the coarse grid of inside_skin_margin
    padded = np.pad(region[::k, ::k], 1, mode="edge")
    dist = ndimage.distance_transform_edt(padded, sampling=(spacing[0] * k, spacing[1] * k))
    keep = np.repeat(np.repeat(dist[1:-1, 1:-1] > margin, k, axis=0), k, axis=1)
    expect = region & keep[: shape[0], : shape[1]]
    np.testing.assert_array_equal(inside_skin_margin(region, spacing, margin), expect)
    own = region.copy()
    assert inside_skin_margin(own, spacing, margin, in_place=True) is own
    np.testing.assert_array_equal(own, expect)


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mcgenref.models.generator import GeneratorConfig, GeneratorContract, build_generator

    torch.manual_seed(0)
    cfg = GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4)
    folder = tmp_path_factory.mktemp("g") / "tiny_generator"
    save_model(folder, build_generator(cfg), cfg,
               {"pixel_spacing_mm": [0.2, 0.2], **GeneratorContract().to_extra()})
    return folder


def test_refine_writes_uncertainty_and_records_the_generator(
    specks_png: Path, tiny_model: Path, tiny_generator: Path, tmp_path: Path
) -> None:
    # candidates down to p = 0.001 so the random tiny model surely gives some windows
    config = tmp_path / "refine.json"
    config.write_text(json.dumps({"tt_gpr": {"seeds": {"min_prob": 0.001}, "max_windows": 2,
                                             "k": 2, "refine_steps": 3}}))
    out = tmp_path / "out"
    args = ["segment", str(specks_png), "--out", str(out), "--model", str(tiny_model),
            "--pixel-spacing", "0.1", "--device", "cpu", "--config", str(config)]
    res = runner.invoke(app, [*args, "--refine", "--generator", str(tiny_generator)])
    assert res.exit_code == 0, res.output
    stem = "case one"
    spread = np.asarray(Image.open(out / f"{stem}_uncertainty.png"))
    breast = np.asarray(Image.open(out / f"{stem}_breast.png")) > 0
    assert spread.dtype == np.uint16 and spread.shape == breast.shape
    assert not spread[~breast].any()
    meta = json.loads((out / f"{stem}_meta.json").read_text())
    assert meta["refine"] is True
    tt = meta["detector"]["tt_gpr"]
    # at min_prob 0.001 the random model's candidates cover the breast, far more than two
    # windows hold: the cap of 2 drops some, and says so
    assert tt["windows"] == 2 and tt["windows_dropped"] > 0
    assert meta["settings"]["generator_sha256"] == tt["generator"]["sha256"]
    # a refined result is not the plain one: a plain rerun needs --overwrite
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "other settings" in res.output
    # a finished refined image with its uncertainty map missing is redone, not skipped
    (out / f"{stem}_uncertainty.png").unlink()
    res = runner.invoke(app, [*args, "--refine", "--generator", str(tiny_generator)])
    assert res.exit_code == 0 and (out / f"{stem}_uncertainty.png").is_file()


def test_refine_is_deterministic(specks_png: Path, tiny_model: Path, tiny_generator: Path) -> None:
    from mcgenref.inference.refine import RefineConfig
    from mcgenref.flow.seeds import SeedConfig

    config = SegmentConfig(refine=True, tt_gpr=RefineConfig(seeds=SeedConfig(min_prob=0.001),
                                                            max_windows=2, k=2, refine_steps=3))
    seg = Segmenter(config, tiny_model, "cpu", 0.1, generator_path=tiny_generator)
    a, b = seg.segment(specks_png), seg.segment(specks_png)
    np.testing.assert_array_equal(a.prob, b.prob)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)


def test_refine_bad_settings(specks_png: Path, tiny_model: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["segment", str(specks_png), "--out", str(tmp_path / "o"),
                              "--method", "classical", "--refine"])
    assert res.exit_code == 2 and "refine" in res.output and "Traceback" not in res.output
    # a segmentor folder is not a generator
    res = runner.invoke(app, ["segment", str(specks_png), "--out", str(tmp_path / "o"),
                              "--model", str(tiny_model), "--refine", "--generator", str(tiny_model),
                              "--device", "cpu"])
    assert res.exit_code == 2 and "not an mcgenref generator" in res.output


@pytest.mark.parametrize(("model_json_key", "generator"), [
    ("extra.intensity", False), ("extra.pixel_spacing_mm", False), ("extra.residual_scale", True)])
def test_a_model_json_missing_a_contract_key_is_one_error_line(
    specks_png: Path, tiny_model: Path, tiny_generator: Path, tmp_path: Path,
    model_json_key: str, generator: bool,
) -> None:
    """The segmentor's and the generator's contracts are read from model.json, never defaulted."""
    source = tiny_generator if generator else tiny_model
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in source.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    meta = json.loads((broken / "model.json").read_text())
    section, key = model_json_key.split(".")
    del meta[section][key]
    (broken / "model.json").write_text(json.dumps(meta))
    args = ["segment", str(specks_png), "--out", str(tmp_path / "o"), "--pixel-spacing", "0.1",
            "--device", "cpu"]
    if generator:
        args += ["--model", str(tiny_model), "--refine", "--generator", str(broken)]
    else:
        args += ["--model", str(broken)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert str(broken / "model.json") in lines[0] and f"'{model_json_key}" in lines[0]
    assert not (tmp_path / "o" / "case one_meta.json").exists()


def test_window_context_is_validated() -> None:
    assert SegmentConfig().window_context_px == 16
    SegmentConfig(window_px=64, window_context_px=32)
    with pytest.raises(ValueError, match="window_context_px"):
        SegmentConfig(window_px=64, window_context_px=33)
    with pytest.raises(ValueError, match="window_context_px"):
        SegmentConfig(window_context_px=-1)
