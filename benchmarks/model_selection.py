"""Compare candidate segmentors on DEVELOPMENT data only, to choose the ones to ship (issue 13).

    python benchmarks/model_selection.py --model NAME=DIR [--model NAME=DIR ...] --out DIR
                                         [--work DIR] [--bootstrap 1000] [--synthetic 200]
                                         [--cbis-held-out DIR] [--no-roi]

No test data is touched here (mini-MIAS ``test`` normals, the MAGIC-5 test split, a synthetic
set on the test normals): ``benchmarks/quality.py`` scores the chosen models on them once.
For each model (the first ``--model`` is the reference of the paired differences):

1. **mini-MIAS cluster FROC** on the 8 calcification images + the 20 ``calibration`` normals
   (:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`), as ``benchmarks/quality.py``
   scores them: ``segment`` (the model's recorded threshold, else 0.5: the maps do not depend
   on it), then ``evaluate`` (detections = peaks of the map, merged clusters); sensitivity at
   0.125 ... 2 false clusters per normal with bootstrap CIs over images, and the operating
   point that ``recipes/default_segmentor.py``'s ``choose_threshold`` rule picks on this FROC.
   **This is where operating points are chosen.**
2. The model's **operating threshold** for what follows: its recorded ``operating_point`` where
   it has one, else (a fresh run's ``model/``) the rule's choice of step 1; the table says which.
3. **MAGIC-5 ROI AUC** on the development split only (``benchmarks/magic5_roi.py``'s
   ``measure``, ``splits=("dev",)``, at the operating threshold): AUC of ``max_prob`` (primary),
   ``n_mcs`` and ``mc_area_mm2`` beside the trivial statistics, case-bootstrap CIs, and paired
   case-bootstrap CIs (:func:`mcgenref.evaluation.roi.case_bootstrap_auc_difference`) of the model's
   ``max_prob`` AUC minus the best trivial statistic's (best on these crops) and minus the
   reference model's.
4. **Synthetic**, at the model's spacing (``benchmarks/quality.py``'s :func:`synthetic_set`):
   a set on the calibration normals with the development seed :data:`DEV_SYNTHETIC_SEED`
   (0.2 mm: as quality.py's test set; a finer model: the normals resampled to its spacing,
   85 um synthesis preset) and, for a model finer than 0.15 mm, a set on the held-out
   CBIS-DDSM woman's cached 0.1 mm views (``recipes/fine_segmentor.py backgrounds``;
   ``--cbis-held-out``). Pooled Dice and pixel recall, object sensitivity and false
   components per 1024 x 1024 px of image at the operating threshold, bootstrap CIs over patches.

Writes ``OUT/table.md`` and ``OUT/table.json`` (machine, load average, date, which data chose
what). Prediction folders (derived from real data) go to ``--work`` (kept, and reused on a
rerun: ``WORK/<name>/pred-model`` is laid out as quality.py's ``--work``, so
``quality.py --model DIR --work WORK/<name>`` segments only the test normals anew), else to a
temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))
sys.path.insert(0, str(REPO / "benchmarks"))

import default_segmentor as recipe  # noqa: E402
import fine_segmentor  # noqa: E402
import quality  # noqa: E402

from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0)
#: Base seed of the development synthetic sets: neither training's (0, 1_000_003), nor the test
#: set's (quality.SYNTHETIC_SEED), nor TT-GPR tuning's (31_337_001).
DEV_SYNTHETIC_SEED = 246_813_579
CBIS_HELD_OUT = fine_segmentor.CACHE / fine_segmentor.CBIS_HELD_OUT[0]
#: The spacing the cached CBIS-DDSM views record (recipes/fine_segmentor.py backgrounds).
CBIS_CACHE_SPACING_MM = fine_segmentor.FINE_SPACING_MM

CHOSEN_ON = {
    "operating points": "mini-MIAS cluster FROC (peaks, merged clusters) on the 8 calcification "
                        "images + the 20 calibration normals; rule: recipes/default_segmentor.py "
                        "choose_threshold (highest sensitivity at <= 1 false cluster per normal, "
                        "ties to the highest threshold)",
    "model comparison": "the same FROC; MAGIC-5 ROI AUC on the development split "
                        "(split_crops seed 0); synthetic sets on the calibration normals "
                        f"(seed {DEV_SYNTHETIC_SEED}) and, for fine models, on the held-out "
                        "CBIS-DDSM woman P_00820",
    "never touched": "mini-MIAS test normals, MAGIC-5 test split, synthetic sets on the test "
                     "normals (benchmarks/quality.py, once, for the chosen models)",
}


def parse_models(specs: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` pairs, in order; each DIR a segmentor folder."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"error: --model {spec!r}: expected NAME=DIR")
        if name in models:
            raise SystemExit(f"error: --model {name!r} given twice")
        path = Path(folder)
        if not (path / "model.json").is_file() or not (path / "model.safetensors").is_file():
            raise SystemExit(f"error: --model {name}: {path} holds no model.json + "
                             "model.safetensors")
        models[name] = path
    if not models:
        raise SystemExit("error: give at least one --model NAME=DIR")
    return models


def recorded_threshold(model: Path) -> float | None:
    op = json.loads((model / "model.json").read_text()).get("operating_point")
    return float(op["threshold"]) if op and "threshold" in op else None


def mias_froc(model: Path, work: Path, n_boot: int) -> dict:
    """Segment the calcification images + calibration normals with ``model`` into
    ``work/pred-model`` (resumed), evaluate them, and apply the operating-point rule."""
    from mcgenref.workflows import SegmentOptions, run_segment

    stems = calc_refs() + recipe.split().part("calibration")
    folder = work / "pred-model"
    t0 = time.perf_counter()
    summary = run_segment([str(p) for p in recipe.image_paths(stems)], folder, SegmentOptions(
        model=model, device="auto", pixel_spacing=str(MIAS_PIXEL_SPACING_MM), method="model",
        threshold=recorded_threshold(model) or 0.5, show_progress=False, report=False))
    done = sum(r["status"] == "done" for r in summary["rows"])
    seconds = (time.perf_counter() - t0) / done if done else None
    metrics = quality.evaluate_view(folder, stems, work, "model-calibration", n_boot)
    froc = metrics["cluster"]["froc"]
    try:
        chosen = recipe.choose_threshold(metrics)
    except SystemExit as exc:  # no threshold qualifies: say so, keep the numbers
        chosen = {"none": str(exc)}
    return {"n_images": len(stems), "n_normals": len(recipe.split().part("calibration")),
            "at": {f"{k:g}": froc["sensitivity_at"].get(f"{k:g}") for k in FP_RATES},
            "mean_sensitivity_1_8_to_8": froc.get("mean_sensitivity_1_8_to_8"),
            "rule_choice": chosen, "images_segmented": done, "seconds_per_image": seconds}


def operating_threshold(model: Path, froc: dict) -> tuple[float | None, str]:
    """The threshold the other measures use, and where it came from."""
    recorded = recorded_threshold(model)
    if recorded is not None:
        return recorded, "recorded in model.json (operating_point.threshold)"
    if "threshold" in froc["rule_choice"]:
        return froc["rule_choice"]["threshold"], "chosen here by the rule (no operating_point)"
    return None, "none: no operating_point and no threshold meets the rule"


def roi_dev(model: Path, work: Path, threshold: float | None, n_boot: int) -> dict:
    """MAGIC-5 development split through ``magic5_roi.measure`` (its table to ``work``)."""
    import magic5_roi  # noqa: PLC0415

    # a recorded operating point is segment's default: pass none (the folder is then the one
    # quality.py --work WORK/<name> would write, and reusable by it)
    table = magic5_roi.measure(work / "magic5_roi", work / "magic5_roi-work", n_boot,
                               methods=("model",), model=model, splits=("dev",),
                               threshold=None if recorded_threshold(model) is not None
                               else threshold)
    return table["dev"]["model"]


def read_crop_scores(work: Path) -> dict[str, dict]:
    """``{stem: row}`` of the development crops' ``per_image.csv`` written by ``evaluate``."""
    path = work / "magic5_roi-work" / "eval" / "dev-model" / "per_image.csv"
    with open(path, newline="") as f:
        return {r["stem"]: r for r in csv.DictReader(f)}


