"""``mcgenref evaluate``: score a prediction folder against ground truth.

Prediction folder (written by ``mcgenref segment``, read back by
:func:`mcgenref.io.predictions.read_prediction`), per image ``<stem>``:
``<stem>_meta.json`` (required: ``pixel_spacing_mm`` [row, col], ``image_size`` [rows, cols],
``threshold``), ``<stem>_mask.png`` (uint8, nonzero = MC; when absent, ``prob >= threshold``),
``<stem>_prob.png`` (uint16 = prob · 65535, or uint8 = prob · 255; needed for FROC curves and
MC scores), ``<stem>_breast.png`` (nonzero = breast; the whole image when absent, noted), and
optionally ``<stem>_clusters.json`` (only its ``"rule"`` is read, so that clusters are
re-grouped with the rule the segmentor used).

Stem matching: a prediction ``<stem>`` matches the truth image of the same name, else the
longest truth stem ``s`` with ``<stem>`` starting with ``s + "_"`` (INbreast XML files are named
by the first field of the image file name). Predictions without truth and truth images without a
prediction are listed in ``metrics.json``; no match at all is an :class:`InputError`.

What is computed (see :mod:`mcgenref.evaluation.metrics` for the formulas and 0/0 rules):

* pixel metrics inside the breast, where the truth has a mask: pooled (counts summed over images)
  and the mean of the per-image values;
* object metrics at the operating point, where the truth has MC points or a mask: predicted MCs
  are the peaks of the map inside ``mask & breast`` at the threshold (:func:`~mcgenref.evaluation.metrics.predicted_mcs`:
  ``segment``'s MC table; components of the mask when there is no map), true MCs the
  annotated points or the truth mask's component centroids; hit within ``tolerance_mm``;
* cluster metrics at the operating point, where the truth has cluster circles or is normal:
  predicted MCs grouped by :func:`mcgenref.clusters.group_clusters` (scores = peak
  probabilities), a circle found within ``cluster_tolerance_mm``;
* FROC curves for objects and clusters by sweeping a threshold over ``<stem>_prob.png``:
  the detections are the peaks of the map (:mod:`mcgenref.detections`, non-maximum
  suppression in mm, the same rule as ``segment``'s MC table), scored by their probability,
  so lowering the threshold only adds detections and the object FROC cannot fall (see
  :mod:`~mcgenref.evaluation.metrics`); thresholds
  ``linspace(0.05, 0.95, n_thresholds)``, then ``HIGH_THRESHOLDS`` (0.96 to 0.999: a
  confident model's operating point lies there), plus the operating thresholds of the
  ``meta`` files;
* bootstrap percentile 95% confidence intervals, resampling images (cluster sensitivity over
  the abnormal images, false clusters over the normal ones).

A ROI folder as truth (``normal/`` and ``calcification/`` crops, MAGIC-5 style) is scored by
:mod:`mcgenref.evaluation.roi` instead: one score per crop, ROC AUC with CIs over cases, beside
the crops' trivial statistics (``metrics.json`` ``"roi"``; ``per_image.csv`` one row per crop).

Outputs (atomic writes) in ``out_dir``: ``metrics.json``, ``per_image.csv``,
``froc_objects.png``, ``froc_clusters.png`` (each plot only when its curve exists).

The steps, each its own function: pair predictions with truth (:class:`Pair`), score each
image at its operating point (:func:`score_image` -> :class:`ImageScore`), aggregate
(:func:`pixel_summary`, :func:`object_summary`, :func:`cluster_summary`), sweep the FROC
(:func:`froc_curves`, with :func:`mcgenref.evaluation.metrics.object_froc` /
:func:`~mcgenref.evaluation.metrics.cluster_froc`, the same code as ``froc_objects`` /
``froc_clusters``), and write (:func:`write_evaluation`).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import ConfigError, InputError
from mcgenref.clusters import ClusterRule, group_clusters
from mcgenref.evaluation.metrics import (
    CPM_FP_RATES,
    PIXEL_METRIC_NAMES,
    FrocCurve,
    FrocImage,
    bootstrap_ci,
    cluster_detection,
    cluster_froc,
    match_points,
    mean_sensitivity,
    object_froc,
    peak_candidates,
    pixel_counts,
    PEAK_RULE,
    pixel_metrics,
    predicted_mcs,
    sensitivity_at,
)
from mcgenref.datasets.magic5 import is_roi_folder
from mcgenref.evaluation.roi import evaluate_roi
from mcgenref.evaluation.truth import GroundTruth, detect_truth_format, read_truth
from mcgenref.io.atomic import check_writable_dir, write_bytes_atomic, write_json_atomic
from mcgenref.io.predictions import PredictionImage, csv_bytes, prediction_stems, read_prediction

#: Default hit distance between a predicted and a true MC centre, in mm.
DEFAULT_TOLERANCE_MM = 1.0
#: Default enlargement of a labelled cluster circle, in mm.
DEFAULT_CLUSTER_TOLERANCE_MM = 2.0
#: Default number of FROC thresholds (evenly spaced over THRESHOLD_RANGE).
DEFAULT_N_THRESHOLDS = 50
#: The range of the FROC threshold sweep (probabilities).
THRESHOLD_RANGE = (0.05, 0.95)
#: Added above THRESHOLD_RANGE: a network trained with a focal loss saturates, and its useful
#: operating points (few false clusters) lie between 0.95 and 1.
HIGH_THRESHOLDS = (0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
CONFIDENCE = 0.95
#: At most this many FROC candidates per image (the strongest); lower thresholds, where more
#: would be alive, are left out of the curve (NaN) for that image's data set.
DEFAULT_MAX_CANDIDATES = 20000



# ---------------------------------------------------------------------------------------------
# reading and pairing


@dataclass(frozen=True)
class Pair:
    """One prediction with its truth, read and checked: the truth drawn on the prediction's
    grid, ``rule`` the cluster grouping for this image, ``notes`` the reading notes."""

    pred: PredictionImage
    truth: GroundTruth
    rule: ClusterRule
    notes: tuple[str, ...]

    @property
    def stem(self) -> str:
        return self.pred.stem

    @property
    def area_cm2(self) -> float:
        sr, sc = self.pred.spacing
        return float(self.pred.breast.sum()) * sr * sc / 100.0

    @property
    def scores_clusters(self) -> bool:
        """Cluster truth: cluster circles, or a normal image."""
        return self.truth.is_normal or bool(self.truth.clusters)

    def circles_mm(self) -> np.ndarray:
        return np.array([c.in_mm(self.pred.spacing) for c in (self.truth.clusters or [])],
                        dtype=float).reshape(-1, 3)


def _read_pair(pred_dir: str | Path, stem: str, gt: GroundTruth,
               cluster_rule: ClusterRule | None) -> Pair:
    pred = read_prediction(pred_dir, stem)
    notes = list(pred.notes)
    own_rule = None
    if pred.rule is not None:
        try:
            own_rule = ClusterRule.from_dict(pred.rule)
        except ConfigError:
            notes.append("clusters.json unreadable: default cluster rule")
    shape = pred.mask.shape
    if gt.mask is None and (gt.points is not None or gt.polygons):
        gt = gt.with_shape(shape)
    elif gt.mask is not None and gt.mask.shape != shape:
        raise InputError(f"{stem}: truth mask is {gt.mask.shape[0]}x{gt.mask.shape[1]} but "
                         f"the prediction is {shape[0]}x{shape[1]}")
    return Pair(pred, gt, cluster_rule or own_rule or ClusterRule(), tuple(notes))


def _pair_stems(pred_dir: str | Path, truth_path: str | Path,
                truths: dict[str, GroundTruth]) -> tuple[dict[str, str], list[str], list[str]]:
    """``(pairs, predictions without truth, truth without prediction)``; no pair at all is an
    InputError."""
    stems = prediction_stems(pred_dir)
    pairs = match_stems(stems, list(truths))
    if not pairs:
        raise InputError(
            f"no prediction in {pred_dir} matches a ground-truth image in {truth_path} "
            f"(predictions: {', '.join(stems[:3])}{'...' if len(stems) > 3 else ''}; truth: "
            f"{', '.join(sorted(truths)[:3])}{'...' if len(truths) > 3 else ''})")
    matched_truth = set(pairs.values())
    pred_only = [s for s in stems if s not in pairs]
    truth_only = sorted(s for s in truths if s not in matched_truth)
    return pairs, pred_only, truth_only


def match_stems(pred_stems: Sequence[str], truth_stems: Sequence[str]) -> dict[str, str]:
    """``{pred_stem: truth_stem}``: exact name, else the longest truth stem ``s`` prefixing
    ``pred_stem`` as ``s + "_"``. A truth image matched by several predictions is an error."""
    truth_set = set(truth_stems)
    by_len = sorted(truth_set, key=len, reverse=True)
    out: dict[str, str] = {}
    for p in pred_stems:
        if p in truth_set:
            out[p] = p
            continue
        for s in by_len:
            if p.startswith(s + "_"):
                out[p] = s
                break
    seen: dict[str, str] = {}
    for p, s in sorted(out.items()):
        if s in seen:
            raise InputError(f"predictions {seen[s]!r} and {p!r} both match truth image {s!r}")
        seen[s] = p
    return out


# ---------------------------------------------------------------------------------------------
# per-image scores at the operating point


@dataclass(frozen=True)
class PixelScore:
    """Pixel counts ``(tp, fp, fn, tn)`` inside the breast and their metrics."""

    counts: tuple[int, int, int, int]
    metrics: dict[str, float]


@dataclass(frozen=True)
class ObjectScore:
    """MCs at the operating point: truth MCs, hits and false positives."""

    n_truth: int
    tp: int
    fp: int


@dataclass(frozen=True)
class ClusterScore:
    """Clusters at the operating point: labelled circles, found ones, detected clusters, and
    the detected clusters matching no circle (abnormal images; all are false on normal ones)."""

    n_truth: int
    found: int
    n_pred: int
    unmatched: int
    is_normal: bool

    @property
    def false(self) -> int:
        """False clusters: every detected cluster of a normal image (0 on abnormal ones)."""
        return self.n_pred if self.is_normal else 0

    @property
    def unmatched_abnormal(self) -> int:
        return 0 if self.is_normal else self.unmatched


@dataclass(frozen=True)
class ImageScore:
    """One image scored at its operating point (a line of ``per_image.csv``); a level is
    ``None`` when the truth cannot score it."""

    stem: str
    truth_stem: str
    is_normal: bool
    breast_area_cm2: float
    threshold: float
    n_pred_mcs: int
    pixel: PixelScore | None
    objects: ObjectScore | None
    clusters: ClusterScore | None
    notes: tuple[str, ...]

    def csv_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"stem": self.stem, "truth_stem": self.truth_stem,
                               "is_normal": self.is_normal,
                               "breast_area_cm2": self.breast_area_cm2,
                               "threshold": self.threshold, "n_pred_mcs": self.n_pred_mcs}
        if self.pixel is not None:
            c = self.pixel.counts
            row.update(px_tp=c[0], px_fp=c[1], px_fn=c[2], px_tn=c[3], **self.pixel.metrics)
        if self.objects is not None:
            o = self.objects
            row.update(n_truth_mcs=o.n_truth, mc_tp=o.tp, mc_fp=o.fp, mc_fn=o.n_truth - o.tp,
                       mc_sensitivity=_ratio(o.tp, o.n_truth),
                       mc_fp_per_cm2=_ratio(o.fp, self.breast_area_cm2))
        if self.clusters is not None:
            k = self.clusters
            row.update(n_truth_clusters=k.n_truth, n_clusters_found=k.found,
                       n_pred_clusters=k.n_pred)
            if k.is_normal:
                row["n_false_clusters"] = k.n_pred
            else:
                row["n_unmatched_clusters"] = k.unmatched
        row["notes"] = "; ".join(self.notes)
        return row


def score_image(pair: Pair, tolerance_mm: float, cluster_tolerance_mm: float) -> ImageScore:
    """Pixels, MCs and clusters of one image at its operating point (``<stem>_mask.png``)."""
    pred, gt = pair.pred, pair.truth
    notes = list(pair.notes) + list(gt.notes)
    pixel = None
    if gt.mask is not None:
        c = pixel_counts(pred.mask, gt.mask, pred.breast)
        pixel = PixelScore(c, pixel_metrics(*c))
        outside = int(np.count_nonzero(gt.mask & ~pred.breast))
        if outside:
            notes.append(f"{outside} truth MC pixel(s) outside the breast mask (ignored)")

    pred_pts, pred_scores = predicted_mcs(pred)

    objects = None
    truth_pts = gt.object_points()
    if truth_pts is not None:
        pm = match_points(pred_pts, truth_pts, pred.spacing, tolerance_mm)
        objects = ObjectScore(len(truth_pts), pm.tp, pm.fp)

    clusters = None
    if pair.scores_clusters:
        circ_mm = pair.circles_mm()
        pts_mm = pred_pts * np.asarray(pred.spacing)
        cl = group_clusters(pts_mm, pred_scores, rule=pair.rule)
        cm = cluster_detection([pts_mm[list(k.members)] for k in cl], circ_mm,
                               cluster_tolerance_mm)
        clusters = ClusterScore(len(circ_mm), cm.n_found, len(cl), cm.n_unmatched, gt.is_normal)
    if pred.prob is None:
        notes.append("no _prob.png: left out of the FROC curves")
    return ImageScore(pred.stem, gt.stem, gt.is_normal, pair.area_cm2, pred.threshold,
                      len(pred_pts), pixel, objects, clusters, tuple(notes))


# ---------------------------------------------------------------------------------------------
# aggregation over images

def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _ci(pair: tuple[float, float]) -> list[float]:
    return [pair[0], pair[1]]


def pixel_summary(scores: Sequence[PixelScore], n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled and mean-per-image pixel metrics with their bootstrap CIs."""
    counts = np.asarray([s.counts for s in scores], dtype=np.int64)
    pooled = pixel_metrics(*counts.sum(axis=0).tolist())
    per = {k: np.array([s.metrics[k] for s in scores]) for k in PIXEL_METRIC_NAMES}
    nimg = len(counts)
    return {
        "n_images": nimg,
        "counts": dict(zip(("tp", "fp", "fn", "tn"), counts.sum(axis=0).tolist())),
        "pooled": pooled,
        "pooled_ci": {k: _ci(bootstrap_ci(
            lambda idx, k=k: pixel_metrics(*counts[idx].sum(axis=0).tolist())[k],
            n_boot, seed, n_items=nimg)) for k in PIXEL_METRIC_NAMES},
        "mean_per_image": {k: float(v.mean()) for k, v in per.items()},
        "mean_per_image_ci": {k: _ci(bootstrap_ci(v, n_boot, seed)) for k, v in per.items()},
    }


