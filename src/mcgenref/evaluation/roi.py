"""ROI-level evaluation: crops with and without an MC cluster (a MAGIC-5-style folder).

Truth: a folder with ``normal/`` and ``calcification/`` subfolders of crops
(:mod:`mcgenref.datasets.magic5`; label 1 = calcification); the first four characters of a
name are the case. Predictions: a ``mcgenref segment --roi`` folder of the same crops (a
prediction ``<stem>`` matches the crop of that stem, or ``<label folder>/<stem>`` when segment
mirrored the folders).

Each crop is scored (:func:`score_crop` -> :class:`CropScore`) by

* ``max_prob`` (**primary**): the strongest probability in ``<stem>_prob.png``. It needs no
  threshold: the operating point recorded with a model was chosen on whole images of another
  site, and at the shipped film model's hardly any MAGIC-5 crop has an MC, so a count would
  mostly measure that choice;
* ``n_mcs``: the number of MCs found at the operating point (8-connected components of
  ``<stem>_mask.png`` inside the searched region, as evaluate counts them elsewhere): what
  ``segment`` reports and what a cluster needs;
* ``mc_area_mm2``: the expected MC area of the crop, the sum of ``<stem>_prob.png`` over the
  searched region times the pixel area (mm²). Also threshold-free, and it counts every MC of a
  cluster, not the strongest one only. It grows with the crop (background probabilities add
  up), so it ranks crops of one size, as MAGIC-5's are. It is an area only for a segmentor's
  probabilities: the classical method's map is a contrast score that is above 0 on half of
  any noise, so its sum measures noise. On the MAGIC-5 development cases (issue 13;
  docs/segment.md, "Crops inside the breast") the shipped fine model's ``mc_area_mm2`` AUC was
  0.035 [0.012, 0.074] above its ``max_prob``'s, and at or above it within tertiles of the
  crops' brightness and texture (the classes' known confound).

and, beside them, the trivial statistics of the crop's own raw pixels (:data:`TRIVIAL_STATS`:
mean, median, standard deviation, max - median), which a detector must beat to mean anything
on a set whose classes differ in brightness and texture.

ROC AUC (:func:`roc_auc`, ties counted one half: the Mann-Whitney statistic; higher score =
calcification) of each, with a percentile bootstrap CI over **cases** (:func:`case_bootstrap_auc`:
cases are resampled with replacement and each drawn case brings all its crops, since crops of
one case are shifted windows of one region), through
:func:`mcgenref.evaluation.metrics.bootstrap_ci`; the difference of two scores' AUCs on the same
crops with a paired CI (:func:`case_bootstrap_auc_difference`: one draw of cases scores both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.datasets.magic5 import RoiCrop, list_roi_crops
from mcgenref.errors import InputError
from mcgenref.evaluation.metrics import bootstrap_ci, predicted_mcs
from mcgenref.io import read_image
from mcgenref.io.atomic import check_writable_dir, write_bytes_atomic, write_json_atomic
from mcgenref.io.predictions import PredictionImage, csv_bytes, prediction_stems, read_prediction

#: The detector's crop scores, the primary first.
DETECTOR_SCORES = ("max_prob", "n_mcs", "mc_area_mm2")
PRIMARY_SCORE = "max_prob"
#: Statistics of a crop's raw pixels that need no detector.
TRIVIAL_STATS = ("mean", "median", "std", "max_minus_median")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class CropScore:
    """One crop: its truth (``label`` 1 = calcification, ``case``), the detector's scores and
    the trivial statistics of its raw pixels."""

    stem: str
    case: str
    label: int
    n_mcs: int
    max_prob: float
    trivial: dict[str, float]
    mc_area_mm2: float

    def value(self, name: str) -> float:
        if name == "n_mcs":
            return float(self.n_mcs)
        if name == "max_prob":
            return float(self.max_prob)
        if name == "mc_area_mm2":
            return float(self.mc_area_mm2)
        return float(self.trivial[name])

    def csv_row(self) -> dict[str, Any]:
        return {"stem": self.stem, "case": self.case, "label": self.label,
                "n_mcs": self.n_mcs, "max_prob": self.max_prob,
                "mc_area_mm2": self.mc_area_mm2, **self.trivial}


def expected_mc_area_mm2(prob: np.ndarray, region: np.ndarray,
                         spacing: tuple[float, float]) -> float:
    """``mc_area_mm2``: the sum of ``prob`` over ``region`` times the pixel area (mm²); NaN for
    an empty region."""
    if not region.any():
        return float("nan")
    return float(prob[region].sum(dtype=np.float64)) * float(spacing[0]) * float(spacing[1])


@dataclass(frozen=True)
class RocAuc:
    """One score's ROC AUC over the crops, with its case-bootstrap CI."""

    score: str
    auc: float
    ci: tuple[float, float]
    n_positive: int
    n_negative: int
    n_cases: int

    def to_dict(self) -> dict[str, Any]:
        return {"auc": self.auc, "ci": list(self.ci), "n_positive": self.n_positive,
                "n_negative": self.n_negative, "n_cases": self.n_cases}


