"""Label-free hard negatives: mine a segmentor's false clusters on normal mammograms.

    python recipes/mine_hard_negatives.py mine      --model DIR --out RUN [--threshold 0.5]
    python recipes/mine_hard_negatives.py finetune  --model DIR --out RUN --hard RUN/hard_negatives.json
                                                    [--steps 600] [--lr 1e-4] [--warmup 0]
                                                    [--batch-size 16] [--fraction 0.25] [--resume]
    python recipes/mine_hard_negatives.py measure   --model DIR --out RUN/eval --split calibration|test
    python recipes/mine_hard_negatives.py margins   --pred RUN/eval/pred --out RUN/margins [--margins 0,1,2,3,5]
    python recipes/mine_hard_negatives.py install   --run RUN --calibration RUN/eval/summary.json
    python recipes/mine_hard_negatives.py specks    --before PRED --after PRED --out FILE [--thresholds 0.5,0.9,0.98]

A normal mammogram holds no MC cluster, so every cluster the segmentor finds on one is a
false positive, and no label is needed to know it. ``mine`` segments normals with the current
model and writes the members of its false clusters as (image, row, col) in px and mm to
``RUN/hard_negatives.json``; ``finetune`` continues training from the model's weights with a
share of each batch cut around those centres (``LoopConfig.hard_negatives_path``,
``hard_negative_fraction``); then ``mine`` again with the new model (rounds).

Decisions (see docs/hard_negatives.md):

- **Which normals.** The *training* normals of :data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`
  (113). The test part is never touched. Mining on the calibration part would make the
  operating point chosen there no longer independent of training; the training normals are
  already the backgrounds the model was trained on (with synthetic MCs over them), and their
  own tissue's false clusters are still label-free negatives. So calibration keeps its one
  job: the operating point.
- **What is mined: the members of false clusters**, not every peak. What the cluster FROC
  counts is false *clusters*; a normal film may hold benign isolated calcifications (vascular,
  scattered), real specks the network should still mark as MCs, and an isolated strong peak
  is the most likely to be one. Members of a group of >= 3 peaks within 5 mm on a normal are
  tissue texture the network confuses with a cluster. ``--all-peaks`` mines every peak
  instead (for comparison).
- **Threshold.** Peaks at or above ``--threshold`` (default 0.5, the lowest threshold the
  operating-point sweep uses), clustered with the model's cluster rule at that threshold.
  The operating point is chosen again after each round and may move down (a model taught
  that tissue is background is more conservative), so the false clusters that would count
  there are mined too, not only those above the shipped 0.98. On the first 16 training
  normals with the shipped model: 56 cluster members at 0.5 (0.88 false clusters per
  image), 34 at 0.9, 21 at 0.98; every peak >= 0.9 would be 216.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

from default_segmentor import (  # noqa: E402
    PACKAGE_MODEL,
    choose_threshold,
    image_paths,
    install_model,
    segment_skin_margin_mm,
    split,
    train_config,
)

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_clusters, calc_refs  # noqa: E402

MINING_PART = "training"
DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------- segmenting


def segment(refs: list[str], model: Path | None, out: Path, skin_margin_mm: float | None = None,
            threshold: float = 0.5) -> Path:
    """Segment the mini-MIAS images ``refs`` into ``out`` (peaks >= ``threshold`` listed)."""
    from mcgenref.workflows import SegmentOptions, run_segment

    out.mkdir(parents=True, exist_ok=True)
    config_path = None
    if skin_margin_mm is not None:
        config_path = out / "segment_config.json"
        config_path.write_text(json.dumps({"skin_margin_mm": skin_margin_mm}) + "\n")
    run_segment([str(p) for p in image_paths(refs)], out,
                SegmentOptions(model=model, device="cpu", pixel_spacing=str(MIAS_PIXEL_SPACING_MM),
                               threshold=threshold, config_path=config_path, show_progress=False,
                               write_seg=False, report=False, overwrite=True))
    return out


def read_peaks(pred: Path, ref: str) -> list[dict]:
    """The peaks of ``<ref>_calcifications.csv`` (strongest first) as dicts of floats."""
    with (pred / f"{ref}_calcifications.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def cluster_rule(pred: Path, ref: str):  # noqa: ANN201
    from mcgenref.clusters import ClusterRule

    record = json.loads((pred / f"{ref}_clusters.json").read_text())
    return ClusterRule.from_dict(record["rule"])


def false_candidates(peaks: list[dict], threshold: float, rule, all_peaks: bool = False) -> list[dict]:  # noqa: ANN001
    """The peaks >= ``threshold`` that are members of a cluster at that threshold (or all of
    them with ``all_peaks``), each with its cluster's index (-1: none)."""
    from mcgenref.clusters import group_clusters

    kept = [p for p in peaks if p["peak_prob"] >= threshold]
    if not kept:
        return []
    points = [(p["y_mm"], p["x_mm"]) for p in kept]
    clusters = group_clusters(points, [p["peak_prob"] for p in kept], rule=rule)
    member_of = {int(m): k for k, c in enumerate(clusters) for m in c.members}
    return [
        {**p, "cluster": member_of.get(i, -1)}
        for i, p in enumerate(kept)
        if all_peaks or i in member_of
    ]