def object_summary(scores: Sequence[ObjectScore], areas_cm2: Sequence[float], n_boot: int,
                   seed: int) -> dict[str, Any]:
    """MC sensitivity and false positives (per image, per cm²) with their bootstrap CIs."""
    tp = np.array([s.tp for s in scores], dtype=float)
    fp = np.array([s.fp for s in scores], dtype=float)
    nt = np.array([s.n_truth for s in scores], dtype=float)
    ar = np.array(areas_cm2, dtype=float)
    ni = len(scores)
    return {
        "n_images": ni, "n_truth": int(nt.sum()), "tp": int(tp.sum()), "fp": int(fp.sum()),
        "fn": int(nt.sum() - tp.sum()),
        "sensitivity": _ratio(tp.sum(), nt.sum()),
        "fp_per_image": fp.sum() / ni,
        "fp_per_cm2": _ratio(fp.sum(), ar.sum()),
        "sensitivity_ci": _ci(bootstrap_ci(lambda i: _ratio(tp[i].sum(), nt[i].sum()),
                                           n_boot, seed, n_items=ni)),
        "fp_per_image_ci": _ci(bootstrap_ci(fp, n_boot, seed)),
        "fp_per_cm2_ci": _ci(bootstrap_ci(lambda i: _ratio(fp[i].sum(), ar[i].sum()),
                                          n_boot, seed, n_items=ni)),
    }


