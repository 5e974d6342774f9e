"""MC detections as peaks of a probability map (non-maximum suppression in mm).

One definition of "a detected MC", shared by ``segment`` (its MC table) and ``evaluate``
(its FROC): a detection is a **peak** of the probability map and its score is the peak's
probability. Whether a pixel is a peak depends on the map alone, never on a threshold, so the
detections at threshold ``t`` are simply the peaks with ``score >= t``: lowering the threshold
only adds detections, and a FROC swept over thresholds cannot lose a hit. (Connected
components of ``prob >= t`` do not have this property: two of them merge into one as ``t``
falls, and one of the two detections disappears.)

The rule (:class:`PeakRule`, :func:`find_peaks`), on a map ``prob[row, col]`` with pixel
spacing ``(row_mm, col_mm)``, searched inside ``region``:

1. A pixel is a *candidate* when it lies in the region and no region pixel within
   ``radius_mm`` of it (Euclidean, in mm) is higher. The neighbourhood always contains the
   8 neighbours, also when ``radius_mm`` is smaller than a pixel, so a candidate is at least
   an 8-connected local maximum.
2. Two candidates within ``radius_mm`` of each other have equal values (each is at least the
   other). An 8-connected set of candidates is a *plateau* (a flat top, e.g. a saturated
   MC): it gives one peak, at its pixel nearest (in mm) to the plateau's centroid, first in
   raster order on ties.
3. Plateau peaks closer than ``radius_mm`` to a peak kept before them (value descending, then
   raster order) are dropped: they can only be equal-valued tops separated by a narrow dip.

Peaks are returned strongest first (score descending, then raster order), so the detections
at a threshold are a prefix of the list.

Why 0.5 mm by default: it is about one MC (0.1-1 mm; suspicious fine MCs are mostly under
0.5 mm), so the noise bumps on one MC's blob, closer than that, give one peak, while two MCs
of a cluster, whose centres are usually farther apart, stay two. It is half the object-level
hit tolerance of ``evaluate`` (1 mm): one MC's blob yields a second peak, a false positive
beside its hit, only where its maxima are more than 0.5 mm apart, i.e. a blob over ~1 mm.
At the shipped model's 0.2 mm it is 2.5 pixels, so more than the 8-neighbourhood; much
smaller (0.3 mm is 1.5 pixels there) would be the bare 8-neighbourhood on film, much larger
(1 mm) would merge MCs of a tight cluster.

Positions: ``(row, col)`` pixels, and mm as ``(y_mm, x_mm) = (row * row_mm, col * col_mm)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import cKDTree

from mcgenref.errors import ConfigError, InputError

#: relative slack so that a distance equal to the radius counts as within it
_SLACK = 1e-9


@dataclass(frozen=True)
class PeakRule:
    """Non-maximum suppression radius (mm) of the peak detector (see the module docstring)."""

    radius_mm: float = 0.5

    def __post_init__(self) -> None:
        if not np.isfinite(self.radius_mm) or self.radius_mm <= 0:
            raise ConfigError(f"peak radius_mm must be > 0, got {self.radius_mm}")


@dataclass(frozen=True)
class Peaks:
    """Peak detections of one map, strongest first.

    ``rows``, ``cols``: int64 ``(N,)`` pixel positions; ``scores``: float64 ``(N,)`` peak
    probabilities, non-increasing; ``spacing_mm``: (row, col) spacing of the map.
    """

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    spacing_mm: tuple[float, float]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def points_px(self) -> np.ndarray:
        """``(N, 2)`` float ``(row, col)``."""
        return np.stack([self.rows, self.cols], axis=1).astype(float).reshape(-1, 2)

    @property
    def points_mm(self) -> np.ndarray:
        """``(N, 2)`` ``(y_mm, x_mm)``."""
        return self.points_px * np.asarray(self.spacing_mm, dtype=float)[None, :]

    def above(self, threshold: float) -> Peaks:
        """The detections at ``threshold``: the peaks with ``score >= threshold`` (a prefix)."""
        n = int(np.count_nonzero(self.scores >= threshold))
        return Peaks(self.rows[:n], self.cols[:n], self.scores[:n], self.spacing_mm)


def _offsets(spacing_mm: tuple[float, float], radius_mm: float) -> np.ndarray:
    """``(K, 2)`` pixel offsets within ``radius_mm`` (plus the 8 neighbours), centre excluded."""
    sr, sc = spacing_mm
    reach_r = max(1, int(np.floor(radius_mm / sr * (1 + _SLACK))))
    reach_c = max(1, int(np.floor(radius_mm / sc * (1 + _SLACK))))
    dr, dc = np.mgrid[-reach_r:reach_r + 1, -reach_c:reach_c + 1]
    inside = np.hypot(dr * sr, dc * sc) <= radius_mm * (1 + _SLACK)
    inside |= (np.abs(dr) <= 1) & (np.abs(dc) <= 1)
    inside[reach_r, reach_c] = False
    return np.stack([dr[inside], dc[inside]], axis=1)


def _check_spacing(spacing_mm: ArrayLike) -> tuple[float, float]:
    s = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"pixel spacing must be two positive numbers, got {spacing_mm}")
    return float(s[0]), float(s[1])


def find_peaks(prob: np.ndarray, spacing_mm: ArrayLike, rule: PeakRule = PeakRule(),
               region: np.ndarray | None = None, min_score: float = float("-inf")) -> Peaks:
    """The peaks of ``prob`` (2-D) inside ``region`` (whole map when ``None``), strongest
    first; only those with ``score >= min_score`` are returned.

    ``min_score`` only shortens the list (the peaks themselves do not depend on it): for any
    ``t >= min_score``, ``find_peaks(..., min_score=m).above(t)`` is the same for every such
    ``m``. Non-finite map values are never peaks and never suppress one.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise InputError(f"probability map must be 2-D, got shape {prob.shape}")
    spacing = _check_spacing(spacing_mm)
    if region is not None:
        r = np.asarray(region, dtype=bool)
        if r.shape != prob.shape:
            raise InputError(f"region {r.shape} and probability map {prob.shape} differ in shape")
        # only the region's bounding box can hold a peak, and pixels outside the region never
        # suppress one: the box gives exactly the peaks of the whole map (a full-field map with
        # a sparse mask is mostly outside it)
        rows, cols = np.flatnonzero(r.any(axis=1)), np.flatnonzero(r.any(axis=0))
        if rows.size == 0:
            e = np.zeros(0, dtype=np.int64)
            return Peaks(e, e.copy(), np.zeros(0), spacing)
        r0, c0 = int(rows[0]), int(cols[0])
        if (rows[-1] - r0 + 1, cols[-1] - c0 + 1) != prob.shape:
            box = (slice(r0, int(rows[-1]) + 1), slice(c0, int(cols[-1]) + 1))
            inner = find_peaks(prob[box], spacing, rule, r[box], min_score)
            return Peaks(inner.rows + r0, inner.cols + c0, inner.scores, spacing)
    p = np.asarray(prob, dtype=np.float64)
    inside = np.isfinite(p)
    if region is not None:
        inside &= r
    work = np.where(inside, p, -np.inf)
    # step 1, cheaply: an 8-neighbourhood maximum first, then the whole disc on those only
    local = inside & (work >= min_score) & (work >= ndimage.maximum_filter(
        work, size=3, mode="constant", cval=-np.inf))
    rr, cc = np.nonzero(local)
    if len(rr):
        padded_reach = _offsets(spacing, rule.radius_mm)
        pad_r, pad_c = int(np.abs(padded_reach[:, 0]).max()), int(np.abs(padded_reach[:, 1]).max())
        padded = np.pad(work, ((pad_r, pad_r), (pad_c, pad_c)), constant_values=-np.inf)
        centre = work[rr, cc]
        keep = np.ones(len(rr), dtype=bool)
        for dr, dc in padded_reach:
            keep &= padded[rr + pad_r + dr, cc + pad_c + dc] <= centre
        rr, cc = rr[keep], cc[keep]
    if not len(rr):
        e = np.zeros(0, dtype=np.int64)
        return Peaks(e, e.copy(), np.zeros(0), spacing)
    rr, cc = _plateau_peaks(rr, cc, p.shape, spacing)
    scores = p[rr, cc]
    order = np.lexsort((cc, rr, -scores))  # score descending, then raster order
    rr, cc, scores = rr[order], cc[order], scores[order]
    rr, cc, scores = _suppress(rr, cc, scores, spacing, rule.radius_mm)
    return Peaks(rr.astype(np.int64), cc.astype(np.int64), scores.astype(np.float64), spacing)


