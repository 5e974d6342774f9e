"""Hand-computed answers for the pixel, object, cluster, FROC and bootstrap metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcgenref.errors import ConfigError
from mcgenref.clusters import ClusterRule, group_clusters, points_px_to_mm
from mcgenref.evaluation.metrics import (
    FrocCurve,
    bootstrap_ci,
    cluster_detection,
    components,
    froc_clusters,
    froc_objects,
    image_candidates,
    match_points,
    mean_sensitivity,
    pixel_counts,
    pixel_metrics,
    sensitivity_at,
)


# -- pixels ----------------------------------------------------------------------------------

def toy() -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((10, 10), bool)
    truth = np.zeros((10, 10), bool)
    pred[0:2, 0:5] = True  # 10 px
    truth[1:3, 0:5] = True  # 10 px, 5 shared (row 1)
    return pred, truth


def test_pixel_counts_and_metrics_toy():
    pred, truth = toy()
    assert pixel_counts(pred, truth) == (5, 5, 5, 85)
    m = pixel_metrics(5, 5, 5, 85)
    assert m["dice"] == pytest.approx(0.5)
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["fnr"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(85 / 90)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 85 / 90) / 2)
    assert m["g_mean"] == pytest.approx(math.sqrt(0.5 * 85 / 90))


def test_pixel_counts_inside_region_only():
    pred, truth = toy()
    region = np.ones((10, 10), bool)
    region[:, 9] = False  # 10 background pixels out
    region[1, 0] = False  # one shared pixel out
    assert pixel_counts(pred, truth, region) == (4, 5, 5, 75)


def test_pixel_metrics_zero_over_zero():
    both_empty = pixel_metrics(0, 0, 0, 100)
    assert all(both_empty[k] == 1.0 for k in ("dice", "iou", "precision", "recall",
                                               "specificity", "balanced_accuracy", "g_mean"))
    assert both_empty["fnr"] == 0.0
    missed = pixel_metrics(0, 0, 7, 93)  # nothing predicted, truth present
    assert (missed["dice"], missed["iou"], missed["precision"], missed["recall"]) == (0, 0, 1, 0)
    assert missed["fnr"] == 1.0
    assert missed["g_mean"] == 0.0
    false_alarm = pixel_metrics(0, 3, 0, 97)  # nothing to find, something predicted
    assert (false_alarm["dice"], false_alarm["precision"], false_alarm["recall"]) == (0, 0, 1)
    assert false_alarm["specificity"] == pytest.approx(97 / 100)
    assert pixel_metrics(0, 0, 0, 0)["specificity"] == 1.0


# -- objects ---------------------------------------------------------------------------------

def test_components_centroid_area_peak():
    mask = np.zeros((8, 8), bool)
    mask[1:3, 1:3] = True  # 4 px, centroid (1.5, 1.5)
    mask[5, 5] = mask[6, 6] = True  # diagonal: one 8-connected component, centroid (5.5, 5.5)
    prob = np.zeros((8, 8))
    prob[2, 2] = 0.7
    prob[6, 6] = 0.9
    objs = sorted(components(mask, (0.1, 0.2), prob), key=lambda o: o.row)
    assert len(objs) == 2
    assert (objs[0].row, objs[0].col, objs[0].area_px) == (1.5, 1.5, 4)
    assert objs[0].area_mm2 == pytest.approx(4 * 0.02)
    assert objs[0].peak_prob == pytest.approx(0.7)
    assert (objs[1].row, objs[1].col, objs[1].area_px) == (5.5, 5.5, 2)
    region = np.ones((8, 8), bool)
    region[4:, :] = False
    assert len(components(mask, (0.1, 0.2), prob, region)) == 1


def test_match_points_tolerance_row_and_col_spacing():
    spacing = (0.1, 0.05)  # row, col in mm
    truth = [[0.0, 0.0]]
    assert match_points([[4.9, 0.0]], truth, spacing, 0.5).tp == 1  # 0.49 mm along rows
    m = match_points([[5.1, 0.0]], truth, spacing, 0.5)  # 0.51 mm
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert match_points([[0.0, 9.8]], truth, spacing, 0.5).tp == 1  # 0.49 mm along columns
    assert match_points([[0.0, 10.2]], truth, spacing, 0.5).tp == 0  # 0.51 mm
    assert match_points([[0.0, 10.0]], truth, spacing, 0.5).tp == 1  # exactly 0.5 mm


def test_match_points_one_to_one_and_maximum():
    spacing = (1.0, 1.0)
    m = match_points([[0, 0], [0, 0.2]], [[0, 0.1]], spacing, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    # p0 reaches both truths, p1 only t0: a greedy nearest-first pairing (p0-t0) gets 1 hit,
    # the maximum matching (p0-t1, p1-t0) gets 2
    m = match_points([[0, 0.0], [0, -0.9]], [[0, -0.1], [0, 0.8]], spacing, 0.85)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 1), (1, 0)]
    m = match_points(np.zeros((0, 2)), [[1, 1]], spacing, 1.0)
    assert (m.tp, m.fp, m.fn) == (0, 0, 1)


# -- clusters --------------------------------------------------------------------------------

def test_group_clusters_hand_placed():
    three = [[0, 0], [0, 4], [3, 0]]  # all within 5 mm of the first
    cl = group_clusters(three, [0.9, 0.5, 0.7])
    assert len(cl) == 1
    assert cl[0].members == (0, 1, 2)
    assert cl[0].score == pytest.approx(0.5)  # the 3rd strongest member
    assert cl[0].centre_mm == pytest.approx((1.0, 4 / 3))
    assert group_clusters(three[:2], [1, 1]) == []
    two_groups = three + [[50, 50], [52, 50], [50, 53], [51, 51]]
    cl = group_clusters(two_groups, np.ones(7))
    assert sorted(c.count for c in cl) == [3, 4]
    # a point 6 mm away from the seed is not a member
    cl = group_clusters([[0, 0], [0, 4], [0, 6], [0, 3]], [4, 3, 2, 1])
    assert [c.members for c in cl] == [(0, 1, 3)]


def test_group_clusters_rule_and_failed_seed_stays_free():
    # the strongest MC (index 0) has only one neighbour within 5 mm; MC 1 then seeds a
    # cluster that includes MC 0
    pts = [[0, 0], [0, 4], [0, 8], [0, 8.5]]
    cl = group_clusters(pts, [1.0, 0.9, 0.5, 0.4])
    assert [c.members for c in cl] == [(0, 1, 2, 3)]
    assert cl[0].score == pytest.approx(0.5)
    cl = group_clusters(pts, [1.0, 0.9, 0.5, 0.4], rule=ClusterRule(min_count=2, radius_mm=1.0))
    assert [c.members for c in cl] == [(2, 3)]
    with pytest.raises(ConfigError):
        ClusterRule(min_count=0)
    with pytest.raises(ConfigError):
        ClusterRule(radius_mm=-1)
    assert points_px_to_mm([[10, 10]], (0.1, 0.2)).tolist() == [[1.0, 2.0]]


def test_cluster_detection_enlarged_circle():
    circles = [[10.0, 10.0, 2.0]]  # y, x, radius (mm)
    inside = np.array([[10.0, 13.9], [30, 30], [31, 31]])  # one member at 3.9 mm <= 2 + 2
    outside = np.array([[10.0, 14.1], [10, 15], [10, 16]])  # nearest at 4.1 mm
    cm = cluster_detection([inside, outside], circles, tolerance_mm=2.0)
    assert cm.found.tolist() == [True]
    assert cm.matched.tolist() == [True, False]
    assert (cm.n_found, cm.n_unmatched) == (1, 1)
    assert cluster_detection([outside], circles, 2.0).n_found == 0
    assert cluster_detection([outside], circles, 2.2).n_found == 1
    cm = cluster_detection([inside], np.zeros((0, 3)), 2.0)
    assert (cm.n_found, cm.n_unmatched) == (0, 1)


# -- FROC ------------------------------------------------------------------------------------

def test_image_candidates_peak_position():
    prob = np.zeros((6, 6))
    prob[1, 1:4] = [0.3, 0.8, 0.8]  # tie: first in raster order wins
    prob[4, 4] = 0.2
    c = image_candidates(prob, 0.1)
    assert len(c) == 2
    order = np.argsort(c.rows)
    assert (c.rows[order].tolist(), c.cols[order].tolist()) == ([1, 4], [2, 4])
    assert c.peaks[order].tolist() == pytest.approx([0.8, 0.2])
    region = np.ones((6, 6), bool)
    region[4:, :] = False
    assert len(image_candidates(prob, 0.1, region)) == 1


def test_froc_objects_known_counts():
    prob = np.zeros((20, 20))
    prob[5, 5] = 0.9  # a true MC
    prob[15, 15] = 0.4  # a false positive
    truth = [[5, 5], [10, 2]]  # the second is never detected
    curve = froc_objects([prob], [truth], [0.3, 0.5, 0.95], [(0.1, 0.1)], tolerance_mm=0.2)
    assert curve.hits[0].tolist() == [1, 1, 0]
    assert curve.false[0].tolist() == [1, 0, 0]
    assert curve.sensitivity.tolist() == [0.5, 0.5, 0.0]
    assert curve.fp_rate.tolist() == [1.0, 0.0, 0.0]
    assert curve.area_cm2[0] == pytest.approx(400 * 0.01 / 100)


def test_candidates_are_the_components_at_each_threshold():
    """At every sweep threshold the detections are exactly the components of prob >= t."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    prob = ndimage.gaussian_filter(rng.random((60, 60)), 1.5)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    th = np.linspace(0.05, 0.95, 19)
    cands = image_candidates(prob, th)
    for t in th:
        _, n = ndimage.label(prob >= t, structure=np.ones((3, 3)))
        assert len(cands.alive(t)) == n