def cluster_summary(scores: Sequence[ClusterScore], n_boot: int, seed: int) -> dict[str, Any]:
    """Cluster sensitivity (abnormal images) and false clusters per normal image, with CIs."""
    normal = np.array([s.is_normal for s in scores], dtype=bool)
    found = np.array([s.found for s in scores], dtype=float)
    ncl = np.array([s.n_truth for s in scores], dtype=float)
    false = np.array([s.false for s in scores], dtype=float)
    unm = np.array([s.unmatched_abnormal for s in scores], dtype=float)
    pos = np.flatnonzero(ncl > 0)
    neg = np.flatnonzero(normal)
    abn = np.flatnonzero(~normal)
    return {
        "n_images": len(scores), "n_normal_images": int(len(neg)),
        "n_abnormal_images": int(len(abn)), "n_truth_clusters": int(ncl.sum()),
        "found": int(found.sum()), "false_clusters": int(false.sum()),
        "unmatched_clusters_abnormal": int(unm.sum()),
        "sensitivity": _ratio(found.sum(), ncl.sum()),
        "false_clusters_per_normal_image": _ratio(false.sum(), len(neg)),
        "unmatched_clusters_per_abnormal_image": _ratio(unm.sum(), len(abn)),
        "sensitivity_ci": _ci(bootstrap_ci(
            lambda i: _ratio(found[pos][i].sum(), ncl[pos][i].sum()), n_boot, seed,
            n_items=len(pos))),
        "false_clusters_per_normal_image_ci": _ci(bootstrap_ci(false[neg], n_boot, seed)),
    }


