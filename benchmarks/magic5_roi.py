"""MAGIC-5 ROI AUC: ``segment --roi`` (a segmentor, classical DoG) beside the trivial statistics.

    python benchmarks/magic5_roi.py --out benchmarks/results/magic5_roi [--bootstrap 1000]
                                    [--work /tmp/mcgenref-magic5-roi] [--model DIR]
                                    [--splits dev,test]
    python benchmarks/magic5_roi.py --select-rule [--model DIR] --out benchmarks/results/magic5_roi
    python benchmarks/magic5_roi.py --refine [--generator DIR] --splits dev
                                    --out benchmarks/results/magic5_roi_refine_dev

The 78 MAGIC-5 cases (``$MCGENREF_DATA/magic5-microcal``, 60 x 60 px crops at 85 um) are split
by case into development and test (:func:`mcgenref.datasets.magic5.split_crops`, seed 0, half
each, stratified by the classes a case holds).

* ``--select-rule``: the candidate intensity rules of ROI mode (:data:`CANDIDATE_RULES`) on the
  DEVELOPMENT crops only: each crop is read and prepared by the library (``roi=True``), its
  normalised image replaced by the candidate's, and the shipped coarse model (or ``--model``)
  run (no files); AUC of the number of MCs found and of the strongest probability, with
  case-bootstrap CIs, in
  ``rule_selection.md`` / ``.json``. The chosen rule is the library's
  (:func:`mcgenref.inference.segment.fit_roi_normalization`).
* default: for each of development and test (``--splits``), ``run_segment`` with ``roi`` and
  ``--pixel-spacing 0.085`` (the same as ``mcgenref segment --roi --pixel-spacing 0.085``) for
  ``--method model`` (the shipped model, or ``--model``) and ``--method classical`` into
  ``WORK/pred/<split>-<method>/``, then
  ``evaluate`` of each folder against the MAGIC-5 folder (``WORK/eval/<split>-<method>/``), and
  ``table.md`` / ``table.json``: ROI AUC of each score and of the trivial statistics, with 95 %
  CIs over cases. ``benchmarks/quality.py`` may call :func:`measure` for its table.
  Without ``--model``, ``model`` is ``--model auto``, which at 0.085 mm is the shipped **fine**
  segmentor (:mod:`mcgenref.inference.model_choice`).
* ``--refine``: TT-GPR (``segment --roi --refine``, the shipped generator or ``--generator``)
  beside the same segmentor without it. ``--refine`` works with the coarse (0.2 mm) segmentor
  only, so ``model`` is then the shipped **coarse** one (or ``--model DIR``) and
  ``model+refine`` refines that same model; ``classical`` as before. Both model rows are
  recomputed (``overwrite``) so their seconds are real. Each crop is 26 px on the coarse grid:
  the library reflect-pads it to a segmentor window and refines it in that padded context
  (``roi_padding``). Per split: the paired AUC difference refine - plain of each detector
  score (:data:`mcgenref.evaluation.roi.DETECTOR_SCORES`) with a 95 % case-bootstrap CI
  (:func:`mcgenref.evaluation.roi.case_bootstrap_auc_difference`), both runs' seconds, and
  how many crops got a refinement window; in ``table.json`` under
  ``<split>.model+refine.paired_vs_plain`` and ``.tt_gpr``.

Real data is read from ``$MCGENREF_DATA`` (default ``../shared/data``) and never copied.
"""

from __future__ import annotations

import argparse
import csv
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
    expected_mc_area_mm2,
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
#: The candidate that ``segment --roi`` uses; the others are compared with it, paired.
LIBRARY_RULE = "median to mid-grey (bit-depth scale)"


