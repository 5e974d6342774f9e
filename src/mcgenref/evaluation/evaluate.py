"""``mcgenref evaluate``: score a prediction folder against ground truth.

Prediction folder (written by ``mcgenref segment``), per image ``<stem>``:
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
  are the 8-connected components of ``mask & breast`` (centroid position), true MCs the
  annotated points or the truth mask's component centroids; hit within ``tolerance_mm``;
* cluster metrics at the operating point, where the truth has cluster circles or is normal:
  predicted MCs grouped by :func:`mcgenref.clusters.group_clusters` (scores = peak
  probabilities), a circle found within ``cluster_tolerance_mm``;
* FROC curves for objects and clusters by sweeping a threshold over ``<stem>_prob.png``:
  at each threshold the detections are the components of ``prob >= t`` (positions = peak
  pixels, scores = peak probabilities, see :mod:`~mcgenref.evaluation.metrics`); thresholds
  ``linspace(0.05, 0.95, n_thresholds)``, then ``HIGH_THRESHOLDS`` (0.96 to 0.999: a
  confident model's operating point lies there), plus the operating thresholds of the
  ``meta`` files;
* bootstrap percentile 95% confidence intervals, resampling images (cluster sensitivity over
  the abnormal images, false clusters over the normal ones).

Outputs (atomic writes) in ``out_dir``: ``metrics.json``, ``per_image.csv``,
``froc_objects.png``, ``froc_clusters.png`` (each plot only when its curve exists).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mcgenref.errors import ConfigError, InputError
from mcgenref.clusters import ClusterRule, group_clusters
from mcgenref.evaluation.metrics import (
    CPM_FP_RATES,
    PIXEL_METRIC_NAMES,
    Candidates,
    FrocCurve,
    bootstrap_ci,
    cluster_counts,
    cluster_detection,
    components,
    image_candidates,
    match_points,
    mean_sensitivity,
    object_counts,
    pixel_counts,
    pixel_metrics,
    sensitivity_at,
)
from mcgenref.evaluation.truth import GroundTruth, read_truth
from mcgenref.io.atomic import check_writable_dir, write_bytes_atomic, write_json_atomic

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


@dataclass
class Prediction:
    """One image of a prediction folder (arrays ``[row, col]``)."""

    stem: str
    spacing: tuple[float, float]
    threshold: float
    mask: np.ndarray
    breast: np.ndarray
    prob: np.ndarray | None
    rule: ClusterRule | None = None
    notes: list[str] = field(default_factory=list)


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def prediction_stems(pred_dir: str | Path) -> list[str]:
    """Stems of a prediction folder: the ``<stem>`` of every ``<stem>_meta.json``."""
    d = Path(pred_dir)
    if not d.is_dir():
        raise InputError(f"prediction folder {d} not found")
    stems = sorted(p.name[: -len("_meta.json")] for p in d.iterdir()
                   if p.is_file() and p.name.endswith("_meta.json"))
    if not stems:
        raise InputError(f"no <stem>_meta.json in {d}: not a 'mcgenref segment' output folder")
    return stems


def read_prediction(pred_dir: str | Path, stem: str) -> Prediction:
    """Read one image's outputs (see the module docstring for the files and fallbacks)."""
    d = Path(pred_dir)
    meta_path = d / f"{stem}_meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: not a JSON object")
    try:
        sp = [float(v) for v in meta["pixel_spacing_mm"]]
        if len(sp) != 2 or not all(math.isfinite(v) and v > 0 for v in sp):
            raise ValueError
        spacing = (sp[0], sp[1])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{meta_path}: 'pixel_spacing_mm' must be [row_mm, col_mm] > 0") from None
    notes: list[str] = []
    threshold = meta.get("threshold")
    try:
        threshold = float(threshold) if threshold is not None else 0.5
    except (TypeError, ValueError):
        raise InputError(f"{meta_path}: 'threshold' is not a number") from None
    if meta.get("threshold") is None:
        notes.append("meta has no threshold: 0.5 assumed")

    prob = None
    prob_path = d / f"{stem}_prob.png"
    if prob_path.is_file():
        raw = _read_png(prob_path)
        if raw.ndim != 2:
            raise InputError(f"{prob_path}: expected a single-channel PNG")
        scale = 65535.0 if raw.dtype == np.uint16 or raw.max(initial=0) > 255 else 255.0
        prob = raw.astype(np.float32) / np.float32(scale)
    mask_path = d / f"{stem}_mask.png"
    if mask_path.is_file():
        m = _read_png(mask_path)
        mask = (m.any(axis=2) if m.ndim == 3 else m != 0)
    elif prob is not None:
        mask = prob >= threshold
        notes.append("no _mask.png: mask = prob >= threshold")
    else:
        raise InputError(f"{stem}: neither {mask_path.name} nor {prob_path.name} in {d}")
    shape = mask.shape
    size = meta.get("image_size")
    try:
        size = None if size is None else tuple(int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"{meta_path}: 'image_size' must be [rows, cols]") from None
    if size is not None and size != tuple(shape):
        raise InputError(f"{stem}: mask is {shape[0]}x{shape[1]} but meta image_size is {size}")
    if prob is not None and prob.shape != shape:
        raise InputError(f"{stem}: prob map {prob.shape} and mask {shape} differ in shape")
    breast_path = d / f"{stem}_breast.png"
    if breast_path.is_file():
        b = _read_png(breast_path)
        breast = (b.any(axis=2) if b.ndim == 3 else b != 0)
        if breast.shape != shape:
            raise InputError(f"{stem}: breast mask {breast.shape} and mask {shape} differ")
    else:
        breast = np.ones(shape, dtype=bool)
        notes.append("no _breast.png: the whole image is the region")
    rule = None
    cl_path = d / f"{stem}_clusters.json"
    if cl_path.is_file():
        try:
            r = json.loads(cl_path.read_text()).get("rule")
            if isinstance(r, dict):
                rule = ClusterRule.from_dict(r)
        except (OSError, ValueError, AttributeError, ConfigError):
            notes.append("clusters.json unreadable: default cluster rule")
    return Prediction(stem, spacing, threshold, mask, breast, prob, rule, notes)


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
# helpers


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