# ---------------------------------------------------------------------------------------------
# FROC


def froc_thresholds(n_thresholds: int, operating: Sequence[float]) -> np.ndarray:
    """The sweep: ``linspace(THRESHOLD_RANGE, n)``, ``HIGH_THRESHOLDS`` and the operating
    thresholds in (0, 1], sorted and unique (rounded so that an operating threshold equal to a
    grid value is not added twice)."""
    grid = np.concatenate([np.linspace(*THRESHOLD_RANGE, int(n_thresholds)), HIGH_THRESHOLDS])
    return np.unique(np.round(np.concatenate([grid, list(operating)]), 9))


@dataclass(frozen=True)
class FrocCurves:
    """The two FROC curves of an evaluation (``None`` when no image can score one)."""

    objects: FrocCurve | None
    clusters: FrocCurve | None
    notes: tuple[str, ...]


def froc_curves(pairs: Sequence[Pair], thresholds: np.ndarray, tolerance_mm: float,
                cluster_tolerance_mm: float, max_candidates: int | None) -> FrocCurves:
    """Object and cluster FROC of the images with a probability map (:mod:`.metrics`)."""
    notes: list[str] = []
    images: list[FrocImage] = []
    for pair in pairs:
        pred = pair.pred
        if pred.prob is None:
            continue
        cands = peak_candidates(pred.prob, pred.spacing, thresholds, pred.breast,
                                max_candidates, PEAK_RULE)
        if np.isfinite(cands.dropped_max):
            notes.append(f"{pred.stem}: more than {max_candidates} FROC candidates; "
                         f"thresholds <= {cands.dropped_max:.4g} left out of the curves")
        images.append(FrocImage(
            cands, pred.spacing, pair.area_cm2, truth_points=pair.truth.object_points(),
            circles_mm=pair.circles_mm() if pair.scores_clusters else None,
            is_normal=pair.truth.is_normal, rule=pair.rule, stem=pred.stem))
    with_points = [im for im in images if im.truth_points is not None]
    with_clusters = [im for im in images if im.circles_mm is not None]
    return FrocCurves(
        object_froc(with_points, thresholds, tolerance_mm) if with_points else None,
        cluster_froc(with_clusters, thresholds, cluster_tolerance_mm) if with_clusters else None,
        tuple(notes))