def select_rule(crops: list[RoiCrop], n_boot: int, seed: int,
                model: Path | None = None) -> dict:
    """Dev AUC of every candidate rule (the segmentor folder ``model``, default the shipped
    coarse one; in-process, no files), and each rule's ``max_prob`` AUC minus the library
    rule's (:data:`LIBRARY_RULE`) with a paired 95 % case-bootstrap CI."""
    from mcgenref.evaluation.roi import case_bootstrap_auc_difference
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    seg = Segmenter(SegmentConfig(roi=True), model_path=model, device="cpu",
                    pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM)
    prepared = [seg.prepare(c.path) for c in crops]
    raws = [read_image(c.path, pixel_spacing_mm=MAGIC5_PIXEL_SPACING_MM) for c in crops]
    rows, max_probs = {}, {}
    for name, rule in CANDIDATE_RULES.items():
        t0 = time.perf_counter()
        scores = []
        for c, p, (raw, meta) in zip(crops, prepared, raws):
            image = rule(raw, meta).apply(raw)
            r = seg.detect(dataclasses.replace(p, image=image))
            scores.append(CropScore(c.stem, c.case, c.label, len(r.detections.mcs),
                                    float(r.prob.max()), trivial_statistics(raw),
                                    expected_mc_area_mm2(r.prob, p.region, p.spacing)))
        table = auc_table(scores, DETECTOR_SCORES, n_boot, seed)
        rows[name] = {k: v.to_dict() for k, v in table.items()}
        rows[name]["seconds"] = round(time.perf_counter() - t0, 1)
        max_probs[name] = [s.max_prob for s in scores]
        print(f"{name}: " + ", ".join(f"{k} {v.auc:.3f} [{v.ci[0]:.3f}, {v.ci[1]:.3f}]"
                                      for k, v in table.items()), flush=True)
    labels, cases = [c.label for c in crops], [c.case for c in crops]
    for name in rows:
        d, ci = case_bootstrap_auc_difference(max_probs[name], max_probs[LIBRARY_RULE], labels,
                                              cases, n_boot, seed)
        rows[name]["max_prob_minus_library_rule"] = {"difference": d, "ci": list(ci)}
    trivial = auc_table([CropScore(c.stem, c.case, c.label, 0, 0.0, trivial_statistics(raw), 0.0)
                         for c, (raw, _) in zip(crops, raws)], TRIVIAL_STATS, n_boot, seed)
    return {"rules": rows, "trivial": {k: v.to_dict() for k, v in trivial.items()}}


