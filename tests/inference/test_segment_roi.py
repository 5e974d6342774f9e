"""``segment --roi``: a crop segmented alone equals the same region of the segmented image; tiny
crops are padded; the ROI intensity rule; the outputs and their record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.inference.segment import (
    SegmentConfig,
    Segmenter,
    fit_roi_normalization,
    roi_padding,
)
from mcgenref.io import read_image

runner = CliRunner()

SIZE = 192
#: The crop cut from the whole image, and the margin inside it that is compared.
CROP = (slice(48, 144), slice(48, 144))
MARGIN = 16
SPECKS = [(60, 70), (66, 75), (72, 64), (100, 110), (104, 118), (120, 96), (30, 30), (160, 170)]


def _tissue(seed: int = 0) -> np.ndarray:
    """8-bit 'inside the breast': a uniform-ish background with noise and bright specks."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    img = 120.0 + 6.0 * np.sin(rr / 23.0) * np.cos(cc / 31.0) + rng.normal(0.0, 2.0, (SIZE, SIZE))
    for r, c in SPECKS:
        img += 70.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 0.9**2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def whole_and_crop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("roi")
    img = _tissue()
    whole, crop = folder / "whole.png", folder / "crop.png"
    Image.fromarray(img).save(whole)
    Image.fromarray(img[CROP]).save(crop)
    return whole, crop


@pytest.mark.parametrize("method", ["classical", "model"])
def test_crop_equals_the_region_cut_from_the_segmented_image(
        whole_and_crop: tuple[Path, Path], method: str) -> None:
    """At the model's spacing (0.2 mm: no resampling) both are one reflect-padded window, and a
    pixel of the crop sits at the same place in its window as in the whole image's.

    Compared inside a 16 px (3.2 mm) margin of the crop's border. Classical: the DoG's spot
    and background Gaussians see identical pixels there, the intensity rule's offset (the
    crop's median) cancels in a DoG and a local CNR, and only the tail of the 1.3 mm (6.5 px)
    noise window reaches past the margin into mirrored pixels: every pixel within 2e-3
    (measured 5e-4). Model: the network's receptive field is wider than the margin (beyond it
    the crop sees mirrored tissue where the image has the real one) and the crop's median
    differs from the image's by a grey level; on the steep edge of a saturated speck that
    moves the boundary by a pixel (0.02 -> 0.99 there), so: 99 % of the pixels within 0.02
    (measured 99.8 %), the same MCs, their peak probabilities within 0.01.
    """
    whole, crop = whole_and_crop
    seg = Segmenter(SegmentConfig(roi=True, method=method), device="cpu", pixel_spacing_mm=0.2)
    full = seg.segment(whole)
    part = seg.segment(crop)
    assert full.region.all() and part.region.all()
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    cut = full.prob[CROP][inner]
    diff = np.abs(part.prob[inner] - cut)
    assert cut.max() > 0.5  # the specks inside are found: the comparison is not of zeros
    if method == "classical":
        assert diff.max() <= 2e-3, diff.max()
    else:
        assert (diff <= 0.02).mean() >= 0.99, (diff <= 0.02).mean()

    def inner_mcs(result, offset: int) -> dict[tuple[int, int], float]:
        lo, hi = offset + MARGIN, offset + 96 - MARGIN
        return {(round(m["y"]) - offset, round(m["x"]) - offset): m["peak_prob"]
                for m in result.detections.mcs
                if lo <= m["y"] < hi and lo <= m["x"] < hi}

    found, expected = inner_mcs(part, 0), inner_mcs(full, 48)
    assert found.keys() == expected.keys()
    assert len(found) >= 3
    assert all(abs(found[k] - expected[k]) <= 0.01 for k in found)