def _froc_summary(curve: FrocCurve, n_boot: int, seed: int, x_name: str,
                  op_thresholds: Sequence[float]) -> dict[str, Any]:
    sens = curve.sensitivity
    fpr = curve.fp_rate
    bs_sens, bs_fpr = curve.bootstrap(n_boot, seed)
    a = (1 - CONFIDENCE) / 2
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN
        lo = np.nanpercentile(bs_sens, 100 * a, axis=0)
        hi = np.nanpercentile(bs_sens, 100 * (1 - a), axis=0)
    at: dict[str, Any] = {}
    for f in CPM_FP_RATES:
        reps = [sensitivity_at((bs_fpr[b], bs_sens[b]), f) for b in range(len(bs_sens))]
        reps_arr = np.asarray(reps, dtype=float)
        reps_arr = reps_arr[np.isfinite(reps_arr)]
        ci = (np.percentile(reps_arr, [100 * a, 100 * (1 - a)]).tolist() if len(reps_arr)
              else [float("nan")] * 2)
        at[f"{f:g}"] = {"sensitivity": sensitivity_at(curve, f), "ci": ci}
    out: dict[str, Any] = {
        "thresholds": curve.thresholds,
        "sensitivity": sens,
        "sensitivity_ci_low": lo,
        "sensitivity_ci_high": hi,
        x_name: fpr,
        "sensitivity_at": at,
        "mean_sensitivity_1_8_to_8": mean_sensitivity(curve),
    }
    if curve.fp_per_cm2 is not None:
        out["fp_per_cm2"] = curve.fp_per_cm2
    if curve.unmatched is not None:
        out["unmatched_clusters_per_abnormal_image"] = curve.unmatched_per_abnormal_image
    ops = []
    for t in op_thresholds:
        k = int(np.argmin(np.abs(curve.thresholds - t)))
        ops.append({"threshold": float(curve.thresholds[k]), "sensitivity": sens[k],
                    x_name: fpr[k]})
    out["operating_points"] = ops
    return out