def _fmt(d: dict) -> str:
    auc, ci = d.get("auc"), d.get("ci") or [None, None]
    if auc is None:
        return "n/a"
    return f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def write_selection(out: Path, result: dict, n_dev: int, n_cases: int,
                    model: Path | None = None) -> None:
    who = f"Model `{model}`" if model else "Shipped coarse model"
    lines = [f"# ROI intensity rule: development split ({n_dev} crops, {n_cases} cases)", "",
             f"{who}, `roi=True`, 0.085 mm; AUC with 95 % case-bootstrap CI; the last column "
             f"is the paired difference from the library's rule ({LIBRARY_RULE}).", "",
             "| rule | AUC n_mcs | AUC max_prob | max_prob minus the library rule |",
             "|---|---|---|---|"]
    for name, r in result["rules"].items():
        d = r.get("max_prob_minus_library_rule")
        paired = ("n/a" if d is None
                  else f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
        lines.append(f"| {name} | {_fmt(r['n_mcs'])} | {_fmt(r['max_prob'])} | {paired} |")
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


#: The method of ``--refine``: the ``model`` row's segmentor with TT-GPR.
REFINE = "model+refine"


def measure(out: Path, work: Path, n_boot: int = 1000, seed: int = 0,
            methods: tuple[str, ...] = ("model", "classical"), model: Path | str | None = None,
            splits: tuple[str, ...] = SPLITS, threshold: float | None = None,
            generator: Path | None = None) -> dict:
    """Segment the ``splits`` (of dev, test) with each method (``roi``, 0.085 mm) into ``work``
    and evaluate them (outside the repository: the maps are derived from real data); returns
    ``{split: {method: roi block of metrics.json}}`` and writes ``OUT/table.md``/``.json``.

    ``model``: the segmentor of methods ``model`` and ``model+refine`` (a folder, or ``coarse``
    / ``fine``; ``None``: ``--model auto``); ``threshold``: its probability threshold
    (``None``: its operating point), which moves ``n_mcs`` only (``max_prob`` needs none);
    ``generator``: the generator of ``model+refine`` (``None``: the shipped one). With
    ``model+refine`` in ``methods`` (after ``model``), its block also holds ``paired_vs_plain``
    (:func:`paired_refine_difference` against ``model``) and ``tt_gpr``
    (:func:`refine_record`). Each crop's scores are in
    ``WORK/eval/<split>-<method>/per_image.csv``."""
    from mcgenref.workflows import SegmentOptions, run_evaluate, run_segment

    if bad := set(splits) - set(SPLITS):
        raise SystemExit(f"unknown MAGIC-5 split(s): {', '.join(sorted(bad))}")
    if REFINE in methods and ("model" not in methods
                              or methods.index("model") > methods.index(REFINE)):
        raise SystemExit(f"method {REFINE} needs method model before it (the paired comparison)")
    root = list_roi_crops()
    dev, test = split_crops(root)
    truth = root[0].path.parents[1]
    load_at_start = os.getloadavg()
    table: dict = {}
    for split, crops in (("dev", dev), ("test", test)):
        if split not in splits:
            continue
        table[split] = {}
        for method in methods:
            pred = work / "pred" / f"{split}-{method}"
            is_model = method in ("model", REFINE)
            t0 = time.perf_counter()
            run_segment([str(c.path) for c in crops], pred, SegmentOptions(
                model=model if is_model else None,
                threshold=threshold if is_model else None,
                method="model" if is_model else method, roi=True,
                pixel_spacing=str(MAGIC5_PIXEL_SPACING_MM), device="cpu", show_progress=False,
                report=False, workers=0, refine=method == REFINE,
                generator=generator if method == REFINE else None,
                # the refine comparison's seconds must be of a run, not of skipped images
                overwrite=is_model and REFINE in methods))
            seg_s = time.perf_counter() - t0
            evaluated = work / "eval" / f"{split}-{method}"
            metrics = run_evaluate(pred, truth, evaluated, n_bootstrap=n_boot, seed=seed,
                                   report=True)
            table[split][method] = dict(metrics["roi"], segment_s=round(seg_s, 1))
            table[split][method]["paired"] = paired_scores(
                read_crop_rows(evaluated / "per_image.csv"), metrics["roi"]["best_trivial"],
                n_boot, seed)
            if method == REFINE:
                plain = read_crop_rows(work / "eval" / f"{split}-model" / "per_image.csv")
                table[split][method]["paired_vs_plain"] = paired_refine_difference(
                    plain, read_crop_rows(evaluated / "per_image.csv"), n_boot, seed)
                table[split][method]["tt_gpr"] = refine_record(pred)
                # the machine is shared: what else ran beside the timed runs
                table[split][method]["load_average_1_5_15_min"] = {
                    "start": [round(x, 2) for x in load_at_start],
                    "end": [round(x, 2) for x in os.getloadavg()]}
            print(f"{split} {method}: {metrics['summary_line']}", flush=True)
    write_table(out, table, model=model, generator=generator)
    return table


def read_crop_rows(path: Path) -> dict[str, dict[str, str]]:
    """``{stem: row}`` of an ``evaluate`` ``per_image.csv`` of ROI crops."""
    with open(path, newline="") as f:
        return {r["stem"]: r for r in csv.DictReader(f)}


def paired_scores(rows: dict[str, dict], best_trivial: str, n_boot: int,
                  seed: int) -> dict[str, dict]:
    """Paired 95 % case-bootstrap CIs (one draw of cases scores both) over one run's crops
    (``{stem: row}`` of :func:`read_crop_rows`): each detector score's AUC minus the best
    trivial statistic's (``best_trivial``, best on these crops), and ``mc_area_mm2``'s minus
    ``max_prob``'s. ``{"<score> - <other>": {"difference", "ci"}}``."""
    from mcgenref.evaluation.roi import case_bootstrap_auc_difference

    stems = sorted(rows)
    labels = [int(rows[s]["label"]) for s in stems]
    cases = [rows[s]["case"] for s in stems]

    def col(name: str) -> list[float]:
        return [float(rows[s][name]) for s in stems]

    pairs = [(k, best_trivial) for k in DETECTOR_SCORES] + [("mc_area_mm2", "max_prob")]
    out = {}
    for a, b in pairs:
        d, ci = case_bootstrap_auc_difference(col(a), col(b), labels, cases, n_boot, seed)
        out[f"{a} - {b}"] = {"difference": d, "ci": list(ci)}
    return out


def paired_refine_difference(plain: dict[str, dict], refined: dict[str, dict], n_boot: int,
                             seed: int) -> dict[str, dict]:
    """Per detector score (:data:`mcgenref.evaluation.roi.DETECTOR_SCORES`): the AUC of
    ``plain`` and of ``refined`` (``{stem: row}`` with ``label``, ``case`` and the score, as
    :func:`read_crop_rows` gives), ``AUC(refined) - AUC(plain)`` with its paired 95 %
    case-bootstrap CI (one draw of cases scores both), and how many crops of each class
    refinement raised and lowered.
    Both must hold the same crops with the same truth."""
    from mcgenref.evaluation.roi import case_bootstrap_auc_difference, roc_auc

    if set(plain) != set(refined):
        raise SystemExit(f"the refined and plain runs hold different crops "
                         f"({len(set(plain) ^ set(refined))} in one only)")
    stems = sorted(plain)
    labels = [int(plain[s]["label"]) for s in stems]
    cases = [plain[s]["case"] for s in stems]
    if labels != [int(refined[s]["label"]) for s in stems] or \
            cases != [refined[s]["case"] for s in stems]:
        raise SystemExit("the refined and plain runs disagree on a crop's label or case")
    result = {}
    for score in DETECTOR_SCORES:
        a = [float(refined[s][score]) for s in stems]
        b = [float(plain[s][score]) for s in stems]
        d, ci = case_bootstrap_auc_difference(a, b, labels, cases, n_boot, seed)
        moved = {name: {cls: sum(1 for x, y, lab in zip(a, b, labels)
                                 if lab == value and (x > y if name == "raised" else x < y))
                        for cls, value in (("calcification", 1), ("normal", 0))}
                 for name in ("raised", "lowered")}
        result[score] = {"plain_auc": roc_auc(b, labels), "refine_auc": roc_auc(a, labels),
                         "difference": d, "ci": list(ci), "n_crops": len(stems),
                         "n_cases": len(set(cases)), **moved}
    return result


def refine_record(pred: Path) -> dict:
    """What TT-GPR did over a ``segment --refine`` folder (its ``<stem>_meta.json`` files):
    crops, crops with at least one window, windows, solves, TT-GPR seconds, the generator."""
    records = [json.loads(p.read_text())["detector"]["tt_gpr"]
               for p in sorted(pred.rglob("*_meta.json"))]
    return {
        "n_crops": len(records),
        "crops_with_windows": sum(r["windows"] > 0 for r in records),
        "windows": sum(r["windows"] for r in records),
        "solves": sum(r["solves"] for r in records),
        "unsettled": sum(r["unsettled"] for r in records),
        "window_px": sorted({r["window_px"] for r in records}),
        "refine_s": round(sum(r["refine_s"] for r in records), 1),
        "generator": records[0]["generator"] if records else None,
    }


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
                lines.append(f"| {method}: {k} | {_fmt(block['auc'].get(k, {}))} |")
        for k in TRIVIAL_STATS:
            lines.append(f"| trivial: {k} | {_fmt(any_block['trivial_auc'][k])} |")
        lines.append("")
        paired = [(m, k, d) for m, block in by_method.items()
                  for k, d in block.get("paired", {}).items()]
        if paired:
            lines += [f"Paired AUC differences on the {split} crops (95 % CI over cases, one "
                      "draw of cases scores both):", "",
                      "| method | difference | AUC difference [95 % CI] |", "|---|---|---|"]
            lines += [f"| {m} | {k} | {d['difference']:+.3f} "
                      f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] |" for m, k, d in paired]
            lines.append("")
    return lines


def refine_lines(table: dict, model: Path | str | None, generator: Path | None) -> list[str]:
    """Markdown of the paired refine - plain comparison of each split that has one."""
    lines: list[str] = []
    for split, by_method in table.items():
        block = by_method.get(REFINE)
        if block is None:
            continue
        tt, plain_s = block["tt_gpr"], by_method["model"]["segment_s"]
        gen = tt["generator"] or {}
        lines += [f"## {split}: `--refine` against the same segmentor without it", "",
                  f"Segmentor: `--model {model}`, with and without `--refine`; generator: "
                  f"{generator or 'shipped'} "
                  f"({gen.get('name', '?')}, sha256 {str(gen.get('sha256', '?'))[:12]}). "
                  "Difference = AUC(refine) - AUC(plain), paired 95 % CI over cases "
                  f"(each resample of cases scores both); {block['n_crops']} crops, "
                  f"{block['n_cases']} cases.", "",
                  "| score | plain AUC | refine AUC | refine - plain [95 % CI] | calcification "
                  "crops raised / lowered | normal crops raised / lowered |",
                  "|---|---|---|---|---|---|"]
        for k, d in block["paired_vs_plain"].items():
            up, down = d["raised"], d["lowered"]
            lines.append(f"| {k} | {d['plain_auc']:.3f} | {d['refine_auc']:.3f} | "
                         f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | "
                         f"{up['calcification']} / {down['calcification']} | "
                         f"{up['normal']} / {down['normal']} |")
        ratio = block["segment_s"] / plain_s if plain_s else float("nan")
        lines += ["", f"Seconds (segment, all {block['n_crops']} crops, one after the other): "
                  f"plain {plain_s:.1f}, refine {block['segment_s']:.1f} ({ratio:.2f}x); "
                  f"TT-GPR itself {tt['refine_s']:.1f} s; {tt['crops_with_windows']} of "
                  f"{tt['n_crops']} crops got a refinement window ({tt['windows']} windows of "
                  f"{', '.join(map(str, tt['window_px']))} px, {tt['solves']} solves, "
                  f"{tt['unsettled']} unsettled). Load average (1, 5, 15 min) of the shared "
                  f"machine at the start / end: {block['load_average_1_5_15_min']['start']} / "
                  f"{block['load_average_1_5_15_min']['end']}.", ""]
    return lines


def write_table(out: Path, table: dict, model: Path | str | None = None,
                generator: Path | None = None) -> None:
    lines = ["# MAGIC-5 ROI AUC (segment --roi --pixel-spacing 0.085)", "",
             "Cases split by `mcgenref.datasets.magic5.split_crops` (seed 0). AUC with 95 % "
             "bootstrap CI over cases; primary score: the strongest probability (`max_prob`); "
             "`n_mcs`: MCs found at the method's operating point; `mc_area_mm2`: the expected "
             "MC area (sum of the map x pixel area; an area only for a segmentor's "
             "probabilities, not for the classical method's contrast score).", ""]
    lines += split_lines(table)
    lines += refine_lines(table, model, generator)
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
                    help="segmentor folder of --method model (default: --model auto, at "
                    "0.085 mm the shipped fine one; with --refine or --select-rule the shipped "
                    "coarse one)")
    ap.add_argument("--splits", default=",".join(SPLITS),
                    help="comma-separated MAGIC-5 splits to measure (default: dev,test)")
    ap.add_argument("--select-rule", action="store_true",
                    help="compare the candidate intensity rules on the development split")
    ap.add_argument("--refine", action="store_true",
                    help="also segment --refine (method model+refine) with the same segmentor, "
                    "which is then the shipped coarse one unless --model is given, and compare "
                    "them paired")
    ap.add_argument("--generator", type=Path, default=None,
                    help="generator folder of --refine (default: the shipped one)")
    args = ap.parse_args()
    if args.generator is not None and not args.refine:
        raise SystemExit("--generator needs --refine")
    warnings.simplefilter("ignore", McGenRefWarning)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.select_rule:
        dev, _ = split_crops(list_roi_crops())
        result = select_rule(dev, args.bootstrap, args.seed, args.model)
        write_selection(args.out, result, len(dev), len({c.case for c in dev}), args.model)
    elif args.refine:
        # --refine supports the coarse (0.2 mm) segmentor only; auto would be fine at 0.085 mm
        measure(args.out, args.work, args.bootstrap, args.seed,
                methods=("model", REFINE, "classical"), model=args.model or "coarse",
                splits=tuple(s for s in args.splits.split(",") if s), generator=args.generator)
    else:
        measure(args.out, args.work, args.bootstrap, args.seed, model=args.model,
                splits=tuple(s for s in args.splits.split(",") if s))


if __name__ == "__main__":
    main()