def test_tiny_crop_is_padded_and_segmented(tmp_path: Path) -> None:
    """32 x 32 px (the readers' smallest image) at 0.085 mm is 14 px on the model's 0.2 mm
    grid: reflect-padded to one window, segmented, every output back on the crop's grid."""
    img = _tissue(seed=1)[90:122, 100:132]
    path = tmp_path / "in" / "tiny.pgm"
    path.parent.mkdir()
    Image.fromarray(img).save(path)
    out = tmp_path / "out"
    # --model coarse: auto would take the fine (0.1 mm) model at 0.085 mm once it is installed
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--roi", "--model", "coarse",
                              "--pixel-spacing", "0.085", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    for suffix in ("_prob.png", "_mask.png", "_calcifications.csv", "_clusters.json",
                   "_overlay.png", "_breast.png", "_meta.json"):
        assert (out / f"tiny{suffix}").is_file(), suffix
    breast = np.asarray(Image.open(out / "tiny_breast.png"))
    assert breast.shape == (32, 32) and (breast == 255).all()  # the whole crop is searched
    prob = np.asarray(Image.open(out / "tiny_prob.png"))
    assert prob.shape == (32, 32)
    meta = json.loads((out / "tiny_meta.json").read_text())
    assert meta["settings"]["config"]["roi"] is True
    assert meta["normalization"]["rule"].startswith("roi:")
    assert meta["detector"]["model_grid_shape"] == [14, 14]  # 32 px x 0.085 / 0.2, rounded
    (top, bottom), (left, right) = meta["detector"]["roi_padding_px"]
    assert 14 + top + bottom == 256 and 14 + left + right == 256


def test_a_tiny_crop_is_refined_in_its_padded_window(tmp_path: Path) -> None:
    """``--roi --refine``: the 14 px crop (on the model's grid) is smaller than a refinement
    window (64 px), so TT-GPR runs on the reflect-padded grid the segmentor saw, seeded inside
    the crop only (on the bare crop no window fits and nothing would be refined)."""
    img = _tissue(seed=1)[90:122, 100:132]  # holds two bright specks
    path = tmp_path / "in" / "tiny.pgm"
    path.parent.mkdir()
    Image.fromarray(img).save(path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["segment", str(path), "--out", str(out), "--roi", "--model", "coarse",
                              "--refine", "--pixel-spacing", "0.085", "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    tt = json.loads((out / "tiny_meta.json").read_text())["detector"]["tt_gpr"]
    assert tt["window_px"] == 64 and tt["windows"] >= 1 and tt["solves"] >= 1
    for suffix in ("_prob.png", "_uncertainty.png"):
        assert np.asarray(Image.open(out / f"tiny{suffix}")).shape == (32, 32), suffix


def test_without_roi_a_crop_is_refused(tmp_path: Path) -> None:
    """What --roi is for: the breast finder leaves no region inside the skin margin of a crop."""
    path = tmp_path / "crop.png"
    Image.fromarray(_tissue()[:60, :60]).save(path)
    res = runner.invoke(app, ["segment", str(path), "--out", str(tmp_path / "o"), "--method",
                              "classical", "--pixel-spacing", "0.085", "--no-progress"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["segment", str(path), "--out", str(tmp_path / "o"), "--method",
                              "classical", "--roi", "--pixel-spacing", "0.085", "--no-progress"])
    assert res.exit_code == 0, res.output


def test_roi_normalization_centres_the_median_on_the_bit_depth_scale(tmp_path: Path) -> None:
    img = np.full((32, 32), 80, dtype=np.uint8)
    img[5, 5] = 200  # an MC: above the span's top end, not clipped
    path = tmp_path / "c.png"
    Image.fromarray(img).save(path)
    raw, meta = read_image(path, pixel_spacing_mm=0.085)
    norm = fit_roi_normalization(raw, meta)
    v = norm.apply(raw)
    assert v[0, 0] == pytest.approx(0.5)
    assert v[5, 5] == pytest.approx(0.5 + 120 / 255)
    # the same crop 40 grey levels brighter normalises to the same values
    raw2 = raw + 40
    assert np.allclose(fit_roi_normalization(raw2, meta).apply(raw2), v, atol=1e-6)


def test_roi_padding_centres_and_leaves_big_crops_alone() -> None:
    assert roi_padding((9, 9), 256) == ((123, 124), (123, 124))
    assert roi_padding((300, 100), 256) == ((0, 0), (78, 78))
