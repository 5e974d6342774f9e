"""Which crop score of a segmentor separates the MAGIC-5 ROIs: DEVELOPMENT cases only (issue 13).

    python benchmarks/roi_scores.py [--model DIR] [--bootstrap 1000]
                                    [--out benchmarks/results/magic5_roi_scores]

The development half of the MAGIC-5 cases (:func:`mcgenref.datasets.magic5.split_crops`, seed 0),
each crop prepared and segmented in-process by the library (``roi=True``, 0.085 mm; the
segmentor folder ``--model``, default the shipped fine one, which ``--model auto`` gives such
crops), and scored by each candidate of :data:`SCORES` from its probability map:

* ``max_prob``: the strongest probability (``evaluate``'s primary ROI score);
* ``tta_max``: the strongest probability of the map averaged over the 8 flips and quarter turns
  of the crop (8 forwards);
* ``top5_mean``: the mean of the 5 strongest pixels;
* ``n_above_half``: the number of pixels above 0.5;
* ``mc_area_mm2``: the sum of the map over the crop times the pixel area, i.e.
  :func:`mcgenref.evaluation.roi.expected_mc_area_mm2`, ``evaluate``'s expected MC area.

Reported: each score's AUC with a case-bootstrap CI and its paired difference from
``max_prob``; then, as a check against the classes' known confound (normal crops are darker and
less textured), the AUC of each score **within thirds** of each trivial statistic (crop mean,
std, max - median), beside the AUC of that statistic inside its own thirds. Writes
``OUT/table.md`` and ``OUT/table.json``. The test cases are never read here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcgenref.datasets.magic5 import (  # noqa: E402
    MAGIC5_PIXEL_SPACING_MM,
    list_roi_crops,
    split_crops,
)
from mcgenref.errors import McGenRefWarning  # noqa: E402
from mcgenref.evaluation.roi import (  # noqa: E402
    case_bootstrap_auc,
    case_bootstrap_auc_difference,
    expected_mc_area_mm2,
    roc_auc,
    trivial_statistics,
)
from mcgenref.io import read_image  # noqa: E402

SCORES = ("max_prob", "tta_max", "top5_mean", "n_above_half", "mc_area_mm2")
#: The trivial statistics whose thirds the confound check stratifies by.
STRATA = ("mean", "std", "max_minus_median")


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0-7) of the 8 flips and quarter turns of ``a``."""
    a = np.rot90(a, k % 4)
    return np.ascontiguousarray(a[:, ::-1] if k >= 4 else a)