def test_blob_that_splits_counts_twice_above_its_saddle():
    prob = np.zeros((10, 20))
    prob[5, 3:8] = [0.9, 0.7, 0.5, 0.7, 0.8]  # two peaks joined by a 0.5 saddle
    cands = image_candidates(prob, [0.3, 0.6])
    assert len(cands.alive(0.3)) == 1 and len(cands.alive(0.6)) == 2
    curve = froc_objects([prob], [[[5, 3], [5, 7]]], [0.3, 0.6], [(0.1, 0.1)], tolerance_mm=0.15)
    assert curve.hits[0].tolist() == [1, 2]


def test_froc_clusters_known_counts():
    spacing = (0.1, 0.1)
    abn = np.zeros((100, 100))
    for (r, c), v in zip([(50, 50), (50, 60), (60, 50)], [0.9, 0.8, 0.3]):
        abn[r, c] = v
    norm = np.zeros((100, 100))
    for r, c in [(20, 20), (20, 30), (30, 20)]:
        norm[r, c] = 0.6
    circles = [np.array([[5.0, 5.0, 1.0]]), np.zeros((0, 3))]
    curve = froc_clusters([abn, norm], circles, [False, True], [0.2, 0.5, 0.7],
                          [spacing, spacing], tolerance_mm=2.0)
    assert curve.hits.sum(axis=0).tolist() == [1, 0, 0]
    assert curve.false.sum(axis=0).tolist() == [1, 1, 0]
    assert curve.sensitivity.tolist() == [1.0, 0.0, 0.0]
    assert curve.fp_rate.tolist() == [1.0, 1.0, 0.0]
    assert curve.unmatched.sum() == 0