def _plot_froc(path: Path, summary: dict[str, Any], x_name: str, xlabel: str, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(summary[x_name], dtype=float)
    y = np.asarray(summary["sensitivity"], dtype=float)
    lo = np.asarray(summary["sensitivity_ci_low"], dtype=float)
    hi = np.asarray(summary["sensitivity_ci_high"], dtype=float)
    # the FROC path: from the highest threshold (fewest detections) to the lowest
    order = np.argsort(-np.asarray(summary["thresholds"], dtype=float), kind="stable")
    fig = Figure(figsize=(5.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(lo[order]) & np.isfinite(hi[order]) & np.isfinite(x[order])
    if ok.any():
        ax.fill_between(x[order][ok], lo[order][ok], hi[order][ok], alpha=0.25, color="C0",
                        linewidth=0, label=f"{int(CONFIDENCE * 100)}% bootstrap CI")
    ax.plot(x[order], y[order], "-o", color="C0", markersize=2.5, label="FROC")
    for op in summary.get("operating_points", []):
        if op.get(x_name) is not None and np.isfinite(op[x_name]):
            ax.plot([op[x_name]], [op["sensitivity"]], "s", color="C3", markersize=6,
                    label=f"threshold {op['threshold']:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# the evaluation


def _check_settings(tolerance_mm: float, cluster_tolerance_mm: float, n_thresholds: int,
                    n_bootstrap: int) -> None:
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ConfigError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    if not (math.isfinite(cluster_tolerance_mm) and cluster_tolerance_mm >= 0):
        raise ConfigError(f"cluster_tolerance_mm must be >= 0, got {cluster_tolerance_mm}")
    if int(n_thresholds) < 2:
        raise ConfigError(f"n_thresholds must be >= 2, got {n_thresholds}")
    if int(n_bootstrap) < 1:
        raise ConfigError(f"n_bootstrap must be >= 1, got {n_bootstrap}")


def evaluate_predictions(pred_dir: str | Path, truth_path: str | Path,
                         truth_format: str | None = None, out_dir: str | Path | None = None, *,
                         tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                         cluster_tolerance_mm: float = DEFAULT_CLUSTER_TOLERANCE_MM,
                         cluster_rule: ClusterRule | None = None,
                         n_thresholds: int = DEFAULT_N_THRESHOLDS, n_bootstrap: int = 1000,
                         seed: int = 0,
                         max_candidates: int | None = DEFAULT_MAX_CANDIDATES) -> dict[str, Any]:
    """Evaluate a ``mcgenref segment`` output folder; returns the ``metrics.json`` content.

    ``truth_format``: ``"masks"``, ``"inbreast"``, ``"mias"`` or ``"roi"`` (detected when
    ``None``; a folder with ``normal/`` and ``calcification/`` subfolders is ``"roi"``, scored
    by :func:`mcgenref.evaluation.roi.evaluate_roi`: ROI AUC, no pixel/object/cluster metric).
    ``cluster_rule``: grouping rule; ``None`` = the rule in each ``<stem>_clusters.json``, else
    :class:`ClusterRule` defaults. Files are written to ``out_dir`` when it is given
    (:func:`write_evaluation`). NaN values (undefined: e.g. no labelled cluster) become
    ``null`` in the result.

    Steps: read and pair (:func:`_read_pair`), score each image at its operating point
    (:func:`score_image`), aggregate (:func:`pixel_summary`, :func:`object_summary`,
    :func:`cluster_summary`), sweep (:func:`froc_curves`), write.
    """
    _check_settings(tolerance_mm, cluster_tolerance_mm, n_thresholds, n_bootstrap)
    fmt = truth_format.lower() if truth_format else None
    if fmt == "roi" or (fmt is None and is_roi_folder(truth_path)):
        # crops with and without an MC cluster: one score per crop, not per MC or cluster
        return evaluate_roi(pred_dir, truth_path, out_dir, n_bootstrap=n_bootstrap, seed=seed)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        check_writable_dir(out_path)

    truths = read_truth(truth_path, truth_format)
    fmt = truth_format.lower() if truth_format else detect_truth_format(truth_path)
    stem_pairs, pred_only, truth_only = _pair_stems(pred_dir, truth_path, truths)
    pairs = [_read_pair(pred_dir, stem, truths[stem_pairs[stem]], cluster_rule)
             for stem in sorted(stem_pairs)]
    scores = [score_image(p, tolerance_mm, cluster_tolerance_mm) for p in pairs]
    n_boot = int(n_bootstrap)

    result: dict[str, Any] = {
        "n_images": len(scores),
        "truth_format": fmt,
        "settings": {
            "pred_dir": str(pred_dir), "truth": str(truth_path),
            "tolerance_mm": tolerance_mm, "cluster_tolerance_mm": cluster_tolerance_mm,
            "cluster_rule": (cluster_rule.to_dict() if cluster_rule else
                             "per image from <stem>_clusters.json, else "
                             f"{ClusterRule().to_dict()}"),
            "n_thresholds": int(n_thresholds), "n_bootstrap": n_boot, "seed": seed,
            "max_candidates": max_candidates,
            "confidence": CONFIDENCE,
            "conventions": ("pixel ratios with a zero denominator are 1.0; object hit = centre "
                            "distance <= tolerance_mm, one-to-one; cluster found when a member "
                            "MC lies within radius + cluster_tolerance_mm of the circle centre; "
                            "FROC detections at threshold t = the peaks of prob (non-maximum "
                            f"suppression within {PEAK_RULE.radius_mm} mm) scoring >= t"),
        },
        "stems": sorted(stem_pairs),
        "unmatched": {"predictions_without_truth": pred_only,
                      "truth_without_prediction": truth_only},
    }
    px = [s.pixel for s in scores if s.pixel is not None]
    obj = [s for s in scores if s.objects is not None]
    cl = [s.clusters for s in scores if s.clusters is not None]
    if px:
        result["pixel"] = pixel_summary(px, n_boot, seed)
    if obj:
        result["object"] = object_summary([s.objects for s in obj],  # type: ignore[misc]
                                          [s.breast_area_cm2 for s in obj], n_boot, seed)
    if cl:
        result["cluster"] = cluster_summary(cl, n_boot, seed)

    ops = sorted(t for t in {round(p.pred.threshold, 6) for p in pairs} if 0 < t <= 1)
    curves = froc_curves(pairs, froc_thresholds(n_thresholds, ops), tolerance_mm,
                         cluster_tolerance_mm, max_candidates)
    notes = list(curves.notes)
    if curves.objects is not None:
        result.setdefault("object", {})["froc"] = _froc_summary(
            curves.objects, n_boot, seed, "fp_per_image", ops)
    if curves.clusters is not None:
        result.setdefault("cluster", {})["froc"] = _froc_summary(
            curves.clusters, n_boot, seed, "false_clusters_per_normal_image", ops)
        if curves.clusters.n_truth.sum() == 0:
            notes.append("no labelled cluster among the images: no cluster FROC plot")
    if not (px or obj or cl):
        notes.append("the truth gives no mask, MC point, cluster or normal image for the "
                     "matched predictions: nothing to score")
    result["notes"] = notes
    result = _clean(result)
    if out_path is not None:
        write_evaluation(out_path, result, scores, curves, tolerance_mm, cluster_tolerance_mm)
    return result


# ---------------------------------------------------------------------------------------------
# writing


_CSV_COLUMNS = (
    "stem", "truth_stem", "is_normal", "breast_area_cm2", "threshold",
    "px_tp", "px_fp", "px_fn", "px_tn", *PIXEL_METRIC_NAMES,
    "n_truth_mcs", "n_pred_mcs", "mc_tp", "mc_fp", "mc_fn", "mc_sensitivity", "mc_fp_per_cm2",
    "n_truth_clusters", "n_clusters_found", "n_pred_clusters", "n_false_clusters",
    "n_unmatched_clusters", "notes",
)




def write_evaluation(out_path: Path, result: dict[str, Any], scores: Sequence[ImageScore],
                     curves: FrocCurves, tolerance_mm: float,
                     cluster_tolerance_mm: float) -> None:
    """``metrics.json``, ``per_image.csv`` and the FROC plots (each only when its curve exists;
    the cluster plot only with a labelled cluster), all atomic."""
    out_path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_path / "metrics.json", result)
    write_bytes_atomic(out_path / "per_image.csv",
                       csv_bytes([s.csv_row() for s in scores], _CSV_COLUMNS, float_digits=6))
    if curves.objects is not None:
        _plot_froc(out_path / "froc_objects.png", _nan(result["object"]["froc"]),
                   "fp_per_image",
                   "false positives per image",
                   f"MC FROC (hit within {tolerance_mm:g} mm)")
    if curves.clusters is not None and curves.clusters.n_truth.sum() > 0:
        summ = result["cluster"]["froc"]
        x_name, xlabel = "false_clusters_per_normal_image", "false clusters per normal image"
        if not any(v is not None for v in summ[x_name]):
            x_name, xlabel = ("unmatched_clusters_per_abnormal_image",
                              "unmatched clusters per abnormal image (no normal image)")
        _plot_froc(out_path / "froc_clusters.png", _nan(summ), x_name, xlabel,
                   f"cluster FROC (tolerance {cluster_tolerance_mm:g} mm)")


def _nan(summary: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`_clean`'s None for plotting (None -> NaN in lists of numbers)."""
    out = dict(summary)
    for k, v in summary.items():
        if isinstance(v, list) and v and all(x is None or isinstance(x, (int, float)) for x in v):
            out[k] = [float("nan") if x is None else x for x in v]
    return out