# --------------------------------------------------------------------------- commands


def cmd_mine(args: argparse.Namespace) -> None:
    parts = split()
    refs = parts.part(MINING_PART)
    assert not set(refs) & (set(parts.test) | set(parts.calibration) | set(calc_refs()))
    pred = Path(args.out) / "mining_pred"
    if args.reuse:  # the images segmented so far (a stopped run: <stem>_meta.json is written last)
        refs = [r for r in refs if (pred / f"{r}_meta.json").is_file()]
    else:
        segment(refs, args.model, pred, threshold=min(0.5, args.threshold))
    candidates, per_image = [], {}
    for ref, path in zip(refs, image_paths(refs)):
        found = false_candidates(read_peaks(pred, ref), args.threshold, cluster_rule(pred, ref),
                                 args.all_peaks)
        per_image[ref] = {"candidates": len(found),
                          "false_clusters": len({c["cluster"] for c in found if c["cluster"] >= 0})}
        for c in found:
            candidates.append({
                "image": str(path.resolve()), "ref": ref,
                "row": int(c["y"]), "col": int(c["x"]),
                "row_mm": round(c["y_mm"], 3), "col_mm": round(c["x_mm"], 3),
                "score": round(c["peak_prob"], 5), "cluster": int(c["cluster"]),
            })
    from mcgenref.inference.segment import default_model_path

    model_json = Path(args.model or default_model_path()) / "model.json"
    record = {
        "what": "false candidates of a segmentor on normal mammograms (no MC cluster on a "
                "normal, so every one is a false positive; no label used)",
        "model": str(args.model) if args.model else "shipped",
        "model_weights_sha256": json.loads(model_json.read_text())["weights"]["sha256"],
        "images": f"mini-MIAS normals, the '{MINING_PART}' part of the three-way split "
                  "(never the calibration or test part)",
        "pixel_spacing_mm": [MIAS_PIXEL_SPACING_MM, MIAS_PIXEL_SPACING_MM],
        "rule": ("every peak >= threshold" if args.all_peaks else
                 "peaks >= threshold that are members of a cluster at that threshold"),
        "threshold": args.threshold,
        "coordinates": "row, col: the peak pixel on the original image grid (origin top-left); "
                       "row_mm, col_mm = row, col x spacing",
        "n_images": len(refs),
        "refs": refs,
        "n_candidates": len(candidates),
        "false_clusters_per_image": sum(v["false_clusters"] for v in per_image.values()) / len(refs),
        "per_image": per_image,
        "candidates": candidates,
    }
    out = Path(args.out) / "hard_negatives.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("per_image", "candidates")}, indent=2))


def cmd_finetune(args: argparse.Namespace) -> None:
    import dataclasses

    from mcgenref.training import run_training

    parts = split()
    train = parts.part("training")
    config = dataclasses.replace(
        train_config(args.steps),
        # no re-warm-up: the weights are converged, a warm-up back to a high lr undoes them
        # (issue 13's first round: lr 5e-4 re-warmed made the model worse with or without
        # hard negatives); a low lr with cosine decay from the start
        warmup_steps=args.warmup, lr=args.lr, batch_size=args.batch_size,
        # a short run on a shared CPU: validate and checkpoint (resumable) four times
        val_every=max(1, min(250, args.steps // 4)), checkpoint_every=max(1, min(250, args.steps // 4)),
        init_from=str(Path(args.model).resolve()),
        hard_negatives_path=str(Path(args.hard).resolve()),
        hard_negative_fraction=args.fraction,
    )
    summary = run_training(
        "segmentor", Path(args.out),
        None if args.resume else image_paths(train), None if args.resume else config,
        device=args.device, resume=args.resume, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM,
        progress=False, stop_at_step=args.stop_at_step,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "val_history"}, indent=2))


def evaluate(pred: Path, out: Path) -> dict:
    from mcgenref.workflows import run_evaluate

    return run_evaluate(pred, data_root() / "mini-mias" / "Info.txt", out, "mias",
                        n_bootstrap=200, report=False)


