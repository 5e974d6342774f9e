"""A FROC on peaks cannot fall where the FROC on components does (hand-made maps)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mcgenref.detections import PeakRule
from mcgenref.clusters import ClusterRule
from mcgenref.evaluation.metrics import (
    froc_clusters,
    froc_objects,
    image_candidates,
    peak_candidates,
)

SPACING = (0.1, 0.1)


def _blob(shape: tuple[int, int], centre: tuple[float, float], peak: float,
          sigma_px: float) -> np.ndarray:
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return peak * np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma_px**2))


def _two_touching_mcs(shape=(40, 60), at=(20, 20)) -> np.ndarray:
    """Two MCs 0.8 mm apart (peaks 0.9 and 0.8) whose blobs join below a saddle near 0.45."""
    a = _blob(shape, at, 0.9, 3.5)
    b = _blob(shape, (at[0], at[1] + 8), 0.8, 3.5)
    return np.maximum(a, b)


def test_the_map_is_what_the_test_needs() -> None:
    prob = _two_touching_mcs()
    saddle = prob[20, 20:29].min()
    assert 0.35 < saddle < 0.55
    _, n_high = ndimage.label(prob >= 0.6, structure=np.ones((3, 3)))
    _, n_low = ndimage.label(prob >= 0.3, structure=np.ones((3, 3)))
    assert (n_high, n_low) == (2, 1)  # components merge as the threshold falls


def test_object_froc_on_peaks_is_monotone_where_components_fall() -> None:
    prob = _two_touching_mcs()
    truth = [[20, 20], [20, 28]]
    th = [0.3, 0.6, 0.85]
    comp = froc_objects([prob], [truth], th, [SPACING], tolerance_mm=0.2)
    peaks = froc_objects([prob], [truth], th, [SPACING], tolerance_mm=0.2, peaks=PeakRule())
    # thresholds ascending: 0.3, 0.6, 0.85
    assert comp.sensitivity.tolist() == [0.5, 1.0, 0.5]  # falls from 0.6 down to 0.3
    assert peaks.sensitivity.tolist() == [1.0, 1.0, 0.5]
    assert comp.fp_rate.tolist() == peaks.fp_rate.tolist() == [0.0, 0.0, 0.0]
    # the candidates: peaks are alive at every threshold up to their score
    cands = peak_candidates(prob, SPACING, th)
    assert len(cands.alive(0.3)) == len(cands.alive(0.6)) == 2 and len(cands.alive(0.85)) == 1
    assert len(image_candidates(prob, th).alive(0.3)) == 1


def test_cluster_froc_on_peaks_keeps_a_cluster_that_components_lose() -> None:
    # three MCs; two of them touch, so at a low threshold the components leave only two MCs
    # and the cluster (3 MCs needed) disappears
    prob = np.maximum(_two_touching_mcs((60, 60), (20, 20)), _blob((60, 60), (40, 24), 0.85, 2.0))
    circles = [np.array([[2.0, 2.4, 2.0]])]  # (y, x, r) mm around the three
    th = [0.3, 0.6]
    rule = ClusterRule()
    comp = froc_clusters([prob], circles, [False], th, [SPACING], rule=rule)
    peaks = froc_clusters([prob], circles, [False], th, [SPACING], rule=rule, peaks=PeakRule())
    assert comp.sensitivity.tolist() == [0.0, 1.0]
    assert peaks.sensitivity.tolist() == [1.0, 1.0]


def test_peak_froc_is_monotone_on_random_maps() -> None:
    rng = np.random.default_rng(7)
    maps, truths = [], []
    for _ in range(4):
        p = ndimage.gaussian_filter(rng.random((70, 70)), 1.5)
        maps.append((p - p.min()) / (p.max() - p.min()))
        truths.append(rng.uniform(0, 70, size=(12, 2)))
    th = np.linspace(0.05, 0.95, 19)
    curve = froc_objects(maps, truths, th, [SPACING] * 4, tolerance_mm=0.4, peaks=PeakRule())
    # thresholds ascending: both hits and false positives only fall as the threshold rises
    assert np.all(np.diff(curve.hits.sum(axis=0)) <= 0)
    assert np.all(np.diff(curve.false.sum(axis=0)) <= 0)
    # and the component curve on the same maps does lose hits somewhere (why peaks exist)
    comp = froc_objects(maps, truths, th, [SPACING] * 4, tolerance_mm=0.4)
    assert np.any(np.diff(comp.hits.sum(axis=0)) > 0)


def test_peak_candidates_max_candidates() -> None:
    prob = np.zeros((20, 20))
    for k, v in enumerate([0.9, 0.7, 0.5, 0.3]):
        prob[2 + 5 * k, 5] = v
    c = peak_candidates(prob, (1.0, 1.0), [0.2, 0.6], max_candidates=2)
    assert c.peaks.tolist() == pytest.approx([0.9, 0.7])
    assert c.dropped_max == pytest.approx(0.5)
    assert c.valid([0.4, 0.6]).tolist() == [False, True]
