"""End-to-end ``evaluate_predictions`` on tiny fabricated prediction folders (known answers)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import InputError
from mcgenref.evaluation.evaluate import evaluate_predictions, match_stems
from mcgenref.io.predictions import read_prediction


def write_pred(folder: Path, stem: str, prob: np.ndarray, mask: np.ndarray,
               breast: np.ndarray | None, spacing=(0.1, 0.1), threshold=0.5,
               rule: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(prob * 65535).astype(np.uint16)).save(folder / f"{stem}_prob.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}_mask.png")
    if breast is not None:
        Image.fromarray(breast.astype(np.uint8) * 255).save(folder / f"{stem}_breast.png")
    meta = {"pixel_spacing_mm": list(spacing), "image_size": list(prob.shape),
            "threshold": threshold}
    (folder / f"{stem}_meta.json").write_text(json.dumps(meta))
    if rule is not None:
        (folder / f"{stem}_clusters.json").write_text(json.dumps({"clusters": [], "rule": rule}))


def mask_case(tmp_path: Path) -> tuple[Path, Path]:
    """Image a: 2 true MCs, 1 found + 1 FP (+ a blob outside the breast); b: normal + 1 FP."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    truth.mkdir()
    # image a
    t = np.zeros((40, 40), bool)
    t[10:12, 10:12] = True
    t[30:32, 20:22] = True
    prob = np.zeros((40, 40))
    prob[10:12, 10:12] = 0.81  # found at the operating point
    prob[30:32, 20:22] = 0.33  # only found below threshold 0.5
    prob[20, 5] = 0.62  # false positive
    prob[5:7, 37] = 0.93  # outside the breast: ignored
    breast = np.ones((40, 40), bool)
    breast[:, 35:] = False
    write_pred(pred, "a", prob, prob >= 0.5, breast)
    Image.fromarray(t.astype(np.uint8) * 255).save(truth / "a.png")
    # image b (normal)
    prob = np.zeros((40, 40))
    prob[5, 5] = 0.72
    write_pred(pred, "b", prob, prob >= 0.5, np.ones((40, 40), bool))
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(truth / "b_mask.png")
    # a truth image without prediction
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(truth / "c.png")
    return pred, truth


