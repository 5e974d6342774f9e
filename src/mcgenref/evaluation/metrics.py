"""Evaluation metrics: pixels, microcalcifications (MCs), clusters, FROC, bootstrap CIs.

Conventions: arrays ``[row, col]``; spacing ``(row_spacing, col_spacing)`` in mm; positions in
mm are ``(y_mm, x_mm) = (row * row_spacing, col * col_spacing)``; distances Euclidean in mm.

Pixel level (:func:`pixel_counts`, :func:`pixel_metrics`), counted inside a region (the
breast): ``tp = |P∩T|, fp = |P\\T|, fn = |T\\P|, tn`` the rest. Every ratio whose denominator
is 0 is defined as **1.0** ("vacuously perfect": nothing to find, or nothing claimed), so that
an empty prediction on an empty truth scores 1 everywhere.

Object level: an MC is an 8-connected component (:func:`components`) or an annotated point.
A predicted MC hits a true one when their distance is ``<= tolerance_mm``; matching is
one-to-one (:func:`match_points`).

Cluster level (:func:`cluster_detection`): a labelled cluster circle (centre, radius r) is
*found* when at least one member MC of a detected cluster lies within ``r + tolerance_mm`` of
its centre; a detected cluster with no member inside any enlarged circle is *unmatched*. On a
normal image every detected cluster is a false cluster.

FROC sweep (:func:`image_candidates`, then :func:`object_froc` / :func:`cluster_froc` over
per-image :class:`FrocImage` records; :func:`froc_objects` / :func:`froc_clusters` do both
from probability maps; ``mcgenref evaluate`` uses the same two functions): at each
threshold ``t`` of the sweep the detected MCs are exactly the 8-connected components of
``prob >= t`` inside the region, as ``mcgenref segment`` would report them at that threshold;
each is placed at its peak pixel (argmax of ``prob``, first in raster order on ties) and scored
by its peak probability. This is computed by labelling once per sweep threshold and keeping
each peak pixel with the lowest threshold at which it is still the peak of its own component
(``alive_from``): a peak is a detection for ``alive_from <= t <= peak`` (components only merge
as ``t`` falls), so blobs that break in two at higher thresholds count as two there. At each
threshold, MCs are matched to the truth, or grouped into clusters
(:func:`mcgenref.clusters.group_clusters`) and matched to the cluster circles.

With ``peaks=PeakRule(...)`` (:func:`peak_candidates`) the detections are instead the peaks of
the map (:mod:`mcgenref.detections`: local maxima with non-maximum suppression in mm), scored
by their probability: a peak is a detection at every ``t <= peak``, so lowering the threshold
only adds detections, and object sensitivity cannot fall as the threshold falls. (Clusters
are rebuilt from the detections at each threshold; a new MC can still regroup them, so the
cluster curve is not guaranteed monotone, only free of the loss of MCs.) With components, a
blob that is two detections at a high threshold may be one at a lower one, and a hit is lost.
Object FROC: sensitivity = Σ tp / Σ n_truth against false positives per image = Σ fp / n_images
(and per cm² of breast). Cluster FROC: sensitivity = Σ found / Σ labelled clusters (abnormal
images) against false clusters per **normal** image; unmatched clusters on abnormal images are
kept separately.

Bootstrap (:func:`bootstrap_ci`): images are resampled with replacement ``n`` times
(``numpy.random.default_rng(seed)``), the statistic recomputed, and the percentile interval
``[q(α/2), q(1-α/2)]`` with ``α = 1 - confidence`` returned; NaN replicates are dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from mcgenref.detections import PeakRule, find_peaks
from mcgenref.errors import ConfigError, InputError
from mcgenref.clusters import ClusterRule, group_clusters
from mcgenref.io.predictions import PredictionImage

#: The detections of ``evaluate``'s FROC and operating-point counts: the peaks ``segment``'s
#: MC table lists (its default rule).
PEAK_RULE = PeakRule()
#: 8-connectivity for components.
_STRUCTURE = np.ones((3, 3), dtype=bool)
#: relative slack on distance tolerances so that a distance equal to the tolerance counts
_SLACK = 1e-9
#: FP rates at which sensitivity is summarised (the CPM of the LUNA16 challenge).
CPM_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# ---------------------------------------------------------------------------------------------
# pixels


def pixel_counts(pred: np.ndarray, truth: np.ndarray,
                 region: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of bool masks inside ``region`` (whole image when ``None``).

    ``tp = Σ P·T·R``, ``fp = Σ P·(1-T)·R``, ``fn = Σ (1-P)·T·R``,
    ``tn = Σ R - tp - fp - fn``.
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise InputError(f"prediction {p.shape} and truth {t.shape} differ in shape")
    if region is not None:
        r = np.asarray(region, dtype=bool)
        if r.shape != p.shape:
            raise InputError(f"region {r.shape} and prediction {p.shape} differ in shape")
        p = p & r
        t = t & r
        n = int(r.sum())
    else:
        n = int(p.size)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, fn, n - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    """``num / den``, and 1.0 when ``den == 0`` (vacuously perfect)."""
    return float(num) / float(den) if den else 1.0


def pixel_metrics(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Pixel metrics from counts.

    * dice = 2tp / (2tp + fp + fn); iou = tp / (tp + fp + fn)
    * precision = tp / (tp + fp); recall (sensitivity) = tp / (tp + fn); fnr = 1 - recall
    * specificity = tn / (tn + fp)
    * balanced_accuracy = (recall + specificity) / 2; g_mean = sqrt(recall · specificity)

    0/0: every ratio with a zero denominator is 1.0 (dice = iou = 1 when prediction and truth
    are both empty; precision = 1 with no predicted pixel; recall = 1, fnr = 0 with no true
    pixel; specificity = 1 with no negative pixel).
    """
    recall = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "fnr": 1.0 - recall,
        "specificity": spec,
        "balanced_accuracy": 0.5 * (recall + spec),
        "g_mean": float(np.sqrt(recall * spec)),
    }