def paired_roi(crops: dict[str, dict[str, dict]], blocks: dict[str, dict], reference: str,
               n_boot: int) -> dict:
    """Paired case-bootstrap CIs of ``max_prob`` AUC differences: each model minus the best
    trivial statistic (as ``magic5_roi.measure`` computed it, in ``blocks[name]["paired"]``),
    and each model minus ``reference`` (and every other pair)."""
    from mcgenref.evaluation.roi import PRIMARY_SCORE, case_bootstrap_auc_difference

    stems = sorted(set.intersection(*(set(c) for c in crops.values())))
    first = crops[reference]
    labels = [int(first[s]["label"]) for s in stems]
    cases = [first[s]["case"] for s in stems]

    def values(name: str, column: str) -> list[float]:
        return [float(crops[name][s][column]) for s in stems]

    def diff(a: list[float], b: list[float]) -> dict:
        d, ci = case_bootstrap_auc_difference(a, b, labels, cases, n_boot, 0)
        return {"difference": d, "ci": list(ci)}

    out: dict = {"n_crops": len(stems), "score": PRIMARY_SCORE, "vs_best_trivial": {},
                 "pairs": {}}
    for name in crops:
        best = blocks[name]["best_trivial"]
        out["vs_best_trivial"][name] = {"best_trivial": best,
                                        **blocks[name]["paired"][f"{PRIMARY_SCORE} - {best}"]}
    names = list(crops)
    for a, b in combinations(names, 2):
        if reference in (a, b):  # reference first: "model - reference"
            a, b = (b, a) if a == reference else (a, b)
        out["pairs"][f"{a} - {b}"] = diff(values(a, PRIMARY_SCORE), values(b, PRIMARY_SCORE))
    return out


