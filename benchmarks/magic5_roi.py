"""MAGIC-5 ROI AUC: ``segment --roi`` (a segmentor, classical DoG) beside the trivial statistics.

    python benchmarks/magic5_roi.py --out benchmarks/results/magic5_roi [--bootstrap 1000]
                                    [--work /tmp/mcgenref-magic5-roi] [--model DIR]
                                    [--splits dev,test]
    python benchmarks/magic5_roi.py --select-rule --out benchmarks/results/magic5_roi

The 78 MAGIC-5 cases (``$MCGENREF_DATA/magic5-microcal``, 60 x 60 px crops at 85 um) are split
by case into development and test (:func:`mcgenref.datasets.magic5.split_crops`, seed 0, half
each, stratified by the classes a case holds).

* ``--select-rule``: the candidate intensity rules of ROI mode (:data:`CANDIDATE_RULES`) on the
  DEVELOPMENT crops only: each crop is read and prepared by the library (``roi=True``), its
  normalised image replaced by the candidate's, and the shipped model run (no files); AUC of the
  number of MCs found and of the strongest probability, with case-bootstrap CIs, in
  ``rule_selection.md`` / ``.json``. The chosen rule is the library's
  (:func:`mcgenref.inference.segment.fit_roi_normalization`).
* default: for each of development and test (``--splits``), ``run_segment`` with ``roi`` and
  ``--pixel-spacing 0.085`` (the same as ``mcgenref segment --roi --pixel-spacing 0.085``) for
  ``--method model`` (the shipped model, or ``--model``) and ``--method classical`` into
  ``WORK/pred/<split>-<method>/``, then
  ``evaluate`` of each folder against the MAGIC-5 folder (``WORK/eval/<split>-<method>/``), and
  ``table.md`` / ``table.json``: ROI AUC of each score and of the trivial statistics, with 95 %
  CIs over cases. ``benchmarks/quality.py`` may call :func:`measure` for its table.

Real data is read from ``$MCGENREF_DATA`` (default ``../shared/data``) and never copied.
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
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcgenref.datasets.magic5 import (  # noqa: E402
    MAGIC5_PIXEL_SPACING_MM,
    RoiCrop,
    list_roi_crops,
    split_crops,
)
from mcgenref.errors import McGenRefWarning  # noqa: E402
from mcgenref.evaluation.roi import (  # noqa: E402
    DETECTOR_SCORES,
    TRIVIAL_STATS,
    CropScore,
    auc_table,
    trivial_statistics,
)
from mcgenref.io import read_image  # noqa: E402
from mcgenref.io.meta import ImageMeta  # noqa: E402
from mcgenref.io.normalize import Normalization  # noqa: E402

# ---------------------------------------------------------------------------------------------
# candidate intensity rules (development split only)

#: On the shipped model's training normals (30 mini-MIAS training women's images, breast mask):
#: the median 1st-99th percentile range is 172.5 of 255 grey levels and the breast's median lies
#: at 0.68 of it (measured for this choice; see docs/segment.md).
MIAS_RANGE_FRACTION = 172.5 / 255.0
MIAS_MEDIAN_POSITION = 0.68
#: The full image's range over its median absolute deviation on the same images (172.5 / 24.5).
MIAS_RANGE_OVER_MAD = 7.0


def _full_scale(meta: ImageMeta) -> float:
    return float(2 ** int(meta.bits_stored or 8) - 1)


def rule_fixed(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """0 .. 2^bits - 1 -> 0 .. 1: the film's own scale, no statistic of the crop."""
    return Normalization(0.0, _full_scale(meta))