def froc_at(metrics: dict, threshold: float) -> dict:
    """Cluster sensitivity and false clusters per normal at the FROC threshold nearest to
    ``threshold``."""
    froc = metrics["cluster"]["froc"]
    k = min(range(len(froc["thresholds"])), key=lambda i: abs(froc["thresholds"][i] - threshold))
    return {"threshold": froc["thresholds"][k], "sensitivity": froc["sensitivity"][k],
            "false_clusters_per_normal_image": froc["false_clusters_per_normal_image"][k]}


def sensitivity_at_fp(metrics: dict, fps: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)) -> dict:
    """Highest cluster sensitivity at <= each number of false clusters per normal."""
    froc = metrics["cluster"]["froc"]
    out = {}
    for fp in fps:
        best = [s for s, f in zip(froc["sensitivity"], froc["false_clusters_per_normal_image"])
                if s is not None and f is not None and f <= fp]
        out[str(fp)] = max(best) if best else 0.0
    return out


def cmd_measure(args: argparse.Namespace) -> None:
    """Cluster FROC on a split's normals + the 8 calcification images; with --split
    calibration the operating point is chosen (default_segmentor's rule) and written."""
    parts = split()
    refs = calc_refs() + parts.part(args.split)
    out = Path(args.out)
    pred = out / "pred"
    if not args.reuse:
        segment(refs, args.model, pred, skin_margin_mm=args.skin_margin, threshold=0.5)
    metrics = evaluate(pred, out / "eval")
    result = {"split": args.split, "model": str(args.model), "skin_margin_mm": args.skin_margin,
              "sensitivity_at_false_clusters_per_normal": sensitivity_at_fp(metrics)}
    if args.split == "calibration":
        try:
            result["operating_point"] = choose_threshold(metrics)
        except SystemExit as exc:  # no threshold qualifies: say so, keep the numbers
            result["operating_point"] = {"none": str(exc)}
    if args.threshold is not None:
        result["at_threshold"] = froc_at(metrics, args.threshold)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def narrowed(pred: Path, out: Path, margin_mm: float) -> Path:
    """A view of the prediction folder ``pred`` (segmented with skin margin 0) whose searched
    region is eroded by ``margin_mm`` (:func:`mcgenref.inference.segment.inside_skin_margin`,
    segment's own rule): ``<stem>_breast.png`` rewritten, every other file linked. The FROC's
    peaks are found inside that region. (Not bit-identical to segmenting with the margin:
    segment also fills the image outside its region before the network sees it.)"""
    import numpy as np
    from PIL import Image

    from mcgenref.inference.segment import inside_skin_margin
    from mcgenref.io.predictions import prediction_stems, read_meta

    out.mkdir(parents=True, exist_ok=True)
    for f in pred.iterdir():
        if not f.name.endswith("_breast.png") and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    for stem in prediction_stems(pred):
        spacing = tuple(read_meta(pred, stem).pixel_spacing_mm)
        region = np.asarray(Image.open(pred / f"{stem}_breast.png")) > 0
        region = inside_skin_margin(region, spacing, margin_mm)
        Image.fromarray((region * 255).astype(np.uint8)).save(out / f"{stem}_breast.png")
    return out


def cmd_margins(args: argparse.Namespace) -> None:
    """Cluster FROC on the calibration normals + the 8 calcification images against the skin
    margin, from one calibration run segmented with margin 0 (``measure --skin-margin 0``)."""
    rows = []
    for margin in (float(m) for m in args.margins.split(",")):
        out = Path(args.out) / f"margin_{margin:g}"
        metrics = evaluate(narrowed(Path(args.pred), out / "pred", margin), out / "eval")
        row = {"skin_margin_mm": margin,
               "sensitivity_at_false_clusters_per_normal": sensitivity_at_fp(metrics),
               "operating_point": choose_threshold(metrics)}
        if args.threshold is not None:
            row["at_threshold"] = froc_at(metrics, args.threshold)
        rows.append(row)
        print(json.dumps(row))
    (Path(args.out) / "margins.json").write_text(json.dumps(rows, indent=2) + "\n")