PIXEL_METRIC_NAMES = ("dice", "iou", "precision", "recall", "fnr", "specificity",
                      "balanced_accuracy", "g_mean")


# ---------------------------------------------------------------------------------------------
# objects


@dataclass(frozen=True)
class MCObject:
    """One detected MC: centroid ``(row, col)`` px, area, and peak probability (NaN if none)."""

    row: float
    col: float
    area_px: int
    area_mm2: float
    peak_prob: float = float("nan")


def components(mask: np.ndarray, spacing: tuple[float, float], prob: np.ndarray | None = None,
               region: np.ndarray | None = None) -> list[MCObject]:
    """The 8-connected components of ``mask`` (``& region``) as MCs.

    centroid = mean pixel ``(row, col)``; ``area_mm2 = n_px · row_spacing · col_spacing``;
    ``peak_prob = max prob`` over the component when ``prob`` is given.
    """
    m = np.asarray(mask, dtype=bool)
    if region is not None:
        m = m & np.asarray(region, dtype=bool)
    labels, n = ndimage.label(m, structure=_STRUCTURE)
    if n == 0:
        return []
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    area = np.bincount(lab, minlength=n + 1)[1:]
    row = np.bincount(lab, weights=rr, minlength=n + 1)[1:] / area
    col = np.bincount(lab, weights=cc, minlength=n + 1)[1:] / area
    peak = np.full(n, np.nan)
    if prob is not None:
        peak = np.full(n + 1, -np.inf)
        np.maximum.at(peak, lab, np.asarray(prob, dtype=float)[rr, cc])
        peak = peak[1:]
    px_mm2 = float(spacing[0]) * float(spacing[1])
    return [MCObject(float(row[i]), float(col[i]), int(area[i]), float(area[i] * px_mm2),
                     float(peak[i])) for i in range(n)]


@dataclass(frozen=True)
class PointMatch:
    """One-to-one matching result; ``pairs`` ``(M, 2)`` = (pred index, truth index)."""

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray


def _within_graph(pred_mm: np.ndarray, truth_mm: np.ndarray,
                  tolerance_mm: float) -> sparse.csr_matrix:
    """Bipartite graph (pred x truth) of the pairs at distance ``<= tolerance_mm``."""
    n, m = len(pred_mm), len(truth_mm)
    if n == 0 or m == 0:
        return sparse.csr_matrix((n, m), dtype=np.int8)
    lists = cKDTree(pred_mm).query_ball_tree(cKDTree(truth_mm), r=tolerance_mm * (1 + _SLACK))
    rows = np.repeat(np.arange(n), [len(x) for x in lists])
    cols = np.fromiter((j for x in lists for j in x), dtype=np.int64, count=len(rows))
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, m))


def _max_matching(graph: sparse.csr_matrix) -> np.ndarray:
    """For each row, its matched column or -1, in a maximum-cardinality matching."""
    if graph.shape[0] == 0 or graph.shape[1] == 0 or graph.nnz == 0:
        return np.full(graph.shape[0], -1, dtype=np.int64)
    return np.asarray(maximum_bipartite_matching(graph, perm_type="column"), dtype=np.int64)