def test_sensitivity_at_interpolation():
    curve = ([0.5, 1.0, 2.0], [0.5, 0.7, 0.9])
    assert sensitivity_at(curve, 0.75) == pytest.approx(0.6)
    assert sensitivity_at(curve, 0.25) == pytest.approx(0.25)  # towards (0, 0)
    assert sensitivity_at(curve, 5.0) == pytest.approx(0.9)
    assert sensitivity_at(([0.0, 1.0, 1.0], [0.2, 0.4, 0.6]), 1.0) == pytest.approx(0.6)
    assert math.isnan(sensitivity_at(([np.nan], [0.5]), 1.0))
    assert mean_sensitivity(([0.0, 100.0], [1.0, 1.0])) == 1.0


# -- bootstrap -------------------------------------------------------------------------------

def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    v = np.random.default_rng(0).normal(0.7, 0.1, size=40)
    lo, hi = bootstrap_ci(v, n=500, seed=3)
    assert lo < v.mean() < hi
    assert (lo, hi) == bootstrap_ci(v, n=500, seed=3)
    assert (lo, hi) != bootstrap_ci(v, n=500, seed=4)
    tp = np.array([3, 4, 5, 2, 6.0])
    n = np.array([5, 5, 6, 4, 7.0])
    lo2, hi2 = bootstrap_ci(lambda i: tp[i].sum() / n[i].sum(), n=300, seed=0, n_items=5)
    assert lo2 <= tp.sum() / n.sum() <= hi2
    assert bootstrap_ci(np.full(5, 0.3), n=50) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in bootstrap_ci([], n=10))
    with pytest.raises(ConfigError):
        bootstrap_ci(v, n=0)


def test_froc_curve_bootstrap_shapes():
    curve = FrocCurve(np.array([0.1, 0.5]), np.array([[1, 0], [2, 1]]), np.array([[3, 1], [1, 0]]),
                      np.array([2, 2]), np.ones(2, bool))
    s, f = curve.bootstrap(20, seed=1)
    assert s.shape == f.shape == (20, 2)
    assert np.all((s >= 0) & (s <= 1))


def test_max_candidates_leaves_low_thresholds_out():
    prob = np.zeros((10, 10))
    prob[1, 1], prob[1, 5], prob[5, 1], prob[5, 5] = 0.9, 0.7, 0.4, 0.2
    c = image_candidates(prob, 0.1, max_candidates=2)
    assert sorted(c.peaks.tolist()) == pytest.approx([0.7, 0.9])
    assert c.dropped_max == pytest.approx(0.4)
    curve = froc_objects([prob], [[[1, 1]]], [0.1, 0.4, 0.5, 0.8], [(1.0, 1.0)],
                         tolerance_mm=0.5, max_candidates=2)
    assert np.isnan(curve.fp_rate[:2]).all()
    assert curve.fp_rate[2:].tolist() == [1.0, 0.0]
    assert curve.sensitivity[2:].tolist() == [1.0, 1.0]
    assert sensitivity_at(curve, 1.0) == 1.0