def _plateau_peaks(rr: np.ndarray, cc: np.ndarray, shape: tuple[int, int],
                   spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One pixel per 8-connected set of candidates: the one nearest its centroid (in mm)."""
    cand = np.zeros(shape, dtype=bool)
    cand[rr, cc] = True
    labels, n = ndimage.label(cand, structure=np.ones((3, 3), dtype=bool))
    if n == len(rr):  # no plateau: every candidate is alone
        return rr, cc
    lab = labels[rr, cc]
    count = np.bincount(lab, minlength=n + 1)
    mean_r = np.bincount(lab, weights=rr, minlength=n + 1) / np.maximum(count, 1)
    mean_c = np.bincount(lab, weights=cc, minlength=n + 1) / np.maximum(count, 1)
    dist = np.hypot((rr - mean_r[lab]) * spacing[0], (cc - mean_c[lab]) * spacing[1])
    # np.nonzero gives raster order, so a stable sort by (label, distance) breaks ties by it
    order = np.lexsort((np.round(dist, 9), lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    return rr[first], cc[first]


def _suppress(rr: np.ndarray, cc: np.ndarray, scores: np.ndarray, spacing: tuple[float, float],
              radius_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy suppression in the given order: drop a peak within ``radius_mm`` of a kept one."""
    pts = np.stack([rr * spacing[0], cc * spacing[1]], axis=1)
    pairs = cKDTree(pts).query_pairs(r=radius_mm * (1 + _SLACK), output_type="ndarray")
    if not len(pairs):
        return rr, cc, scores
    neighbours: dict[int, list[int]] = {}
    for i, j in pairs.tolist():
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    dropped = np.zeros(len(rr), dtype=bool)
    for i in range(len(rr)):
        if dropped[i]:
            continue
        for j in neighbours.get(i, ()):
            if j > i:
                dropped[j] = True
    keep = ~dropped
    return rr[keep], cc[keep], scores[keep]