def undo_dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`dihedral`."""
    if k >= 4:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, -(k % 4)))


def crop_scores(prob: np.ndarray, mean_prob: np.ndarray, region: np.ndarray,
                spacing: tuple[float, float]) -> dict[str, float]:
    """The :data:`SCORES` of one crop from its map ``prob`` and the flip-averaged ``mean_prob``."""
    inside = prob[region]
    return {"max_prob": float(inside.max()), "tta_max": float(mean_prob[region].max()),
            "top5_mean": float(np.sort(inside)[-5:].mean()),
            "n_above_half": float((inside > 0.5).sum()),
            "mc_area_mm2": expected_mc_area_mm2(prob, region, spacing)}


def thirds(values: np.ndarray) -> np.ndarray:
    """0, 1, 2: the third of ``values`` each falls in (tertiles of ``values``)."""
    return np.digitize(values, np.quantile(values, [1 / 3, 2 / 3]))


def analyse(rows: list[dict], n_boot: int, seed: int) -> dict:
    """AUCs, paired differences from ``max_prob`` and the within-thirds check of ``rows`` (one
    dict per crop: ``case``, ``label``, the scores and the trivial statistics)."""
    labels = np.array([r["label"] for r in rows])
    cases = [r["case"] for r in rows]

    def col(name: str) -> np.ndarray:
        return np.array([r[name] for r in rows], dtype=float)

    out: dict = {"scores": {}, "strata": {}}
    for k in SCORES + STRATA:
        lo, hi = case_bootstrap_auc(col(k), labels, cases, n_boot, seed)
        block = {"auc": roc_auc(col(k), labels), "ci": [lo, hi]}
        if k in SCORES:
            d, ci = case_bootstrap_auc_difference(col(k), col("max_prob"), labels, cases,
                                                  n_boot, seed)
            block["minus_max_prob"] = {"difference": d, "ci": list(ci)}
        out["scores"][k] = block
    for by in STRATA:
        third = thirds(col(by))
        out["strata"][by] = {
            "n_calcification_normal": [[int(labels[third == t].sum()),
                                        int((labels[third == t] == 0).sum())] for t in range(3)],
            **{k: [roc_auc(col(k)[third == t], labels[third == t]) for t in range(3)]
               for k in SCORES + (by,)}}
    return out


def measure(model: Path | None, n_boot: int, seed: int) -> tuple[list[dict], dict]:
    """Segment the development crops with ``model`` and :func:`analyse` their scores; returns
    the per-crop rows and the analysis."""
    from mcgenref.inference.model_choice import FINE, shipped_model_path
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    dev, _ = split_crops(list_roi_crops())
    seg = Segmenter(SegmentConfig(roi=True), model_path=model or shipped_model_path(FINE),
                    device="cpu", pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM)
    rows = []
    for c in dev:
        p = seg.prepare(c.path)
        maps = [undo_dihedral(seg.detect(dataclasses.replace(
            p, image=dihedral(p.image, k), region=dihedral(p.region, k))).prob, k)
            for k in range(8)]
        raw, _ = read_image(c.path, pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM)
        rows.append({"stem": c.stem, "case": c.case, "label": c.label,
                     **crop_scores(maps[0], np.mean(maps, axis=0), p.region, p.spacing),
                     **trivial_statistics(raw)})
    return rows, analyse(rows, n_boot, seed)


def _ci(d: dict) -> str:
    return f"{d['auc']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"


def write_table(out: Path, result: dict, model: str, seconds: float) -> None:
    lines = ["# MAGIC-5 ROI crop scores of a segmentor: development cases only", "",
             f"`{' '.join(['python benchmarks/roi_scores.py', *sys.argv[1:]])}`; model `{model}`; "
             f"{result['n_crops']} crops, {result['n_cases']} cases; {platform.machine()}, "
             f"{os.cpu_count()} CPU cores, no GPU; {seconds:.0f} s. AUC [95 % CI over cases]; "
             "difference from `max_prob` paired (one draw of cases scores both).", "",
             "| score | AUC | minus max_prob |", "|---|---|---|"]
    for k, b in result["scores"].items():
        d = b.get("minus_max_prob")
        diff = "" if d is None else f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
        lines.append(f"| {k} | {_ci(b)} | {diff} |")
    lines += ["", "Within thirds of each trivial statistic (AUC in the lowest, middle and highest "
              "third; calcification / normal crops per third):", "",
              "| thirds of | crops per third | " + " | ".join(SCORES) + " | the statistic itself |",
              "|---|---|" + "---|" * (len(SCORES) + 1)]
    for by, block in result["strata"].items():
        cell = [", ".join(f"{v:.3f}" for v in block[k]) for k in SCORES + (by,)]
        counts = ", ".join(f"{a}/{b}" for a, b in block["n_calcification_normal"])
        lines.append(f"| {by} | {counts} | " + " | ".join(cell) + " |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="segmentor folder (default: the shipped fine model)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "magic5_roi_scores")
    args = ap.parse_args()
    warnings.simplefilter("ignore", McGenRefWarning)
    t0 = time.perf_counter()
    rows, result = measure(args.model, args.bootstrap, args.seed)
    result = {"n_crops": len(rows), "n_cases": len({r["case"] for r in rows}), **result}
    write_table(args.out, result, str(args.model or "shipped fine"), time.perf_counter() - t0)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