def trivial_statistics(image: np.ndarray) -> dict[str, float]:
    """The raw-pixel statistics of :data:`TRIVIAL_STATS` of one crop."""
    v = np.asarray(image, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("a crop has no finite pixel")
    median = float(np.median(v))
    return {"mean": float(v.mean()), "median": median, "std": float(v.std()),
            "max_minus_median": float(v.max()) - median}


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(equal); NaN without both classes."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # ranks with ties averaged: the Mann-Whitney U of the positives
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i: j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[y].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def case_bootstrap_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                       cases: Sequence[str], n_boot: int = 1000, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile CI of :func:`roc_auc` resampling cases (each drawn case brings all its crops;
    a resample with one class only is dropped)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    crops_of = _crops_of_cases(cases)

    def auc_of(case_idx: np.ndarray) -> float:
        idx = np.concatenate([crops_of[k] for k in case_idx])
        return roc_auc(s[idx], y[idx])

    return bootstrap_ci(auc_of, n_boot, seed, n_items=len(crops_of), confidence=confidence)


def case_bootstrap_auc_difference(
    scores_a: Sequence[float] | np.ndarray, scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray, cases: Sequence[str], n_boot: int = 1000, seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, tuple[float, float]]:
    """``AUC(a) - AUC(b)`` of two scores of the same crops, and its **paired** percentile CI:
    each resample of cases (each drawn case brings all its crops) scores both, so what the two
    share (the crops drawn) cancels out of the difference."""
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    y = np.asarray(labels, dtype=int)
    if not len(a) == len(b) == len(y) == len(cases):
        raise ValueError(f"{len(a)} and {len(b)} scores, {len(y)} labels, {len(cases)} cases")
    crops_of = _crops_of_cases(cases)

    def difference(case_idx: np.ndarray) -> float:
        idx = np.concatenate([crops_of[k] for k in case_idx])
        return roc_auc(a[idx], y[idx]) - roc_auc(b[idx], y[idx])

    ci = bootstrap_ci(difference, n_boot, seed, n_items=len(crops_of), confidence=confidence)
    return roc_auc(a, y) - roc_auc(b, y), ci


def _crops_of_cases(cases: Sequence[str]) -> list[np.ndarray]:
    """The crop indices of each case (cases sorted by name)."""
    names = sorted(set(cases))
    index = {c: k for k, c in enumerate(names)}
    members: list[list[int]] = [[] for _ in names]
    for i, c in enumerate(cases):
        members[index[c]].append(i)
    return [np.asarray(m, dtype=np.int64) for m in members]


def auc_table(crops: Sequence[CropScore], names: Sequence[str], n_boot: int,
              seed: int) -> dict[str, RocAuc]:
    """:class:`RocAuc` of each score in ``names`` over ``crops``."""
    labels = np.array([c.label for c in crops], dtype=int)
    cases = [c.case for c in crops]
    out = {}
    for name in names:
        values = np.array([c.value(name) for c in crops], dtype=float)
        out[name] = RocAuc(name, roc_auc(values, labels),
                           case_bootstrap_auc(values, labels, cases, n_boot, seed),
                           int(labels.sum()), int((labels == 0).sum()), len(set(cases)))
    return out


def score_crop(pred: PredictionImage, crop: RoiCrop) -> CropScore:
    """The detector's scores of one segmented crop and the trivial statistics of its pixels."""
    mcs, _ = predicted_mcs(pred)  # segment's MC table: the peaks inside the mask
    scored = pred.prob is not None and pred.breast.any()
    max_prob = float(pred.prob[pred.breast].max()) if scored else float("nan")
    area = expected_mc_area_mm2(pred.prob, pred.breast, pred.spacing) if scored else float("nan")
    raw, _ = read_image(crop.path, pixel_spacing_mm=pred.spacing)
    return CropScore(pred.stem, crop.case, crop.label, len(mcs), max_prob,
                     trivial_statistics(raw), area)


def match_crops(pred_stems: Sequence[str], crops: Sequence[RoiCrop]) -> dict[str, RoiCrop]:
    """``{prediction stem: crop}``: the crop's stem, or ``<label folder>/<stem>``."""
    by_key: dict[str, RoiCrop] = {}
    for c in crops:
        by_key[f"{c.path.parent.name}/{c.stem}"] = c
        by_key.setdefault(c.stem, c)
    return {p: by_key[p] for p in pred_stems if p in by_key}


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def roi_summary(crops: Sequence[CropScore], n_boot: int, seed: int) -> dict[str, Any]:
    """The ``"roi"`` block of ``metrics.json``: AUCs of the detector's scores and the trivial
    statistics, with case-bootstrap CIs."""
    detector = auc_table(crops, DETECTOR_SCORES, n_boot, seed)
    trivial = auc_table(crops, TRIVIAL_STATS, n_boot, seed)
    best_trivial = max(trivial.values(), key=lambda r: -1.0 if math.isnan(r.auc) else r.auc)
    return {
        "n_crops": len(crops),
        "n_calcification_crops": int(sum(c.label for c in crops)),
        "n_normal_crops": int(sum(1 - c.label for c in crops)),
        "n_cases": len({c.case for c in crops}),
        "primary_score": PRIMARY_SCORE,
        "auc": {k: v.to_dict() for k, v in detector.items()},
        "trivial_auc": {k: v.to_dict() for k, v in trivial.items()},
        "best_trivial": best_trivial.score,
        "primary_minus_best_trivial": detector[PRIMARY_SCORE].auc - best_trivial.auc,
    }


_CSV_COLUMNS = ("stem", "case", "label", *DETECTOR_SCORES, *TRIVIAL_STATS)


def evaluate_roi(pred_dir: str | Path, truth_dir: str | Path, out_dir: str | Path | None = None,
                 *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Evaluate a ``segment --roi`` folder against a ROI folder; returns ``metrics.json``.

    Writes (atomic) ``metrics.json`` and ``per_image.csv`` (one row per crop) in ``out_dir``
    when given.

    Raises:
        InputError: ``truth_dir`` is not a ROI folder, or no prediction matches a crop.
    """
    crops = list_roi_crops(truth_dir)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        check_writable_dir(out_path)
    stems = prediction_stems(pred_dir)
    matched = match_crops(stems, crops)
    if not matched:
        raise InputError(f"no prediction in {pred_dir} matches a crop in {truth_dir}")
    scores = [score_crop(read_prediction(pred_dir, s), matched[s]) for s in sorted(matched)]
    notes = []
    if len({c.label for c in scores}) < 2:
        notes.append("the matched crops hold one class only: no AUC")
    matched_paths = {c.path for c in matched.values()}
    result = _clean({
        "n_images": len(scores),
        "truth_format": "roi",
        "settings": {
            "pred_dir": str(pred_dir), "truth": str(truth_dir), "n_bootstrap": int(n_bootstrap),
            "seed": seed, "confidence": CONFIDENCE,
            "conventions": ("ROC AUC with ties counted one half, higher score = calcification; "
                            "mc_area_mm2 = sum of the probability over the searched region x "
                            "pixel area; n_mcs = components of the mask in the searched region; "
                            "max_prob = the strongest probability; trivial statistics of the "
                            "crop's raw pixels; bootstrap CIs resample cases (first 4 "
                            "characters of a name) with all their crops"),
        },
        "stems": sorted(matched),
        "unmatched": {"predictions_without_truth": sorted(s for s in stems if s not in matched),
                      "truth_without_prediction": sorted(
                          c.stem for c in crops if c.path not in matched_paths)},
        "roi": roi_summary(scores, int(n_bootstrap), seed),
        "notes": notes,
    })
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_path / "metrics.json", result)
        write_bytes_atomic(out_path / "per_image.csv",
                           csv_bytes([c.csv_row() for c in scores], _CSV_COLUMNS, float_digits=6))
    return result


__all__: Sequence[str] = (
    "DETECTOR_SCORES", "PRIMARY_SCORE", "TRIVIAL_STATS", "CropScore", "RocAuc",
    "trivial_statistics", "roc_auc", "case_bootstrap_auc", "case_bootstrap_auc_difference",
    "auc_table", "expected_mc_area_mm2", "score_crop",
    "match_crops", "roi_summary", "evaluate_roi",
)