_CSV_COLUMNS = (
    "stem", "truth_stem", "is_normal", "breast_area_cm2", "threshold",
    "px_tp", "px_fp", "px_fn", "px_tn", *PIXEL_METRIC_NAMES,
    "n_truth_mcs", "n_pred_mcs", "mc_tp", "mc_fp", "mc_fn", "mc_sensitivity", "mc_fp_per_cm2",
    "n_truth_clusters", "n_clusters_found", "n_pred_clusters", "n_false_clusters",
    "n_unmatched_clusters", "notes",
)


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(_CSV_COLUMNS), extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        out = {}
        for k in _CSV_COLUMNS:
            v = r.get(k, "")
            if isinstance(v, float):
                v = "" if not math.isfinite(v) else f"{v:.6g}"
            elif isinstance(v, bool):
                v = int(v)
            out[k] = v
        w.writerow(out)
    return buf.getvalue().encode()


# ---------------------------------------------------------------------------------------------
# the evaluation


def evaluate_predictions(pred_dir: str | Path, truth_path: str | Path,
                         truth_format: str | None = None, out_dir: str | Path | None = None, *,
                         tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                         cluster_tolerance_mm: float = DEFAULT_CLUSTER_TOLERANCE_MM,
                         cluster_rule: ClusterRule | None = None,
                         n_thresholds: int = DEFAULT_N_THRESHOLDS, n_bootstrap: int = 1000,
                         seed: int = 0,
                         max_candidates: int | None = DEFAULT_MAX_CANDIDATES) -> dict[str, Any]:
    """Evaluate a ``mcgenref segment`` output folder; returns the ``metrics.json`` content.

    ``truth_format``: ``"masks"``, ``"inbreast"`` or ``"mias"`` (detected when ``None``).
    ``cluster_rule``: grouping rule; ``None`` = the rule in each ``<stem>_clusters.json``, else
    :class:`ClusterRule` defaults. Files are written to ``out_dir`` when it is given.
    NaN values (undefined: e.g. no labelled cluster) become ``null`` in the result.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ConfigError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    if not (math.isfinite(cluster_tolerance_mm) and cluster_tolerance_mm >= 0):
        raise ConfigError(f"cluster_tolerance_mm must be >= 0, got {cluster_tolerance_mm}")
    if int(n_thresholds) < 2:
        raise ConfigError(f"n_thresholds must be >= 2, got {n_thresholds}")
    if int(n_bootstrap) < 1:
        raise ConfigError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        check_writable_dir(out_path)

    truths = read_truth(truth_path, truth_format)
    fmt = truth_format.lower() if truth_format else None
    if fmt is None:
        from mcgenref.evaluation.truth import detect_truth_format

        fmt = detect_truth_format(truth_path)
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

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    px_counts: list[tuple[int, int, int, int]] = []
    px_per_image: list[dict[str, float]] = []
    obj_rows: list[dict[str, Any]] = []
    cl_rows: list[dict[str, Any]] = []
    op_thresholds: set[float] = set()
    cand_inputs: list[tuple[Prediction, GroundTruth, np.ndarray | None]] = []

    for stem in sorted(pairs):
        pred = read_prediction(pred_dir, stem)
        gt = truths[pairs[stem]]
        shape = pred.mask.shape
        if gt.mask is None and (gt.points is not None or gt.polygons):
            gt = gt.with_shape(shape)
        elif gt.mask is not None and gt.mask.shape != shape:
            raise InputError(f"{stem}: truth mask is {gt.mask.shape[0]}x{gt.mask.shape[1]} but "
                             f"the prediction is {shape[0]}x{shape[1]}")
        sr, sc = pred.spacing
        area_cm2 = float(pred.breast.sum()) * sr * sc / 100.0
        op_thresholds.add(round(pred.threshold, 6))
        rule = cluster_rule or pred.rule or ClusterRule()
        row: dict[str, Any] = {"stem": stem, "truth_stem": gt.stem, "is_normal": gt.is_normal,
                               "breast_area_cm2": area_cm2, "threshold": pred.threshold}
        row_notes = list(pred.notes) + list(gt.notes)

        if gt.mask is not None:
            c = pixel_counts(pred.mask, gt.mask, pred.breast)
            m = pixel_metrics(*c)
            px_counts.append(c)
            px_per_image.append(m)
            row.update(px_tp=c[0], px_fp=c[1], px_fn=c[2], px_tn=c[3], **m)
            outside = int(np.count_nonzero(gt.mask & ~pred.breast))
            if outside:
                row_notes.append(f"{outside} truth MC pixel(s) outside the breast mask (ignored)")

        mcs = components(pred.mask, pred.spacing, pred.prob, pred.breast)
        pred_pts = np.array([[o.row, o.col] for o in mcs], dtype=float).reshape(-1, 2)
        pred_scores = np.array([o.peak_prob for o in mcs], dtype=float)
        if pred.prob is None:
            pred_scores = np.ones(len(mcs))
        row["n_pred_mcs"] = len(mcs)

        truth_pts = gt.object_points()
        if truth_pts is not None:
            pm = match_points(pred_pts, truth_pts, pred.spacing, tolerance_mm)
            row.update(n_truth_mcs=len(truth_pts), mc_tp=pm.tp, mc_fp=pm.fp, mc_fn=pm.fn,
                       mc_sensitivity=_ratio(pm.tp, len(truth_pts)),
                       mc_fp_per_cm2=_ratio(pm.fp, area_cm2))
            obj_rows.append({"tp": pm.tp, "fp": pm.fp, "n": len(truth_pts), "area": area_cm2})

        circles = gt.clusters if gt.clusters is not None else None
        if gt.is_normal or circles:
            circ_mm = np.array([c.in_mm(pred.spacing) for c in (circles or [])],
                               dtype=float).reshape(-1, 3)
            pts_mm = pred_pts * np.asarray(pred.spacing)
            cl = group_clusters(pts_mm, pred_scores, rule=rule)
            cm = cluster_detection([pts_mm[list(k.members)] for k in cl], circ_mm,
                                   cluster_tolerance_mm)
            row.update(n_truth_clusters=len(circ_mm), n_clusters_found=cm.n_found,
                       n_pred_clusters=len(cl))
            if gt.is_normal:
                row["n_false_clusters"] = len(cl)
            else:
                row["n_unmatched_clusters"] = cm.n_unmatched
            cl_rows.append({"normal": gt.is_normal, "found": cm.n_found, "n": len(circ_mm),
                            "false": len(cl) if gt.is_normal else 0,
                            "unmatched": 0 if gt.is_normal else cm.n_unmatched})
        if pred.prob is not None:
            cand_inputs.append((pred, gt, truth_pts))
        else:
            row_notes.append("no _prob.png: left out of the FROC curves")
        row["notes"] = "; ".join(row_notes)
        rows.append(row)

    result: dict[str, Any] = {
        "n_images": len(rows),
        "truth_format": fmt,
        "settings": {
            "pred_dir": str(pred_dir), "truth": str(truth_path),
            "tolerance_mm": tolerance_mm, "cluster_tolerance_mm": cluster_tolerance_mm,
            "cluster_rule": (cluster_rule.to_dict() if cluster_rule else
                             "per image from <stem>_clusters.json, else "
                             f"{ClusterRule().to_dict()}"),
            "n_thresholds": int(n_thresholds), "n_bootstrap": int(n_bootstrap), "seed": seed,
            "max_candidates": max_candidates,
            "confidence": CONFIDENCE,
            "conventions": ("pixel ratios with a zero denominator are 1.0; object hit = centre "
                            "distance <= tolerance_mm, one-to-one; cluster found when a member "
                            "MC lies within radius + cluster_tolerance_mm of the circle centre; "
                            "FROC detections at threshold t = components of prob >= t, placed "
                            "at and scored by their peak"),
        },
        "stems": sorted(pairs),
        "unmatched": {"predictions_without_truth": pred_only,
                      "truth_without_prediction": truth_only},
    }
    n_boot = int(n_bootstrap)

    # pixel level -----------------------------------------------------------------------------
    if px_counts:
        counts = np.asarray(px_counts, dtype=np.int64)
        pooled = pixel_metrics(*counts.sum(axis=0).tolist())
        per = {k: np.array([m[k] for m in px_per_image]) for k in PIXEL_METRIC_NAMES}
        nimg = len(counts)
        result["pixel"] = {
            "n_images": nimg,
            "counts": dict(zip(("tp", "fp", "fn", "tn"), counts.sum(axis=0).tolist())),
            "pooled": pooled,
            "pooled_ci": {k: _ci(bootstrap_ci(
                lambda idx, k=k: pixel_metrics(*counts[idx].sum(axis=0).tolist())[k],
                n_boot, seed, n_items=nimg)) for k in PIXEL_METRIC_NAMES},
            "mean_per_image": {k: float(v.mean()) for k, v in per.items()},
            "mean_per_image_ci": {k: _ci(bootstrap_ci(v, n_boot, seed)) for k, v in per.items()},
        }

    # object level ----------------------------------------------------------------------------
    if obj_rows:
        tp = np.array([r["tp"] for r in obj_rows], dtype=float)
        fp = np.array([r["fp"] for r in obj_rows], dtype=float)
        nt = np.array([r["n"] for r in obj_rows], dtype=float)
        ar = np.array([r["area"] for r in obj_rows], dtype=float)
        ni = len(obj_rows)
        result["object"] = {
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

    # cluster level ---------------------------------------------------------------------------
    if cl_rows:
        normal = np.array([r["normal"] for r in cl_rows], dtype=bool)
        found = np.array([r["found"] for r in cl_rows], dtype=float)
        ncl = np.array([r["n"] for r in cl_rows], dtype=float)
        false = np.array([r["false"] for r in cl_rows], dtype=float)
        unm = np.array([r["unmatched"] for r in cl_rows], dtype=float)
        pos = np.flatnonzero(ncl > 0)
        neg = np.flatnonzero(normal)
        abn = np.flatnonzero(~normal)
        result["cluster"] = {
            "n_images": len(cl_rows), "n_normal_images": int(len(neg)),
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

    # FROC --------------------------------------------------------------------------------------
    thresholds = np.concatenate([np.linspace(*THRESHOLD_RANGE, int(n_thresholds)), HIGH_THRESHOLDS])
    ops = sorted(t for t in op_thresholds if 0 < t <= 1)
    # rounded so that an operating threshold equal to a grid value is not added twice
    thresholds = np.unique(np.round(np.concatenate([thresholds, ops]), 9))
    froc_obj = froc_cl = None
    if cand_inputs:
        o_hits, o_false, o_n, o_area, o_stems = [], [], [], [], []
        c_hits, c_false, c_unm, c_n, c_normal = [], [], [], [], []
        for pred, gt, tpts in cand_inputs:
            cands: Candidates = image_candidates(pred.prob, thresholds, pred.breast,
                                                 max_candidates)
            if np.isfinite(cands.dropped_max):
                notes.append(f"{pred.stem}: more than {max_candidates} FROC candidates; "
                             f"thresholds <= {cands.dropped_max:.4g} left out of the curves")
            if tpts is not None:
                h, f = object_counts(cands, tpts, pred.spacing, tolerance_mm, thresholds)
                o_hits.append(h)
                o_false.append(f)
                o_n.append(len(tpts))
                o_area.append(float(pred.breast.sum()) * pred.spacing[0] * pred.spacing[1] / 100)
                o_stems.append(pred.stem)
            if gt.is_normal or gt.clusters:
                rule = cluster_rule or pred.rule or ClusterRule()
                circ_mm = np.array([c.in_mm(pred.spacing) for c in (gt.clusters or [])],
                                   dtype=float).reshape(-1, 3)
                f_, ncl_, unm_ = cluster_counts(cands, circ_mm, pred.spacing, thresholds, rule,
                                                cluster_tolerance_mm)
                c_hits.append(f_)
                c_n.append(len(circ_mm))
                c_normal.append(gt.is_normal)
                zero = np.where(np.isnan(ncl_), np.nan, 0.0)
                c_false.append(ncl_ if gt.is_normal else zero)
                c_unm.append(zero if gt.is_normal else unm_)
        if o_hits:
            froc_obj = FrocCurve(thresholds, np.array(o_hits), np.array(o_false),
                                 np.array(o_n), np.ones(len(o_n), dtype=bool),
                                 area_cm2=np.array(o_area), stems=o_stems)
            result.setdefault("object", {})["froc"] = _froc_summary(
                froc_obj, n_boot, seed, "fp_per_image", ops)
        if c_hits:
            froc_cl = FrocCurve(thresholds, np.array(c_hits), np.array(c_false), np.array(c_n),
                                np.array(c_normal, dtype=bool), unmatched=np.array(c_unm),
                                stratified=True)
            result.setdefault("cluster", {})["froc"] = _froc_summary(
                froc_cl, n_boot, seed, "false_clusters_per_normal_image", ops)
    if froc_cl is not None and froc_cl.n_truth.sum() == 0:
        notes.append("no labelled cluster among the images: no cluster FROC plot")
    if not (px_counts or obj_rows or cl_rows):
        notes.append("the truth gives no mask, MC point, cluster or normal image for the "
                     "matched predictions: nothing to score")
    result["notes"] = notes
    result = _clean(result)

    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_path / "metrics.json", result)
        write_bytes_atomic(out_path / "per_image.csv", _csv_bytes(rows))
        if froc_obj is not None:
            _plot_froc(out_path / "froc_objects.png", _nan(result["object"]["froc"]),
                       "fp_per_image",
                       "false positives per image",
                       f"MC FROC (hit within {tolerance_mm:g} mm)")
        if froc_cl is not None and froc_cl.n_truth.sum() > 0:
            summ = result["cluster"]["froc"]
            x_name, xlabel = "false_clusters_per_normal_image", "false clusters per normal image"
            if not any(v is not None for v in summ[x_name]):
                x_name, xlabel = ("unmatched_clusters_per_abnormal_image",
                                  "unmatched clusters per abnormal image (no normal image)")
            _plot_froc(out_path / "froc_clusters.png", _nan(summ), x_name, xlabel,
                       f"cluster FROC (tolerance {cluster_tolerance_mm:g} mm)")
    return result


def _nan(summary: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`_clean`'s None for plotting (None -> NaN in lists of numbers)."""
    out = dict(summary)
    for k, v in summary.items():
        if isinstance(v, list) and v and all(x is None or isinstance(x, (int, float)) for x in v):
            out[k] = [float("nan") if x is None else x for x in v]
    return out