def match_points(pred_points: ArrayLike, truth_points: ArrayLike, spacing: tuple[float, float],
                 tolerance_mm: float) -> PointMatch:
    """Match predicted to true MC centres (pixels ``(row, col)``) one-to-one within a tolerance.

    A pair may match when ``sqrt((Δrow·row_sp)² + (Δcol·col_sp)²) <= tolerance_mm``. ``tp`` is
    the size of a maximum one-to-one matching of that graph (Hopcroft-Karp): the largest number
    of hits possible (the count a Hungarian assignment with a distance cut-off gives).
    ``fp = n_pred - tp``, ``fn = n_truth - tp``.
    """
    if not tolerance_mm >= 0:
        raise ConfigError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    sp = np.asarray(spacing, dtype=float)
    p = np.asarray(pred_points, dtype=float).reshape(-1, 2) * sp
    t = np.asarray(truth_points, dtype=float).reshape(-1, 2) * sp
    match = _max_matching(_within_graph(p, t, tolerance_mm))
    rows = np.flatnonzero(match >= 0)
    pairs = np.stack([rows, match[rows]], axis=1) if len(rows) else np.zeros((0, 2), dtype=np.int64)
    tp = len(rows)
    return PointMatch(tp=tp, fp=len(p) - tp, fn=len(t) - tp, pairs=pairs)


# ---------------------------------------------------------------------------------------------
# clusters


@dataclass(frozen=True)
class ClusterMatch:
    """``found[i]``: truth circle i found; ``matched[j]``: detected cluster j inside some circle."""

    found: np.ndarray
    matched: np.ndarray

    @property
    def n_found(self) -> int:
        return int(self.found.sum())

    @property
    def n_unmatched(self) -> int:
        return int((~self.matched).sum())


def cluster_detection(cluster_members_mm: Sequence[ArrayLike], truth_circles_mm: ArrayLike,
                      tolerance_mm: float = 2.0) -> ClusterMatch:
    """Which labelled clusters are found, and which detected clusters hit one.

    ``cluster_members_mm``: per detected cluster, its members ``(K, 2)`` ``(y_mm, x_mm)``.
    ``truth_circles_mm``: ``(M, 3)`` rows ``(y_mm, x_mm, radius_mm)``. Circle i is found by
    cluster j when ``min_k |member_k - centre_i| <= radius_i + tolerance_mm``.
    """
    circles = np.asarray(truth_circles_mm, dtype=float).reshape(-1, 3)
    found = np.zeros(len(circles), dtype=bool)
    matched = np.zeros(len(cluster_members_mm), dtype=bool)
    if len(circles) == 0:
        return ClusterMatch(found, matched)
    reach = (circles[:, 2] + tolerance_mm) * (1 + _SLACK)
    for j, members in enumerate(cluster_members_mm):
        m = np.asarray(members, dtype=float).reshape(-1, 2)
        if len(m) == 0:
            continue
        d = np.hypot(m[:, None, 0] - circles[None, :, 0], m[:, None, 1] - circles[None, :, 1])
        inside = (d <= reach[None, :]).any(axis=0)
        found |= inside
        matched[j] = bool(inside.any())
    return ClusterMatch(found, matched)


# ---------------------------------------------------------------------------------------------
# FROC


@dataclass(frozen=True)
class Candidates:
    """Candidate MCs of one image: peak positions ``(row, col)`` px and peak probabilities.

    ``dropped_max``: the highest peak among candidates dropped by ``max_candidates`` (-inf when
    none was dropped); counts are only valid at thresholds ``t > dropped_max``.
    """

    rows: np.ndarray
    cols: np.ndarray
    peaks: np.ndarray
    dropped_max: float = float("-inf")
    alive_from: np.ndarray | None = None  # lowest threshold at which each is its own peak

    def valid(self, thresholds: ArrayLike) -> np.ndarray:
        """Which thresholds see the complete candidate set."""
        return np.asarray(thresholds, dtype=float) > self.dropped_max

    def alive(self, threshold: float) -> np.ndarray:
        """Indices of the candidates that are detections at ``threshold``."""
        keep = self.peaks >= threshold
        if self.alive_from is not None:
            keep &= self.alive_from <= threshold + 1e-12
        return np.flatnonzero(keep)

    def __len__(self) -> int:
        return len(self.peaks)

    def points(self, threshold: float | None = None) -> np.ndarray:
        keep = slice(None) if threshold is None else self.peaks >= threshold
        return np.stack([self.rows[keep], self.cols[keep]], axis=1).astype(float)


