"""ROI evaluation: AUC by hand, the case bootstrap, and evaluate on a tiny MAGIC-5-style folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.evaluation.roi import (
    case_bootstrap_auc,
    case_bootstrap_auc_difference,
    expected_mc_area_mm2,
    roc_auc,
)
from mcgenref.io.predictions import read_prediction

runner = CliRunner()


def test_roc_auc_by_hand() -> None:
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    # pairs (pos, neg): (3,1) win, (3,3) tie, (2,1) win, (2,3) loss -> (2 + 0.5) / 4
    assert roc_auc([3, 2, 1, 3], [1, 1, 0, 0]) == pytest.approx(0.625)
    assert np.isnan(roc_auc([1, 2], [1, 1]))


def test_expected_mc_area_is_the_probability_sum_times_the_pixel_area() -> None:
    prob = np.zeros((6, 6), np.float32)
    prob[1:3, 1:3] = 0.5  # 4 pixels of 0.5 inside the region: 2 pixels' worth of MC
    prob[5, 5] = 1.0  # outside the region: not counted
    region = np.zeros((6, 6), bool)
    region[:4, :4] = True
    assert expected_mc_area_mm2(prob, region, (0.1, 0.2)) == pytest.approx(2 * 0.1 * 0.2)
    assert np.isnan(expected_mc_area_mm2(prob, np.zeros_like(region), (0.1, 0.2)))


def test_case_bootstrap_resamples_cases_not_crops() -> None:
    """Every crop copied three times inside its own case leaves the case bootstrap unchanged
    (a drawn case brings all its copies; the AUC is invariant to equal weights), where a crop
    bootstrap would treat the copies as independent and narrow the interval."""
    rng = np.random.default_rng(1)
    n = 12
    scores = rng.normal(size=n) + np.r_[np.ones(6), np.zeros(6)]
    labels = np.r_[np.ones(6, int), np.zeros(6, int)]
    cases = [f"c{i:02d}" for i in range(n)]
    once = case_bootstrap_auc(scores, labels, cases, n_boot=300, seed=3)
    thrice = case_bootstrap_auc(np.repeat(scores, 3), np.repeat(labels, 3),
                                list(np.repeat(cases, 3)), n_boot=300, seed=3)
    assert thrice == pytest.approx(once)
    # and by hand: the same seeded draws of case indices
    draws = np.random.default_rng(3)
    reps = []
    for _ in range(300):
        idx = draws.integers(0, n, size=n)
        reps.append(roc_auc(scores[idx], labels[idx]))
    reps = np.asarray(reps)
    reps = reps[np.isfinite(reps)]
    assert once == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))


def test_auc_difference_is_paired_over_cases() -> None:
    """A score against itself plus a constant differs by exactly 0 in every resample (a
    paired CI of [0, 0], where two independent CIs would overlap widely); against its
    negation by 2 AUC - 1; and the CI is the percentiles of the same seeded case draws."""
    rng = np.random.default_rng(5)
    n = 16
    labels = np.r_[np.ones(8, int), np.zeros(8, int)]
    a = rng.normal(size=n) + labels
    b = 0.3 * rng.normal(size=n) + labels
    cases = [f"c{i // 2:02d}" for i in range(n)]  # two crops per case
    diff, ci = case_bootstrap_auc_difference(a, a + 5.0, labels, cases, n_boot=200, seed=1)
    assert diff == 0.0 and ci == (0.0, 0.0)
    diff, _ = case_bootstrap_auc_difference(a, -a, labels, cases, n_boot=50, seed=1)
    assert diff == pytest.approx(2 * roc_auc(a, labels) - 1)
    diff, ci = case_bootstrap_auc_difference(a, b, labels, cases, n_boot=300, seed=2)
    assert diff == pytest.approx(roc_auc(a, labels) - roc_auc(b, labels))
    draws = np.random.default_rng(2)
    reps = []
    for _ in range(300):
        k = draws.integers(0, n // 2, size=n // 2)
        idx = np.concatenate([[2 * c, 2 * c + 1] for c in k])
        reps.append(roc_auc(a[idx], labels[idx]) - roc_auc(b[idx], labels[idx]))
    reps = np.asarray(reps)
    reps = reps[np.isfinite(reps)]
    assert ci == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    with pytest.raises(ValueError):
        case_bootstrap_auc_difference(a, b[:-1], labels, cases)


def _crop(seed: int, specks: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 100.0 + rng.normal(0.0, 3.0, (60, 60))
    if specks:
        rr, cc = np.mgrid[0:60, 0:60]
        for r, c in [(20, 22), (26, 30), (34, 25), (40, 38)]:
            img += 80.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.2**2))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def test_evaluate_a_roi_folder_gives_the_known_auc(tmp_path: Path) -> None:
    """Calcification crops with specks, normal ones without: the classical detector separates
    them (AUC 1 for both scores); the trivial statistics are computed from the crops."""
    truth = tmp_path / "truth"
    crops = {}
    for label, specks in (("normal", False), ("calcification", True)):
        (truth / label).mkdir(parents=True)
        for case in range(3):
            for k in range(2):
                name = f"{label[0]}{case:03d}_crop.pgm_{k}.pgm"
                img = _crop(100 * case + k + (50 if specks else 0), specks)
                Image.fromarray(img).save(truth / label / name)
                crops[Path(name).stem] = (img, int(specks))
    pred = tmp_path / "pred"
    res = runner.invoke(app, ["segment", str(truth / "normal"), str(truth / "calcification"),
                              "--out", str(pred), "--roi", "--method", "classical",
                              "--pixel-spacing", "0.085", "--no-progress", "--no-report"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "eval"
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--out",
                              str(out), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "ROI AUC (max_prob) 1.000" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["truth_format"] == "roi"
    roi = metrics["roi"]
    assert roi["n_crops"] == 12 and roi["n_cases"] == 6
    assert roi["auc"]["max_prob"]["auc"] == 1.0 and roi["auc"]["n_mcs"]["auc"] == 1.0
    # mc_area_mm2 is read back from the written maps: sum of <stem>_prob.png in the breast x area
    rows = {r["stem"]: r for r in csv.DictReader((out / "per_image.csv").read_text().splitlines())}
    stem = "c000_crop.pgm_0"
    back = read_prediction(pred, stem)
    assert float(rows[stem]["mc_area_mm2"]) == pytest.approx(
        float(back.prob[back.breast].sum()) * 0.085 * 0.085, rel=1e-5)
    assert set(roi["auc"]) == {"max_prob", "n_mcs", "mc_area_mm2"}
    labels = [lab for _, lab in crops.values()]
    means = [float(img.mean()) for img, _ in crops.values()]
    assert roi["trivial_auc"]["mean"]["auc"] == pytest.approx(roc_auc(means, labels))
    assert (out / "per_image.csv").is_file() and (out / "report.html").is_file()
    assert "ROI AUC" in (out / "report.html").read_text()


def test_a_roi_folder_without_predictions_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t" / "normal").mkdir(parents=True)
    (tmp_path / "t" / "calcification").mkdir()
    Image.fromarray(_crop(0, False)).save(tmp_path / "t" / "normal" / "n001_a.pgm")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "other_meta.json").write_text(json.dumps({"pixel_spacing_mm": [0.1, 0.1]}))
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "p"), "--truth",
                              str(tmp_path / "t"), "--out", str(tmp_path / "e")])
    assert res.exit_code != 0
    assert "error:" in res.output and "matches a crop" in res.output