def synthetic_dev(model: Path, threshold: float | None, n: int, n_boot: int,
                  cbis: Path) -> dict:
    """Synthetic sets at the model's spacing: calibration normals; CBIS held-out (fine)."""
    if threshold is None:
        return {"note": "no operating threshold: not scored"}
    spacing = quality.model_spacing_mm(model)
    sets = {"calibration normals": (recipe.image_paths(recipe.split().part("calibration")),
                                    MIAS_PIXEL_SPACING_MM)}
    out: dict = {}
    if spacing < quality.FINE_BELOW_MM:
        views = sorted(cbis.glob("*.dcm"))
        if views:
            sets["CBIS-DDSM held-out woman P_00820"] = (views, CBIS_CACHE_SPACING_MM)
        else:
            out["CBIS-DDSM held-out woman P_00820"] = {
                "note": f"not measured: no cached views in {cbis} (run "
                        "'python recipes/fine_segmentor.py backgrounds')"}
    for name, (paths, source_spacing) in sets.items():
        t0 = time.perf_counter()
        samples, how = quality.synthetic_set(model, paths, n, DEV_SYNTHETIC_SEED, source_spacing)
        probs = quality.model_probabilities(model, samples)
        out[name] = {**quality.score_probabilities(probs, samples, threshold, n_boot),
                     "n_patches": n, "patch": f"{how}, {len(paths)} images",
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def measure_model(model: Path, work: Path, args: argparse.Namespace) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    froc = mias_froc(model, work, args.bootstrap)
    threshold, source = operating_threshold(model, froc)
    meta = json.loads((model / "model.json").read_text())
    row = {"folder": str(model), "model_name": meta.get("name"),
           "pixel_spacing_mm": quality.model_spacing_mm(model),
           "parameters": meta.get("weights", {}).get("parameters"),
           "mias_froc": froc, "operating_threshold": threshold, "threshold_source": source}
    if not args.no_roi:
        row["magic5_dev"] = roi_dev(model, work, threshold, args.bootstrap)
    row["synthetic"] = synthetic_dev(model, threshold, args.synthetic, args.bootstrap,
                                     args.cbis_held_out)
    return row


# ---------------------------------------------------------------------------------------------
# the table


FC = "false_components_per_1024px"


def _fmt(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _ci(v: float | None, ci: list | None, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if not ci or ci[0] is None:
        return _fmt(v, nd)
    return f"{_fmt(v, nd)} [{_fmt(ci[0], nd)}, {_fmt(ci[1], nd)}]"


def _auc(block: dict | None) -> str:
    return "n/a" if not block else _ci(block.get("auc"), block.get("ci"), 3)


def table_lines(result: dict) -> list[str]:
    models = result["models"]
    lines = [
        "# Model selection on development data", "",
        f"`python benchmarks/model_selection.py {result['command']}` on {result['machine']}, "
        f"load average {result['load_average']} at the start, {result['date']}; "
        f"{result['runtime_s']} s. Reference model (paired differences): "
        f"`{result['reference']}`.", "",
        "Which data chose what:", "",
        *(f"- **{k}**: {v}" for k, v in result["chosen_on"].items()), "",
        "## Summary", "",
        "| model | spacing | parameters | operating threshold | sens @ 0.5 FP (calibration) "
        "| MAGIC-5 dev AUC max_prob | synthetic Dice (calibration) | false components / 1024 px "
        "| s / mini-MIAS image |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        at = m["mias_froc"]["at"].get("0.5")
        syn = m["synthetic"].get("calibration normals", {})
        lines.append(
            f"| {name} | {m['pixel_spacing_mm']:g} mm | {m['parameters']} | "
            f"{_fmt(m['operating_threshold'], 3)} | "
            f"{_ci(at['sensitivity'], at['ci']) if at else 'n/a'} | "
            f"{_auc(m.get('magic5_dev', {}).get('auc', {}).get('max_prob'))} | "
            f"{_ci(syn.get('pooled', {}).get('dice'), syn.get('ci', {}).get('dice'), 3)} | "
            f"{_ci(syn.get(FC), syn.get('ci', {}).get(FC), 1)} | "
            f"{_fmt(m['mias_froc']['seconds_per_image'], 1)} |")
    lines += [
        "", "## mini-MIAS cluster FROC: 8 calcification images + 20 calibration normals", "",
        "Peaks of the probability map, merged clusters (`evaluate`); sensitivity at a number of "
        "false clusters per calibration normal, 95 % bootstrap CIs (images resampled). *Rule's "
        "choice*: `choose_threshold` on this FROC (where the operating point is chosen); "
        "*used*: the threshold of the ROI and synthetic measures below.", "",
        "| model | " + " | ".join(f"sens @ {k:g} FP" for k in FP_RATES)
        + " | mean 1/8-8 | rule's choice: t, sens, FP/normal | used threshold (source) |",
        "|---|" + "---|" * (len(FP_RATES) + 3)]
    for name, m in models.items():
        f = m["mias_froc"]
        cells = [("n/a" if f["at"].get(f"{k:g}") is None else
                  _ci(f["at"][f"{k:g}"]["sensitivity"], f["at"][f"{k:g}"]["ci"])) for k in FP_RATES]
        cells.append(_fmt(f["mean_sensitivity_1_8_to_8"], 3))
        ch = f["rule_choice"]
        cells.append(ch["none"] if "none" in ch else
                     f"t={ch['threshold']:.3f}: {_fmt(ch['sensitivity'])}, "
                     f"{_fmt(ch['false_clusters_per_normal_image'])}")
        cells.append(f"{_fmt(m['operating_threshold'], 3)} ({m['threshold_source']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += roi_lines(result) + synthetic_lines(result)
    return lines


def roi_lines(result: dict) -> list[str]:
    from mcgenref.evaluation.roi import TRIVIAL_STATS

    models = result["models"]
    if result.get("no_roi"):
        return ["", "## MAGIC-5 ROI AUC (development split)", "", "Not measured (`--no-roi`).", ""]
    any_block = next(iter(models.values()))["magic5_dev"]
    lines = [
        "", "## MAGIC-5 ROI AUC (development split only)", "",
        f"{any_block['n_crops']} crops ({any_block['n_calcification_crops']} calcification, "
        f"{any_block['n_normal_crops']} normal), {any_block['n_cases']} cases "
        "(`split_crops`, seed 0), `segment --roi --pixel-spacing 0.085` at the used threshold "
        "(it moves `n_mcs` only); AUC with 95 % bootstrap CIs over cases.", "",
        "| model | AUC max_prob | AUC n_mcs | AUC mc_area_mm2 | max_prob - best trivial "
        "(paired CI) |", "|---|---|---|---|---|"]
    paired = result["magic5_paired"]
    for name, m in models.items():
        b = m["magic5_dev"]
        v = paired["vs_best_trivial"][name]
        lines.append(f"| {name} | {_auc(b['auc']['max_prob'])} | {_auc(b['auc']['n_mcs'])} | "
                     f"{_auc(b['auc'].get('mc_area_mm2'))} | "
                     f"{_ci(v['difference'], v['ci'], 3)} (vs {v['best_trivial']}) |")
    lines += ["", "| trivial statistic | AUC |", "|---|---|"]
    lines += [f"| {k} | {_auc(any_block['trivial_auc'][k])} |" for k in TRIVIAL_STATS]
    if paired["pairs"]:
        lines += ["", f"Paired differences of the `max_prob` AUC (one draw of cases scores "
                  f"both; {paired['n_crops']} crops):", "",
                  "| pair | AUC difference [95 % CI] |", "|---|---|"]
        lines += [f"| {k} | {_ci(v['difference'], v['ci'], 3)} |"
                  for k, v in paired["pairs"].items()]
    return lines + [""]


def synthetic_lines(result: dict) -> list[str]:
    lines = [
        "## Synthetic sets at each model's spacing (exact masks)", "",
        "At the used threshold; pooled pixel metrics, object sensitivity (visible MCs matched "
        "within 1 mm) and false components (unmatched predicted components) per 1024 x 1024 px "
        "of image: per patch x 1024² / patch² (a 256 px patch counts 1/16; at 0.1 mm such an "
        "image covers a quarter of the breast area it covers at 0.2 mm); 95 % bootstrap CIs "
        "over patches.", "",
        "| model | set | patches | Dice | pixel recall | object sensitivity | "
        "false components / 1024 px |", "|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        for set_name, s in m["synthetic"].items():
            if "note" in s or not isinstance(s, dict):
                lines.append(f"| {name} | {set_name} | | {s.get('note', s)} | | | |")
                continue
            ci = s["ci"]
            lines.append(
                f"| {name} | {set_name} ({s['patch']}) | {s['n_patches']} | "
                f"{_ci(s['pooled']['dice'], ci.get('dice'), 3)} | "
                f"{_ci(s['pooled']['recall'], ci.get('recall'), 3)} | "
                f"{_ci(s['object_sensitivity'], ci.get('object_sensitivity'), 3)} | "
                f"{_ci(s[FC], ci.get(FC), 1)} |")
    return lines + [""]


def parse_threshold(spec: str) -> tuple[str, float]:
    name, _, value = spec.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise SystemExit(f"error: --synthetic-only {spec!r}: expected NAME=THRESHOLD") from None


def synthetic_only(models: dict[str, Path], thresholds: dict[str, float],
                   args: argparse.Namespace) -> None:
    """The synthetic development sets alone, each model at its given threshold (same patches
    for every model of one spacing: the same seed and backgrounds)."""
    from mcgenref.io.atomic import write_bytes_atomic, write_json_atomic

    missing = set(models) - set(thresholds)
    if missing:
        raise SystemExit(f"error: --synthetic-only needs a threshold for {', '.join(sorted(missing))}")
    result = {"command": " ".join(sys.argv[1:]), "machine": quality._machine(),
              "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
              "models": {name: {"threshold": thresholds[name],
                                "synthetic": synthetic_dev(model, thresholds[name], args.synthetic,
                                                           args.bootstrap, args.cbis_held_out)}
                         for name, model in models.items()}}
    write_json_atomic(args.out / "synthetic.json", json.loads(json.dumps(result, default=float)))
    lines = ["# Synthetic development sets, models at given thresholds", "",
             f"`python benchmarks/model_selection.py {result['command']}` on {result['machine']} "
             f"(load average {result['load_average']}).", "", *synthetic_lines(result)]
    write_bytes_atomic(args.out / "synthetic.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                    help="a candidate segmentor folder (repeat; the first is the reference)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the prediction folders here, WORK/<name>/ (derived from real "
                    "data: outside the repository); default: a temporary folder, deleted")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--synthetic", type=int, default=200, help="patches per synthetic set")
    ap.add_argument("--cbis-held-out", type=Path, default=CBIS_HELD_OUT,
                    help="the held-out CBIS-DDSM woman's cached 0.1 mm views (fine models)")
    ap.add_argument("--no-roi", action="store_true", help="leave out the MAGIC-5 ROI AUC")
    ap.add_argument("--synthetic-only", action="append", default=[], metavar="NAME=T",
                    help="only the synthetic sets, each model at the threshold T given here "
                    "(its operating point as chosen elsewhere on development data, e.g. by "
                    "recipes/mine_hard_negatives.py measure); repeat per model")
    args = ap.parse_args()
    models = parse_models(args.model)
    if args.bootstrap < 1 or args.synthetic < 1:
        raise SystemExit("error: --bootstrap and --synthetic must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.synthetic_only:
        synthetic_only(models, dict(parse_threshold(v) for v in args.synthetic_only), args)
        return
    t0 = time.perf_counter()
    result: dict = {
        "command": " ".join(sys.argv[1:]), "machine": quality._machine(),
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reference": next(iter(models)), "chosen_on": CHOSEN_ON, "no_roi": args.no_roi,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        for name, model in models.items():
            print(f"{name}: {model}", flush=True)
            result["models"][name] = measure_model(model, root / name, args)
        if not args.no_roi:
            crops = {name: read_crop_scores(root / name) for name in models}
            blocks = {name: m["magic5_dev"] for name, m in result["models"].items()}
            result["magic5_paired"] = paired_roi(crops, blocks, result["reference"],
                                                 args.bootstrap)
    result["runtime_s"] = round(time.perf_counter() - t0, 1)
    from mcgenref.io.atomic import write_bytes_atomic, write_json_atomic

    write_json_atomic(args.out / "table.json", json.loads(json.dumps(result, default=float)))
    lines = table_lines(result)
    write_bytes_atomic(args.out / "table.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