def _component_peaks(p: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat index and value of the peak pixel of each 8-connected component of ``m``."""
    labels, n = ndimage.label(m, structure=_STRUCTURE)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat]
    vals = p.ravel()[flat]
    order = np.lexsort((-vals, lab))  # by label, then value descending; stable = raster order
    lab_sorted = lab[order]
    first = order[np.r_[True, lab_sorted[1:] != lab_sorted[:-1]]]
    return flat[first], vals[first]


def image_candidates(prob: np.ndarray, threshold: float | ArrayLike,
                     region: np.ndarray | None = None,
                     max_candidates: int | None = None) -> Candidates:
    """Candidate MCs: peaks of the 8-connected components of ``prob >= t`` (inside ``region``).

    ``threshold``: one value (the components at that threshold), or the sweep's thresholds
    (the union over them of the component peaks, each with ``alive_from``: see the module
    docstring). Position = peak pixel (argmax of ``prob`` in the component, first in raster
    order on ties); score = that peak value. With ``max_candidates``, only the strongest ones
    are kept (a guard against noise-like probability maps) and ``dropped_max`` records the best
    dropped peak: FROC counts at thresholds ``<= dropped_max`` are then NaN (not computed).
    """
    p = np.asarray(prob, dtype=float)
    inside = np.ones(p.shape, bool) if region is None else np.asarray(region, dtype=bool)
    levels = np.sort(np.atleast_1d(np.asarray(threshold, dtype=float)))
    alive_from: dict[int, float] = {}
    peak_value: dict[int, float] = {}
    for t in levels[::-1]:  # high to low: the last level at which a pixel is a peak wins
        idx, vals = _component_peaks(p, (p >= t) & inside)
        for i, v in zip(idx.tolist(), vals.tolist()):
            alive_from[i] = float(t)
            peak_value[i] = v
    if not alive_from:
        e = np.zeros(0)
        return Candidates(e.astype(np.int64), e.astype(np.int64), e, alive_from=e)
    flat = np.fromiter(sorted(alive_from), dtype=np.int64)
    peaks = np.array([peak_value[i] for i in flat.tolist()])
    since = np.array([alive_from[i] for i in flat.tolist()])
    rows, cols = np.unravel_index(flat, p.shape)
    dropped = float("-inf")
    if max_candidates is not None and len(peaks) > max_candidates:
        keep = np.sort(np.argsort(-peaks, kind="stable")[:max_candidates])
        dropped_mask = np.ones(len(peaks), dtype=bool)
        dropped_mask[keep] = False
        dropped = float(peaks[dropped_mask].max())
        rows, cols, peaks, since = rows[keep], cols[keep], peaks[keep], since[keep]
    return Candidates(rows.astype(np.int64), cols.astype(np.int64), peaks, dropped, since)


def peak_candidates(prob: np.ndarray, spacing: tuple[float, float],
                    threshold: float | ArrayLike, region: np.ndarray | None = None,
                    max_candidates: int | None = None,
                    rule: PeakRule = PeakRule()) -> Candidates:
    """Candidate MCs as peaks (:func:`mcgenref.detections.find_peaks`) with ``score >=`` the
    lowest ``threshold``, inside ``region``; ``spacing`` (row, col) mm for the suppression
    radius. A peak is a detection at every threshold up to its score (``alive_from`` is
    ``None``). ``max_candidates`` as in :func:`image_candidates`.
    """
    low = float(np.min(np.asarray(threshold, dtype=float)))
    found = find_peaks(prob, spacing, rule, region, min_score=low)
    rows, cols, peaks = found.rows, found.cols, found.scores
    dropped = float("-inf")
    if max_candidates is not None and len(peaks) > max_candidates:
        # strongest first already: the first max_candidates are kept
        dropped = float(peaks[max_candidates:].max())
        rows, cols, peaks = rows[:max_candidates], cols[:max_candidates], peaks[:max_candidates]
    return Candidates(rows, cols, peaks, dropped)


def object_counts(cands: Candidates, truth_points: ArrayLike, spacing: tuple[float, float],
                  tolerance_mm: float, thresholds: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold ``t``: ``(tp[t], fp[t])`` of the candidates with ``peak >= t``.

    Float arrays; NaN at thresholds the candidate set does not cover (see :class:`Candidates`).
    """
    th = np.asarray(thresholds, dtype=float)
    sp = np.asarray(spacing, dtype=float)
    truth_mm = np.asarray(truth_points, dtype=float).reshape(-1, 2) * sp
    graph = _within_graph(cands.points() * sp, truth_mm, tolerance_mm)
    tp = np.full(len(th), np.nan)
    fp = np.full(len(th), np.nan)
    valid = cands.valid(th)
    for k, t in enumerate(th):
        if not valid[k]:
            continue
        alive = cands.alive(t)
        hits = int((_max_matching(graph[alive]) >= 0).sum()) if len(alive) else 0
        tp[k] = hits
        fp[k] = len(alive) - hits
    return tp, fp


def cluster_counts(cands: Candidates, circles_mm: ArrayLike, spacing: tuple[float, float],
                   thresholds: ArrayLike, rule: ClusterRule = ClusterRule(),
                   tolerance_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per threshold: ``(found, n_clusters, n_unmatched)`` for one image.

    MCs = candidates with ``peak >= t`` grouped by ``rule`` (scores = peaks); ``found`` =
    labelled circles found (:func:`cluster_detection`), ``n_unmatched`` = detected clusters
    inside no enlarged circle (all of them on a normal image, whose ``circles_mm`` is empty).
    Float arrays; NaN at thresholds the candidate set does not cover.
    """
    th = np.asarray(thresholds, dtype=float)
    pts_mm = cands.points() * np.asarray(spacing, dtype=float)
    found = np.full(len(th), np.nan)
    n_cl = np.full(len(th), np.nan)
    unmatched = np.full(len(th), np.nan)
    valid = cands.valid(th)
    for k, t in enumerate(th):
        if not valid[k]:
            continue
        alive = cands.alive(t)
        cl = group_clusters(pts_mm[alive], cands.peaks[alive], rule=rule)
        cm = cluster_detection([pts_mm[alive[list(c.members)]] for c in cl], circles_mm,
                               tolerance_mm)
        found[k], n_cl[k], unmatched[k] = cm.n_found, len(cl), cm.n_unmatched
    return found, n_cl, unmatched


@dataclass
class FrocCurve:
    """Per-image counts over a threshold sweep, and the pooled curve.

    ``hits[i, k]``: true objects (or labelled clusters) found in image i at threshold k;
    ``false[i, k]``: false positives (objects) or false clusters (on normal images only);
    ``n_truth[i]``: true objects / labelled clusters in image i; ``fp_images[i]``: image i
    counts in the FP-rate denominator (objects: every image; clusters: normal images);
    ``area_cm2[i]``: breast area (objects, for FP per cm²). ``unmatched[i, k]`` (clusters):
    detected clusters matching no circle on abnormal images.

    sensitivity[k] = Σ_i hits[i,k] / Σ_i n_truth[i];
    fp_rate[k] = Σ_i false[i,k] / Σ_i fp_images[i]
    (NaN where a denominator is 0).
    """

    thresholds: np.ndarray
    hits: np.ndarray
    false: np.ndarray
    n_truth: np.ndarray
    fp_images: np.ndarray
    area_cm2: np.ndarray | None = None
    unmatched: np.ndarray | None = None
    stratified: bool = False
    stems: list[str] = field(default_factory=list)

    @staticmethod
    def _div(num: np.ndarray, den: float) -> np.ndarray:
        return num / den if den > 0 else np.full(np.shape(num), np.nan)

    @property
    def sensitivity(self) -> np.ndarray:
        return self._div(self.hits.sum(axis=0).astype(float), float(self.n_truth.sum()))

    @property
    def fp_rate(self) -> np.ndarray:
        return self._div(self.false.sum(axis=0).astype(float), float(self.fp_images.sum()))

    @property
    def fp_per_cm2(self) -> np.ndarray | None:
        if self.area_cm2 is None:
            return None
        return self._div(self.false.sum(axis=0).astype(float), float(self.area_cm2.sum()))

    @property
    def unmatched_per_abnormal_image(self) -> np.ndarray | None:
        if self.unmatched is None:
            return None
        abn = ~self.fp_images.astype(bool)
        return self._div(self.unmatched[abn].sum(axis=0).astype(float), float(abn.sum()))

    def bootstrap(self, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(sensitivity, fp_rate)`` arrays ``(n, K)`` over image resamples.

        Objects: all images resampled together. Clusters (``stratified``): the images with
        labelled clusters and the normal images resampled separately (each quantity depends
        on one group only).
        """
        rng = np.random.default_rng(seed)
        n_img = len(self.n_truth)
        k = len(self.thresholds)
        if n_img == 0:
            return np.full((n, k), np.nan), np.full((n, k), np.nan)

        def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = num / den[:, None]
            out[den == 0] = np.nan
            return out

        if not self.stratified:
            idx = rng.integers(0, n_img, size=(n, n_img))
            sens = ratio(self.hits[idx].sum(axis=1).astype(float),
                         self.n_truth[idx].sum(axis=1).astype(float))
            fpr = ratio(self.false[idx].sum(axis=1).astype(float),
                        self.fp_images[idx].sum(axis=1).astype(float))
            return sens, fpr
        pos = np.flatnonzero(self.n_truth > 0)
        neg = np.flatnonzero(self.fp_images.astype(bool))
        sens = np.full((n, k), np.nan)
        fpr = np.full((n, k), np.nan)
        if len(pos):
            ip = pos[rng.integers(0, len(pos), size=(n, len(pos)))]
            sens = ratio(self.hits[ip].sum(axis=1).astype(float),
                         self.n_truth[ip].sum(axis=1).astype(float))
        if len(neg):
            ineg = neg[rng.integers(0, len(neg), size=(n, len(neg)))]
            fpr = self.false[ineg].sum(axis=1).astype(float) / len(neg)
        return sens, fpr


def _sweep_check(thresholds: ArrayLike) -> np.ndarray:
    th = np.unique(np.asarray(thresholds, dtype=float).reshape(-1))
    if len(th) == 0 or not np.all(np.isfinite(th)):
        raise ConfigError("FROC thresholds must be a non-empty list of finite numbers")
    return th


@dataclass(frozen=True)
class FrocImage:
    """One image's part in a FROC sweep: its candidates (:func:`image_candidates` over the
    sweep's thresholds) and its truth.

    ``truth_points``: ``(N, 2)`` (row, col) px, or ``None`` when the image has no MC truth
    (left out of the object curve); ``circles_mm``: ``(M, 3)`` (y_mm, x_mm, radius_mm), or
    ``None`` when the image is neither normal nor has cluster circles (left out of the cluster
    curve); ``area_cm2``: the region's area (FP per cm²); ``rule``: its cluster grouping.
    """

    cands: Candidates
    spacing: tuple[float, float]
    area_cm2: float
    truth_points: np.ndarray | None = None
    circles_mm: np.ndarray | None = None
    is_normal: bool = False
    rule: ClusterRule = ClusterRule()
    stem: str = ""


def object_froc(images: Sequence[FrocImage], thresholds: np.ndarray,
                tolerance_mm: float = 1.0) -> FrocCurve:
    """The object FROC of ``images`` (each with ``truth_points``) over ``thresholds``, the
    sorted, unique sweep their candidates were made with (:func:`object_counts` per image)."""
    n = len(images)
    hits = np.zeros((n, len(thresholds)))
    false = np.zeros((n, len(thresholds)))
    n_truth = np.zeros(n, dtype=np.int64)
    for i, im in enumerate(images):
        if im.truth_points is None:
            raise InputError(f"object_froc: image {im.stem or i} has no truth points")
        pts = np.asarray(im.truth_points, dtype=float).reshape(-1, 2)
        hits[i], false[i] = object_counts(im.cands, pts, im.spacing, tolerance_mm, thresholds)
        n_truth[i] = len(pts)
    return FrocCurve(thresholds, hits, false, n_truth, np.ones(n, dtype=bool),
                     area_cm2=np.array([im.area_cm2 for im in images], dtype=float),
                     stems=[im.stem for im in images])


def cluster_froc(images: Sequence[FrocImage], thresholds: np.ndarray,
                 tolerance_mm: float = 2.0) -> FrocCurve:
    """The cluster FROC of ``images`` (each with ``circles_mm``, empty on normal images) over
    ``thresholds`` (as :func:`object_froc`): :func:`cluster_counts` per image with its own
    rule; clusters on normal images are false clusters, those matching no circle on abnormal
    images go to ``unmatched``. Images resampled stratified in :meth:`FrocCurve.bootstrap`."""
    n = len(images)
    hits = np.zeros((n, len(thresholds)))
    false = np.zeros((n, len(thresholds)))
    unmatched = np.zeros((n, len(thresholds)))
    n_truth = np.zeros(n, dtype=np.int64)
    for i, im in enumerate(images):
        if im.circles_mm is None:
            raise InputError(f"cluster_froc: image {im.stem or i} has no cluster truth")
        circles = np.asarray(im.circles_mm, dtype=float).reshape(-1, 3)
        f, ncl, unm = cluster_counts(im.cands, circles, im.spacing, thresholds, im.rule,
                                     tolerance_mm)
        hits[i] = f
        n_truth[i] = len(circles)
        zero = np.where(np.isnan(ncl), np.nan, 0.0)  # NaN where the sweep is not covered
        false[i] = ncl if im.is_normal else zero
        unmatched[i] = zero if im.is_normal else unm
    return FrocCurve(thresholds, hits, false, n_truth,
                     np.array([im.is_normal for im in images], dtype=bool),
                     unmatched=unmatched, stratified=True, stems=[im.stem for im in images])


def _region_area_cm2(prob: np.ndarray, region: np.ndarray | None,
                     spacing: tuple[float, float]) -> float:
    n_px = prob.size if region is None else int(np.count_nonzero(region))
    return n_px * spacing[0] * spacing[1] / 100.0


def _candidates(prob: np.ndarray, spacing: tuple[float, float], thresholds: np.ndarray,
                region: np.ndarray | None, max_candidates: int | None,
                peaks: PeakRule | None) -> Candidates:
    if peaks is None:
        return image_candidates(prob, thresholds, region, max_candidates)
    return peak_candidates(prob, spacing, thresholds, region, max_candidates, peaks)


def froc_objects(prob_maps: Sequence[np.ndarray], truth_points: Sequence[ArrayLike],
                 thresholds: ArrayLike, spacings: Sequence[tuple[float, float]],
                 regions: Sequence[np.ndarray | None] | None = None,
                 tolerance_mm: float = 1.0, max_candidates: int | None = None,
                 peaks: PeakRule | None = None) -> FrocCurve:
    """Object-level FROC over ``thresholds`` (sorted ascending, duplicates removed).

    Per image: :func:`image_candidates` over the thresholds (``peaks`` is ``None``: the
    components of ``prob >= t``) or :func:`peak_candidates` (``peaks`` given: the peaks, so
    the curve cannot fall), then :func:`object_froc`.
    ``truth_points[i]``: ``(N_i, 2)`` (row, col) px. FP per cm² uses the region area.
    """
    th = _sweep_check(thresholds)
    n = len(prob_maps)
    if not (len(truth_points) == len(spacings) == n) or (regions is not None and len(regions) != n):
        raise InputError("froc_objects: prob_maps, truth_points, spacings, regions differ "
                         "in length")
    images = []
    for i in range(n):
        region = None if regions is None else regions[i]
        images.append(FrocImage(
            _candidates(prob_maps[i], spacings[i], th, region, max_candidates, peaks), spacings[i],
            _region_area_cm2(prob_maps[i], region, spacings[i]),
            truth_points=np.asarray(truth_points[i], dtype=float).reshape(-1, 2)))
    return object_froc(images, th, tolerance_mm)


def froc_clusters(prob_maps: Sequence[np.ndarray], truth_circles_mm: Sequence[ArrayLike],
                  is_normal: Sequence[bool], thresholds: ArrayLike,
                  spacings: Sequence[tuple[float, float]],
                  regions: Sequence[np.ndarray | None] | None = None,
                  rule: ClusterRule = ClusterRule(), tolerance_mm: float = 2.0,
                  max_candidates: int | None = None,
                  peaks: PeakRule | None = None) -> FrocCurve:
    """Cluster-level FROC: labelled-cluster sensitivity vs false clusters per normal image.

    Detections as in :func:`froc_objects` (``peaks``: the peaks of the maps, else the
    components), grouped into (merged) clusters by ``rule``.

    ``truth_circles_mm[i]``: ``(M_i, 3)`` (y_mm, x_mm, radius_mm). Clusters detected on normal
    images are false clusters; on abnormal images those matching no circle go to
    ``unmatched``. Images resampled stratified in :meth:`FrocCurve.bootstrap`.
    """
    th = _sweep_check(thresholds)
    n = len(prob_maps)
    if not (len(truth_circles_mm) == len(is_normal) == len(spacings) == n):
        raise InputError("froc_clusters: inputs differ in length")
    images = []
    for i in range(n):
        region = None if regions is None else regions[i]
        images.append(FrocImage(
            _candidates(prob_maps[i], spacings[i], th, region, max_candidates, peaks), spacings[i],
            _region_area_cm2(prob_maps[i], region, spacings[i]),
            circles_mm=np.asarray(truth_circles_mm[i], dtype=float).reshape(-1, 3),
            is_normal=bool(is_normal[i]), rule=rule))
    return cluster_froc(images, th, tolerance_mm)


def _curve_xy(froc: FrocCurve | tuple[ArrayLike, ArrayLike]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(froc, FrocCurve):
        return froc.fp_rate, froc.sensitivity
    fp, sens = froc
    return np.asarray(fp, dtype=float).reshape(-1), np.asarray(sens, dtype=float).reshape(-1)


def sensitivity_at(froc: FrocCurve | tuple[ArrayLike, ArrayLike], fp_rate: float) -> float:
    """Sensitivity at an FP rate, by linear interpolation along the FROC curve.

    ``froc``: a :class:`FrocCurve` or ``(fp_rates, sensitivities)``. Points with NaN are
    dropped; for each FP rate the best sensitivity is kept and the curve made non-decreasing
    (running maximum); ``(0, 0)`` is added when the curve does not reach FP rate 0. Beyond the
    largest FP rate the sensitivity there is returned. NaN when no point is left.
    """
    fp, sens = _curve_xy(froc)
    ok = np.isfinite(fp) & np.isfinite(sens)
    fp, sens = fp[ok], sens[ok]
    if len(fp) == 0:
        return float("nan")
    xs = np.unique(fp)
    ys = np.array([sens[fp == x].max() for x in xs])
    ys = np.maximum.accumulate(ys)
    if xs[0] > 0:
        xs = np.r_[0.0, xs]
        ys = np.r_[0.0, ys]
    return float(np.interp(fp_rate, xs, ys))


def mean_sensitivity(froc: FrocCurve | tuple[ArrayLike, ArrayLike],
                     fp_rates: Sequence[float] = CPM_FP_RATES) -> float:
    """Mean of :func:`sensitivity_at` over ``fp_rates`` (the CPM at 1/8 ... 8 FP per image)."""
    return float(np.mean([sensitivity_at(froc, f) for f in fp_rates]))


# ---------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_ci(values: ArrayLike | Callable[[np.ndarray], float], n: int = 1000, seed: int = 0,
                 *, n_items: int | None = None, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval over images.

    ``values``: per-image values (the statistic is their mean; NaN values ignored), or a
    function ``f(indices) -> float`` of an array of resampled image indices (then ``n_items``,
    the number of images, is required). Resamples ``n`` times with replacement using
    ``numpy.random.default_rng(seed)`` (deterministic), drops NaN replicates, returns the
    ``(1-confidence)/2`` and ``(1+confidence)/2`` percentiles. ``(nan, nan)`` when nothing is
    left.
    """
    if int(n) < 1:
        raise ConfigError(f"bootstrap n must be >= 1, got {n}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    if callable(values):
        if n_items is None or n_items < 1:
            return (float("nan"), float("nan"))
        stats = np.array([values(rng.integers(0, n_items, size=n_items)) for _ in range(int(n))],
                         dtype=float)
    else:
        v = np.asarray(values, dtype=float).reshape(-1)
        if len(v) == 0:
            return (float("nan"), float("nan"))
        idx = rng.integers(0, len(v), size=(int(n), len(v)))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resample -> NaN, dropped
            stats = np.nanmean(v[idx], axis=1)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    lo, hi = np.percentile(stats, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def predicted_mcs(pred: PredictionImage) -> tuple[np.ndarray, np.ndarray]:
    """The predicted MCs at the operating point: ``(N, 2)`` (row, col) px and their scores.

    With a probability map, the peaks (:data:`PEAK_RULE`) inside ``mask & breast`` (the mask
    is the map at the threshold, so no second threshold is applied to the decoded map): the
    rule of ``segment``'s MC table and of the FROC. Without one, the 8-connected components
    of ``mask & breast`` (centroids, score 1).
    """
    region = pred.mask & pred.breast
    if pred.prob is None:
        mcs = components(pred.mask, pred.spacing, None, pred.breast)
        return (np.array([[o.row, o.col] for o in mcs], dtype=float).reshape(-1, 2),
                np.ones(len(mcs)))
    peaks = find_peaks(pred.prob, pred.spacing, PEAK_RULE, region)
    return (np.stack([peaks.rows, peaks.cols], axis=1).astype(float).reshape(-1, 2),
            np.asarray(peaks.scores, dtype=float))