def test_evaluate_masks_end_to_end(tmp_path: Path):
    pred, truth = mask_case(tmp_path)
    out = tmp_path / "out"
    res = evaluate_predictions(pred, truth, None, out, n_thresholds=19, n_bootstrap=200, seed=0)
    assert res["truth_format"] == "masks"
    assert res["stems"] == ["a", "b"]
    assert res["unmatched"]["truth_without_prediction"] == ["c"]

    px = res["pixel"]
    # a: tp 4, fp 1, fn 4, tn 1400 - 9; b: fp 1, tn 1599
    assert px["counts"] == {"tp": 4, "fp": 2, "fn": 4, "tn": 1391 + 1599}
    assert px["pooled"]["dice"] == pytest.approx(8 / 14)
    assert px["pooled"]["iou"] == pytest.approx(4 / 10)
    assert px["pooled"]["precision"] == pytest.approx(4 / 6)
    assert px["pooled"]["recall"] == pytest.approx(0.5)
    assert px["pooled"]["specificity"] == pytest.approx(2990 / 2992)
    assert px["mean_per_image"]["dice"] == pytest.approx((8 / 13 + 0) / 2)
    assert px["mean_per_image"]["recall"] == pytest.approx((0.5 + 1.0) / 2)  # b: 0/0 -> 1
    lo, hi = px["pooled_ci"]["dice"]
    assert lo <= px["pooled"]["dice"] <= hi

    obj = res["object"]
    assert (obj["n_truth"], obj["tp"], obj["fp"], obj["fn"]) == (2, 1, 2, 1)
    assert obj["sensitivity"] == pytest.approx(0.5)
    assert obj["fp_per_image"] == pytest.approx(1.0)
    assert obj["fp_per_cm2"] == pytest.approx(2 / (0.14 + 0.16))
    froc = obj["froc"]
    th = np.array(froc["thresholds"])
    assert len(th) == 19 + 7 and th[-1] == pytest.approx(0.999) and th[0] == pytest.approx(0.05) and 0.5 in th.round(6)
    sens = dict(zip(th.round(2), froc["sensitivity"]))
    fpi = dict(zip(th.round(2), froc["fp_per_image"]))
    assert (sens[0.05], fpi[0.05]) == (1.0, 1.0)
    assert (sens[0.5], fpi[0.5]) == (0.5, 1.0)
    assert (sens[0.65], fpi[0.65]) == (0.5, 0.5)
    assert (sens[0.75], fpi[0.75]) == (0.5, 0.0)
    assert (sens[0.85], fpi[0.85]) == (0.0, 0.0)
    assert froc["operating_points"][0]["threshold"] == pytest.approx(0.5)
    assert froc["sensitivity_at"]["1"]["sensitivity"] == pytest.approx(1.0)

    # the normal image b counts for clusters (no cluster detected: 1 MC only)
    assert res["cluster"]["n_normal_images"] == 1
    assert res["cluster"]["false_clusters_per_normal_image"] == 0.0
    assert res["cluster"]["sensitivity"] is None

    assert json.loads((out / "metrics.json").read_text()) == res
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["stem"] for r in rows] == ["a", "b"]
    assert (rows[0]["px_tp"], rows[0]["mc_tp"], rows[0]["mc_fp"], rows[0]["mc_fn"]) == ("4", "1", "1", "1")
    assert float(rows[0]["dice"]) == pytest.approx(8 / 13)
    assert rows[1]["is_normal"] == "1"
    with Image.open(out / "froc_objects.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert not (out / "froc_clusters.png").exists()  # no labelled cluster to plot
    assert not list(out.glob(".*tmp"))


def test_evaluate_is_deterministic(tmp_path: Path):
    pred, truth = mask_case(tmp_path)
    r1 = evaluate_predictions(pred, truth, "masks", n_thresholds=10, n_bootstrap=100, seed=5)
    r2 = evaluate_predictions(pred, truth, "masks", n_thresholds=10, n_bootstrap=100, seed=5)
    assert r1 == r2


def test_evaluate_mias_clusters(tmp_path: Path):
    pred, truth = tmp_path / "pred", tmp_path / "mias"
    (truth / "images").mkdir(parents=True)
    # circle X=50, Y=40 (from the bottom of a 100-row image -> row 60), radius 5 px = 1 mm
    (truth / "Info.txt").write_text("mdb001 G CALC B 50 40 5\nmdb002 G NORM\nmdb003 G NORM\n"
                                    "mdb004 G CIRC B 10 10 3\n")
    for ref in ("mdb001", "mdb002", "mdb003"):
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(truth / "images" / f"{ref}.png")
    sp = (0.2, 0.2)
    prob = np.zeros((100, 100))
    for (r, c), v in zip([(60, 50), (62, 52), (58, 53)], [0.91, 0.83, 0.71]):
        prob[r, c] = v
    write_pred(pred, "mdb001", prob, prob >= 0.5, None, sp, rule={"min_count": 3, "radius_mm": 5.0})
    prob = np.zeros((100, 100))
    for r, c in [(20, 20), (21, 25), (25, 21)]:
        prob[r, c] = 0.61
    write_pred(pred, "mdb002", prob, prob >= 0.5, np.ones((100, 100), bool), sp)
    write_pred(pred, "mdb004", prob, prob >= 0.5, None, sp)  # CIRC: not in the truth
    res = evaluate_predictions(pred, truth / "Info.txt", None, tmp_path / "out",
                               n_thresholds=19, n_bootstrap=100)
    assert res["truth_format"] == "mias"
    assert res["stems"] == ["mdb001", "mdb002"]
    assert res["unmatched"]["predictions_without_truth"] == ["mdb004"]
    assert res["unmatched"]["truth_without_prediction"] == ["mdb003"]
    assert "pixel" not in res and "object" not in res
    cl = res["cluster"]
    assert (cl["n_truth_clusters"], cl["found"], cl["false_clusters"]) == (1, 1, 1)
    assert cl["sensitivity"] == 1.0
    assert cl["false_clusters_per_normal_image"] == 1.0
    assert cl["unmatched_clusters_abnormal"] == 0
    froc = cl["froc"]
    th = np.array(froc["thresholds"]).round(2)
    sens = dict(zip(th, froc["sensitivity"]))
    fpr = dict(zip(th, froc["false_clusters_per_normal_image"]))
    assert (sens[0.5], fpr[0.5]) == (1.0, 1.0)
    assert (sens[0.65], fpr[0.65]) == (1.0, 0.0)
    assert (sens[0.75], fpr[0.75]) == (0.0, 0.0)  # only 2 MCs left
    assert froc["sensitivity_at"]["0.125"]["sensitivity"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "froc_clusters.png").is_file()
    assert not (tmp_path / "out" / "froc_objects.png").exists()


def test_evaluate_errors(tmp_path: Path):
    pred, truth = mask_case(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(other / "zzz.png")
    with pytest.raises(InputError, match="matches"):
        evaluate_predictions(pred, other)
    with pytest.raises(InputError, match="meta"):
        evaluate_predictions(truth, truth)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(bad / "a.png")
    with pytest.raises(InputError, match="truth mask"):
        evaluate_predictions(pred, bad)
    (pred / "a_meta.json").write_text(json.dumps({"pixel_spacing_mm": [0, 1]}))
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        read_prediction(pred, "a")


def test_match_stems_prefix():
    assert match_stems(["20586908_6c61_MG_R_CC_ANON", "x"], ["20586908", "2058"]) == {
        "20586908_6c61_MG_R_CC_ANON": "20586908"}
    with pytest.raises(InputError):
        match_stems(["a_1", "a_2"], ["a"])


def test_evaluate_froc_is_metrics_froc(tmp_path: Path):
    """evaluate's object FROC is the one of ``metrics.froc_objects`` on the same maps."""
    from mcgenref.evaluation.evaluate import froc_thresholds
    from mcgenref.evaluation.metrics import froc_objects
    from mcgenref.evaluation.truth import mask_centroids

    pred, truth = mask_case(tmp_path)
    res = evaluate_predictions(pred, truth, None, None, n_thresholds=19, n_bootstrap=10)
    maps, points, regions = [], [], []
    for stem, truth_name in (("a", "a.png"), ("b", "b_mask.png")):
        got = read_prediction(pred, stem)
        maps.append(got.prob)
        regions.append(got.breast)
        with Image.open(truth / truth_name) as im:
            points.append(mask_centroids(np.asarray(im) != 0))
    th = froc_thresholds(19, [0.5])
    curve = froc_objects(maps, points, th, [(0.1, 0.1)] * 2, regions, tolerance_mm=1.0)
    froc = res["object"]["froc"]
    assert np.allclose(froc["thresholds"], th)
    assert froc["sensitivity"] == curve.sensitivity.tolist()
    assert froc["fp_per_image"] == curve.fp_rate.tolist()
    assert froc["fp_per_cm2"] == pytest.approx(curve.fp_per_cm2.tolist())
