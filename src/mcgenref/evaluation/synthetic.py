"""Scores of probability maps on synthetic samples, whose masks are exact by construction.

Used by the benchmarks (``benchmarks/quality.py``, ``benchmarks/tt_gpr.py``) and the TT-GPR
tuning recipe, with :func:`segmentor_logits` and :func:`refined_probabilities` to get the maps
(each patch is one segmentor window; TT-GPR's region is the whole patch). Per patch, at one threshold: pixel counts of ``prob >= threshold`` against the
exact mask (:func:`mcgenref.evaluation.metrics.pixel_counts`), and objects: the centroids of
the 8-connected components of the prediction matched one-to-one to the *visible* MCs of the
sample's record within ``tolerance_mm`` (:func:`mcgenref.evaluation.metrics.match_points`).
Pixel metrics are pooled over patches (sums of counts); confidence intervals resample patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mcgenref.evaluation.metrics import (
    bootstrap_ci,
    components,
    match_points,
    pixel_counts,
    pixel_metrics,
)
from mcgenref.synthesis.sample import Sample

if TYPE_CHECKING:
    from mcgenref.inference.refine import Refiner

__all__ = ["PIXEL_METRICS", "SyntheticScores", "refined_probabilities", "score_synthetic",
           "segmentor_logits", "visible_points"]

#: the pixel metrics a summary reports with confidence intervals
PIXEL_METRICS = ("dice", "recall", "fnr", "precision", "balanced_accuracy", "g_mean")


def visible_points(record: dict[str, Any]) -> np.ndarray:
    """``[n, 2]`` (row, col) pixel positions of the visible MCs of a sample's record."""
    return np.array([[m["y_px"], m["x_px"]] for m in record["mcs"] if m["visible"]],
                    dtype=float).reshape(-1, 2)


@dataclass(frozen=True)
class SyntheticScores:
    """Per-patch counts at one threshold.

    Attributes:
        threshold: the decision threshold on the probability.
        counts: ``[n, 4]`` int64, pixel ``(tp, fp, fn, tn)`` per patch.
        objects: ``[n, 3]`` int64, ``(matched components, unmatched components, visible MCs)``.
    """

    threshold: float
    counts: np.ndarray
    objects: np.ndarray

    def pooled(self, index: np.ndarray | None = None) -> dict[str, float]:
        """Pixel metrics of the summed counts (of the patches in ``index``, default all)."""
        c = self.counts if index is None else self.counts[index]
        return pixel_metrics(*c.sum(axis=0).tolist())

    @property
    def object_sensitivity(self) -> float:
        """Matched visible MCs / visible MCs (1.0 when there are none)."""
        n = int(self.objects[:, 2].sum())
        return float(self.objects[:, 0].sum() / n) if n else 1.0

    @property
    def fp_per_patch(self) -> float:
        """Unmatched predicted components per patch."""
        return float(self.objects[:, 1].mean()) if len(self.objects) else 0.0

    def summary(self, n_bootstrap: int = 0, seed: int = 0,
                metrics: Sequence[str] = PIXEL_METRICS) -> dict[str, Any]:
        """Pooled metrics, their 95 % bootstrap CIs (patches resampled; none when
        ``n_bootstrap`` is 0), object sensitivity and false components per patch."""
        ci = {}
        if n_bootstrap > 0:
            ci = {k: list(bootstrap_ci(lambda idx, k=k: self.pooled(idx)[k], n_bootstrap, seed,
                                       n_items=len(self.counts))) for k in metrics}
        return {"threshold": self.threshold, "pooled": self.pooled(), "ci": ci,
                "object_sensitivity": self.object_sensitivity,
                "object_fp_per_patch": self.fp_per_patch,
                "n_truth_mcs": int(self.objects[:, 2].sum())}


def segmentor_logits(segmentor: nn.Module, samples: Sequence[Sample]) -> list[np.ndarray]:
    """The segmentor's logits (float32 ``[H, W]``) on each sample's image, one patch a pass."""
    with torch.inference_mode():
        return [segmentor(torch.from_numpy(s.image)[None, None])[0, 0].float().numpy() for s in samples]


def refined_probabilities(samples: Sequence[Sample], logits: Sequence[np.ndarray],
                          refiner: Refiner | None = None) -> list[np.ndarray]:
    """``sigmoid`` of ``logits``, first refined by ``refiner`` (TT-GPR over the whole patch at
    the sample's spacing) when one is given."""
    probs = []
    for sample, z in zip(samples, logits, strict=True):
        if refiner is not None:
            spacing = (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1]))
            z = refiner.refine(sample.image, np.ones(sample.image.shape, bool), z, spacing).logits
        probs.append(1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0))))
    return probs


def score_synthetic(prob_maps: Sequence[np.ndarray], samples: Sequence[Sample], threshold: float,
                    tolerance_mm: float = 1.0) -> SyntheticScores:
    """Score ``prob_maps`` (one per sample, on the sample's grid) at ``threshold``."""
    if len(prob_maps) != len(samples):
        raise ValueError(f"{len(prob_maps)} probability maps for {len(samples)} samples")
    counts, objects = [], []
    for prob, sample in zip(prob_maps, samples, strict=True):
        if prob.shape != sample.mask.shape:
            raise ValueError(f"probability map {prob.shape} vs mask {sample.mask.shape}")
        pred = prob >= threshold
        counts.append(pixel_counts(pred, sample.mask.astype(bool)))
        spacing = (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1]))
        centroids = np.array([[o.row, o.col] for o in components(pred, spacing)]).reshape(-1, 2)
        truth = visible_points(sample.record)
        match = match_points(centroids, truth, spacing, tolerance_mm)
        objects.append((match.tp, match.fp, len(truth)))
    return SyntheticScores(threshold=float(threshold),
                           counts=np.asarray(counts, dtype=np.int64).reshape(-1, 4),
                           objects=np.asarray(objects, dtype=np.int64).reshape(-1, 3))