def cmd_specks(args: argparse.Namespace) -> None:
    """Real specks: the peaks (>= 0.5) of the ``--before`` model inside the labelled cluster
    circles of the 8 calcification images, and each model's probability there (the largest
    of its map within 0.5 mm of the peak, so a peak that moved by a pixel still counts):
    how many reach each threshold before and after."""
    import numpy as np

    from mcgenref.io.predictions import read_prediction

    before, after = Path(args.before), Path(args.after)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    probs = {"before": [], "after": []}
    for cluster in calc_clusters():
        peaks = read_peaks(before, cluster.ref)
        inside = [p for p in peaks if np.hypot(p["y"] - cluster.centre_row,
                                                p["x"] - cluster.centre_col) <= cluster.radius_px]
        for name, folder in (("before", before), ("after", after)):
            prob = read_prediction(folder, cluster.ref).prob
            r = int(round(0.5 / MIAS_PIXEL_SPACING_MM))
            for p in inside:
                y, x = int(p["y"]), int(p["x"])
                probs[name].append(float(prob[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].max()))
    result = {"specks": len(probs["before"]),
              "what": "peaks >= 0.5 of the before model inside the labelled cluster circles of "
                      f"the {len(calc_refs())} calcification images"}
    for t in thresholds:
        result[f"at_or_above_{t:g}"] = {name: int(sum(v >= t for v in vals)) for name, vals in probs.items()}
    (Path(args.out)).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def cmd_install(args: argparse.Namespace) -> None:
    """Install a fine-tuned round as the shipped film segmentor: its operating point is the one
    ``measure --split calibration`` chose (``summary.json``); the classical baseline's
    threshold does not depend on the segmentor and is kept from the model being replaced."""
    run = Path(args.run)
    summary = json.loads(Path(args.calibration).read_text())
    if summary.get("split") != "calibration" or "threshold" not in summary.get("operating_point", {}):
        raise SystemExit(f"{args.calibration}: not a calibration summary with an operating point")
    shipped = json.loads((PACKAGE_MODEL / "model.json").read_text())["operating_point"]
    margin = summary["skin_margin_mm"]
    if margin is None:  # measured at segment's default margin
        margin = segment_skin_margin_mm()
    points = {
        "model": {**summary["operating_point"], "skin_margin_mm": margin},
        "classical": {"threshold": shipped["classical_threshold"]},
        "chosen_on": (
            f"cluster FROC on the {len(calc_refs())} mini-MIAS calcification images (development "
            f"data) and the {len(split().calibration)} calibration-part normals segmented at "
            f"skin margin {margin:g} mm (recipes/mine_hard_negatives.py measure --split "
            f"calibration --skin-margin {margin:g}; the margin chosen by the margins sweep); "
            "rule: highest cluster "
            "sensitivity at <= 1 false cluster per normal image, ties to the highest threshold; "
            "classical_threshold kept from the model this one replaced"
        ),
    }
    install_model(
        run / "model", points, json.loads((run / "config.json").read_text()),
        f"recipes/mine_hard_negatives.py: mine -> finetune rounds ending in {run.name} "
        "(docs/hard_negatives.md)",
        seen_extra={"training": "trained on: backgrounds of its synthetic training patches, and "
                                "patches centred on its predecessors' false candidates on them "
                                "(hard negatives, no label)"},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mine")
    m.add_argument("--model", type=Path, default=None)
    m.add_argument("--out", required=True)
    m.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    m.add_argument("--all-peaks", action="store_true")
    m.add_argument("--reuse", action="store_true",
                   help="mine the images already in OUT/mining_pred (no segmenting)")
    f = sub.add_parser("finetune")
    f.add_argument("--model", type=Path, required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--hard", required=True)
    f.add_argument("--steps", type=int, default=600)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--warmup", type=int, default=0, help="warm-up steps (default 0: no re-warm)")
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--fraction", type=float, default=0.25,
                   help="share of each batch cut around the mined centres; 0 = the control run")
    f.add_argument("--device", default="auto")
    f.add_argument("--resume", action="store_true")
    f.add_argument("--stop-at-step", type=int, default=None)
    e = sub.add_parser("measure")
    e.add_argument("--model", type=Path, default=None)
    e.add_argument("--out", required=True)
    e.add_argument("--split", choices=("calibration", "test"), required=True)
    e.add_argument("--threshold", type=float, default=None)
    e.add_argument("--skin-margin", type=float, default=None, help="default: segment's")
    e.add_argument("--reuse", action="store_true")
    g = sub.add_parser("margins")
    g.add_argument("--pred", required=True, help="a calibration run's pred, skin margin 0")
    g.add_argument("--out", required=True)
    g.add_argument("--margins", default="0,1,2,3,5")
    g.add_argument("--threshold", type=float, default=None)
    i = sub.add_parser("install", help="install a round as the shipped film segmentor")
    i.add_argument("--run", required=True, help="a finetune run folder (holding model/)")
    i.add_argument("--calibration", required=True, help="its measure --split calibration summary.json")
    s = sub.add_parser("specks")
    s.add_argument("--before", required=True, help="pred folder holding the calcification images")
    s.add_argument("--after", required=True)
    s.add_argument("--thresholds", default="0.5,0.9,0.98")
    s.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args()
    {"mine": cmd_mine, "finetune": cmd_finetune, "measure": cmd_measure,
     "margins": cmd_margins, "specks": cmd_specks, "install": cmd_install}[args.cmd](args)


if __name__ == "__main__":
    main()