def rule_median_mid(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """The bit-depth scale, the crop's median moved to 0.5: the library's rule (chosen), i.e.
    what ``segment --roi`` does (:func:`mcgenref.inference.segment.fit_roi_normalization`)."""
    from mcgenref.inference.segment import fit_roi_normalization

    return fit_roi_normalization(raw, meta)


def rule_percentile(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """The crop's own 1st / 99th percentiles (the full-image rule applied to a crop)."""
    lo, hi = np.percentile(raw, [1.0, 99.0])
    return Normalization(float(lo), float(max(hi, lo + 1.0)))


def rule_typical_spread(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """A full image's typical range (0.68 of full scale), the crop's median where a full
    image's median typically lies (0.68 of the range)."""
    d = MIAS_RANGE_FRACTION * _full_scale(meta)
    low = float(np.median(raw)) - MIAS_MEDIAN_POSITION * d
    return Normalization(low, low + d)


def rule_mad_floor(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """Range = 7 x the crop's MAD, at least the typical range; median as typical-spread."""
    med = float(np.median(raw))
    mad = float(np.median(np.abs(raw - med)))
    d = max(MIAS_RANGE_OVER_MAD * mad, MIAS_RANGE_FRACTION * _full_scale(meta))
    low = med - MIAS_MEDIAN_POSITION * d
    return Normalization(low, low + d)


CANDIDATE_RULES: dict[str, Callable[[np.ndarray, ImageMeta], Normalization]] = {
    "fixed bit-depth scale": rule_fixed,
    "median to mid-grey (bit-depth scale)": rule_median_mid,
    "crop 1/99 % percentiles": rule_percentile,
    "typical full-image spread at the crop median": rule_typical_spread,
    "median / 7 MAD, floor = typical spread": rule_mad_floor,
}


def select_rule(crops: list[RoiCrop], n_boot: int, seed: int) -> dict:
    """Dev AUC of every candidate rule (model, in-process, no files)."""
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    seg = Segmenter(SegmentConfig(roi=True), device="cpu",
                    pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM)
    prepared = [seg.prepare(c.path) for c in crops]
    raws = [read_image(c.path, pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM) for c in crops]
    rows = {}
    for name, rule in CANDIDATE_RULES.items():
        t0 = time.perf_counter()
        scores = []
        for c, p, (raw, meta) in zip(crops, prepared, raws):
            image = rule(raw, meta).apply(raw)
            r = seg.detect(dataclasses.replace(p, image=image))
            scores.append(CropScore(c.stem, c.case, c.label, len(r.detections.mcs),
                                    float(r.prob.max()), trivial_statistics(raw)))
        table = auc_table(scores, DETECTOR_SCORES, n_boot, seed)
        rows[name] = {k: v.to_dict() for k, v in table.items()}
        rows[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: " + ", ".join(f"{k} {v.auc:.3f} [{v.ci[0]:.3f}, {v.ci[1]:.3f}]"
                                      for k, v in table.items()), flush=True)
    trivial = auc_table([CropScore(c.stem, c.case, c.label, 0, 0.0, trivial_statistics(raw))
                         for c, (raw, _) in zip(crops, raws)], TRIVIAL_STATS, n_boot, seed)
    return {"rules": rows, "trivial": {k: v.to_dict() for k, v in trivial.items()}}


def _fmt(d: dict) -> str:
    auc, ci = d.get("auc"), d.get("ci") or [None, None]
    if auc is None:
        return "n/a"
    return f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def write_selection(out: Path, result: dict, n_dev: int, n_cases: int) -> None:
    lines = [f"# ROI intensity rule: development split ({n_dev} crops, {n_cases} cases)", "",
             "Shipped model, `roi=True`, 0.085 mm; AUC with 95 % case-bootstrap CI.", "",
             "| rule | AUC n_mcs | AUC max_prob |", "|---|---|---|"]
    for name, r in result["rules"].items():
        lines.append(f"| {name} | {_fmt(r['n_mcs'])} | {_fmt(r['max_prob'])} |")
    lines += ["", "| trivial statistic | AUC |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result["trivial"].items()]
    lines += ["", _machine()]
    (out / "rule_selection.md").write_text("\n".join(lines) + "\n")
    (out / "rule_selection.json").write_text(json.dumps(result, indent=2) + "\n")


def _machine() -> str:
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores visible (shared), "
            "no GPU; `OMP_NUM_THREADS=1`.")


# ---------------------------------------------------------------------------------------------
# the measurement through segment --roi and evaluate


SPLITS = ("dev", "test")


def measure(out: Path, work: Path, n_boot: int = 1000, seed: int = 0,
            methods: tuple[str, ...] = ("model", "classical"), model: Path | None = None,
            splits: tuple[str, ...] = SPLITS, threshold: float | None = None) -> dict:
    """Segment the ``splits`` (of dev, test) with each method (``roi``, 0.085 mm) into ``work``
    and evaluate them (outside the repository: the maps are derived from real data); returns
    ``{split: {method: roi block of metrics.json}}`` and writes ``OUT/table.md``/``.json``.

    ``model``: the segmentor folder of method ``model`` (``None``: the shipped one);
    ``threshold``: its probability threshold (``None``: its operating point), which moves
    ``n_mcs`` only (``max_prob`` needs none). Each crop's scores are in
    ``WORK/eval/<split>-<method>/per_image.csv``."""
    from mcgenref.workflows import SegmentOptions, run_evaluate, run_segment

    if bad := set(splits) - set(SPLITS):
        raise SystemExit(f"unknown MAGIC-5 split(s): {', '.join(sorted(bad))}")
    root = list_roi_crops()
    dev, test = split_crops(root)
    truth = root[0].path.parents[1]
    table: dict = {}
    for split, crops in (("dev", dev), ("test", test)):
        if split not in splits:
            continue
        table[split] = {}
        for method in methods:
            pred = work / "pred" / f"{split}-{method}"
            t0 = time.perf_counter()
            run_segment([str(c.path) for c in crops], pred, SegmentOptions(
                model=model if method == "model" else None,
                threshold=threshold if method == "model" else None,
                method=method, roi=True, pixel_spacing=str(MAGIC5_PIXEL_SPACING_MM),
                device="cpu", show_progress=False, report=False, workers=0))
            seg_s = time.perf_counter() - t0
            metrics = run_evaluate(pred, truth, work / "eval" / f"{split}-{method}",
                                   n_bootstrap=n_boot, seed=seed, report=True)
            table[split][method] = dict(metrics["roi"], segment_s=round(seg_s, 1))
            print(f"{split} {method}: {metrics['summary_line']}", flush=True)
    write_table(out, table)
    return table


def split_lines(table: dict, heading: str = "##") -> list[str]:
    """Markdown of ``table`` (``measure``'s result): per split, each method's scores and the
    trivial statistics, AUC with its CI over cases (also ``benchmarks/quality.py``'s)."""
    lines: list[str] = []
    for split, by_method in table.items():
        any_block = next(iter(by_method.values()))
        lines += [f"{heading} {split}: {any_block['n_crops']} crops "
                  f"({any_block['n_calcification_crops']} calcification, "
                  f"{any_block['n_normal_crops']} normal), {any_block['n_cases']} cases", "",
                  "| score | AUC [95 % CI over cases] |", "|---|---|"]
        for method, block in by_method.items():
            for k in DETECTOR_SCORES:
                lines.append(f"| {method}: {k} | {_fmt(block['auc'][k])} |")
        for k in TRIVIAL_STATS:
            lines.append(f"| trivial: {k} | {_fmt(any_block['trivial_auc'][k])} |")
        lines.append("")
    return lines


def write_table(out: Path, table: dict) -> None:
    lines = ["# MAGIC-5 ROI AUC (segment --roi --pixel-spacing 0.085)", "",
             "Cases split by `mcgenref.datasets.magic5.split_crops` (seed 0). AUC with 95 % "
             "bootstrap CI over cases; primary score: the strongest probability (`max_prob`); "
             "`n_mcs`: MCs found at the method's operating point.", ""]
    lines += split_lines(table)
    lines.append(_machine())
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "magic5_roi")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mcgenref-magic5-roi"),
                    help="prediction and evaluation folders (derived from real data: keep them "
                    "out of the repository)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None,
                    help="segmentor folder of --method model (default: the shipped one)")
    ap.add_argument("--splits", default=",".join(SPLITS),
                    help="comma-separated MAGIC-5 splits to measure (default: dev,test)")
    ap.add_argument("--select-rule", action="store_true",
                    help="compare the candidate intensity rules on the development split")
    args = ap.parse_args()
    warnings.simplefilter("ignore", McGenRefWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.select_rule:
        dev, _ = split_crops(list_roi_crops())
        result = select_rule(dev, args.bootstrap, args.seed)
        write_selection(args.out, result, len(dev), len({c.case for c in dev}))
    else:
        measure(args.out, args.work, args.bootstrap, args.seed, model=args.model,
                splits=tuple(s for s in args.splits.split(",") if s))


if __name__ == "__main__":
    main()
