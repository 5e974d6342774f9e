"""Peak detections (mcgenref.detections) on hand-made maps whose peaks are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mcgenref.detections import PeakRule, find_peaks
from mcgenref.errors import ConfigError, InputError


def _positions(peaks) -> list[tuple[int, int]]:
    return list(zip(peaks.rows.tolist(), peaks.cols.tolist()))


def test_peaks_strongest_first_with_scores_and_mm() -> None:
    prob = np.zeros((30, 30))
    prob[5, 5] = 0.6
    prob[20, 10] = 0.9
    prob[25, 25] = 0.3
    peaks = find_peaks(prob, (0.1, 0.2), min_score=0.1)
    assert _positions(peaks) == [(20, 10), (5, 5), (25, 25)]
    assert peaks.scores.tolist() == pytest.approx([0.9, 0.6, 0.3])
    assert peaks.points_mm[0].tolist() == pytest.approx([2.0, 2.0])
    assert _positions(peaks.above(0.5)) == [(20, 10), (5, 5)]
    assert len(peaks.above(0.95)) == 0


def test_a_weaker_maximum_within_the_radius_is_suppressed_in_mm() -> None:
    prob = np.zeros((40, 40))
    prob[10, 10] = 0.9
    prob[10, 14] = 0.8  # 4 columns away
    # spacing 0.1 mm: 0.4 mm apart, inside the 0.5 mm radius; 0.2 mm columns: 0.8 mm, outside
    assert _positions(find_peaks(prob, (0.1, 0.1), min_score=0.5)) == [(10, 10)]
    assert _positions(find_peaks(prob, (0.1, 0.2), min_score=0.5)) == [(10, 10), (10, 14)]
    # the radius is a rule field
    assert len(find_peaks(prob, (0.1, 0.1), PeakRule(radius_mm=0.3), min_score=0.5)) == 2
    # exactly at the radius counts as within it
    assert len(find_peaks(prob, (0.125, 0.125), PeakRule(radius_mm=0.5), min_score=0.5)) == 1


def test_the_eight_neighbours_always_count() -> None:
    prob = np.zeros((10, 10))
    prob[4, 4] = 0.9
    prob[5, 5] = 0.8  # diagonal neighbour: 0.28 mm at 0.2 mm, and a radius of 0.01 mm
    peaks = find_peaks(prob, (0.2, 0.2), PeakRule(radius_mm=0.01), min_score=0.5)
    assert _positions(peaks) == [(4, 4)]


def test_a_plateau_is_one_peak_nearest_its_centroid() -> None:
    prob = np.zeros((30, 30))
    prob[10:15, 10:13] = 1.0  # 5 x 3 saturated block, centroid (12, 11)
    prob[20:22, 20:22] = 0.7  # 2 x 2: four pixels equally near the centroid -> raster first
    peaks = find_peaks(prob, (0.1, 0.1), min_score=0.5)
    assert _positions(peaks) == [(12, 11), (20, 20)]
    # a wide plateau (3 mm) is still one peak
    prob[:] = 0
    prob[5:8, 2:28] = 0.8  # centroid (6, 14.5): (6, 14) and (6, 15) tie, raster first
    assert _positions(find_peaks(prob, (0.1, 0.1), min_score=0.5)) == [(6, 14)]


def test_equal_tops_within_the_radius_keep_the_first_in_raster_order() -> None:
    prob = np.zeros((10, 20))
    prob[5, 5] = prob[5, 7] = 0.8  # equal, 0.2 mm apart, separated by a dip
    prob[5, 6] = 0.5
    assert _positions(find_peaks(prob, (0.1, 0.1), min_score=0.1)) == [(5, 5)]


def test_the_region_bounds_the_search_both_ways() -> None:
    prob = np.zeros((20, 20))
    prob[10, 10] = 0.9
    prob[10, 12] = 0.7
    region = np.ones((20, 20), bool)
    region[:, 11:] = False
    assert _positions(find_peaks(prob, (0.1, 0.1), region=region, min_score=0.1)) == [(10, 10)]
    # outside the region a higher pixel does not suppress a peak inside it
    region = ~region
    assert _positions(find_peaks(prob, (0.1, 0.1), region=region, min_score=0.1)) == [(10, 12)]


def test_peaks_do_not_depend_on_the_threshold() -> None:
    """The point of peaks: the detections at t are those at every lower t' with score >= t."""
    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.random((80, 90)), 1.2)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    prob[30:33, 40:44] = 1.0  # and a plateau
    everything = find_peaks(prob, (0.1, 0.15))
    assert np.all(np.diff(everything.scores) <= 0)
    previous: set[tuple[int, int]] = set()
    for t in np.linspace(0.95, 0.05, 19):
        at_t = find_peaks(prob, (0.1, 0.15), min_score=t)
        assert _positions(at_t) == _positions(everything.above(t))
        now = set(_positions(at_t))
        assert previous <= now  # lowering the threshold only adds detections
        previous = now
    # every peak is the highest pixel within 0.5 mm of itself
    for r, c in _positions(everything.above(0.05)):
        dr, dc = np.mgrid[-5:6, -4:5]
        near = np.hypot(dr * 0.1, dc * 0.15) <= 0.5
        rr, cc = r + dr[near], c + dc[near]
        ok = (rr >= 0) & (rr < 80) & (cc >= 0) & (cc < 90)
        assert prob[r, c] >= prob[rr[ok], cc[ok]].max()


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        PeakRule(radius_mm=0.0)
    with pytest.raises(InputError):
        find_peaks(np.zeros((3, 3, 3)), (0.1, 0.1))
    with pytest.raises(InputError):
        find_peaks(np.zeros((3, 3)), (0.1, -1))
    with pytest.raises(InputError):
        find_peaks(np.zeros((3, 3)), (0.1, 0.1), region=np.ones((2, 2), bool))
    nan = np.zeros((5, 5))
    nan[2, 2] = np.nan
    nan[0, 0] = 0.5
    assert _positions(find_peaks(nan, (0.1, 0.1), min_score=0.1)) == [(0, 0)]
    assert len(find_peaks(np.zeros((4, 4)), (0.1, 0.1), min_score=0.5)) == 0


def test_a_sparse_region_gives_the_peaks_of_the_whole_map() -> None:
    """find_peaks works on the region's bounding box only: the same peaks as over the whole map
    with everything outside the region made non-finite (never a peak, never suppressing)."""
    rng = np.random.default_rng(7)
    for trial in range(20):
        prob = ndimage.gaussian_filter(rng.random((90, 70)), 1.0)
        region = np.zeros(prob.shape, dtype=bool)
        r, c = rng.integers(0, 60), rng.integers(0, 40)
        region[r:r + rng.integers(3, 30), c:c + rng.integers(3, 30)] = True
        region &= rng.random(prob.shape) < 0.9
        got = find_peaks(prob, (0.1, 0.12), PeakRule(0.35), region, min_score=0.3)
        want = find_peaks(np.where(region, prob, np.nan), (0.1, 0.12), PeakRule(0.35), None,
                          min_score=0.3)
        assert np.array_equal(got.rows, want.rows) and np.array_equal(got.cols, want.cols), trial
        assert np.array_equal(got.scores, want.scores)
    empty = find_peaks(prob, (0.1, 0.1), PeakRule(), np.zeros(prob.shape, dtype=bool))
    assert len(empty) == 0
