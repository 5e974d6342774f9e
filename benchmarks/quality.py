"""Quality of the default model against the classical baseline, with bootstrap 95 % CIs.

    python benchmarks/quality.py [--model DIR] [--out benchmarks/results/quality] [--bootstrap 1000]

1. Real images, cluster level: both methods segment the 8 mini-MIAS calcification images
   (development data: never trained on) and the normals of the ``test`` part of the split
   (held-out women, never seen in training nor used to choose anything; the 19 images of
   :data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`); ``mcgenref evaluate``
   scores them against Info.txt (cluster FROC: sensitivity vs false clusters per normal image).
2. Synthetic pixel level: a synthetic validation set made on the ``test`` normals with seeds
   the training never used; the model and the classical score, each at its operating
   threshold, against the exact masks (pooled pixel metrics with bootstrap CIs, object
   sensitivity and false positives per patch).

Writes table.md, table.json and froc_clusters.png (both methods on one plot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

import default_segmentor as recipe  # noqa: E402

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
SYNTHETIC_SEED = 987_654_321  # never used by training (its seeds are 0 and 1_000_003)


def real_clusters(model: Path, work: Path, n_boot: int) -> dict:
    from mcgenref.workflows import SegmentOptions, run_evaluate, run_segment

    test = recipe.split().part("test")  # reported quality: the held-out test women only
    inputs = [str(p) for p in recipe.image_paths(calc_refs() + test)]
    results = {}
    for method in ("model", "classical"):
        pred = work / f"pred-{method}"
        t0 = time.perf_counter()
        run_segment(inputs, pred, SegmentOptions(
            model=model if method == "model" else None, device="auto",
            pixel_spacing=str(MIAS_PIXEL_SPACING_MM), method=method,
            threshold=_operating_threshold(model, method), overwrite=True, show_progress=False,
        ))
        seconds = time.perf_counter() - t0
        metrics = run_evaluate(pred, data_root() / "mini-mias" / "Info.txt",
                               work / f"eval-{method}", "mias", n_bootstrap=n_boot)
        results[method] = {"metrics": metrics, "seconds": seconds, "n_images": len(inputs)}
    return results


def _operating_threshold(model: Path, method: str) -> float:
    meta = json.loads((model / "model.json").read_text())
    op = meta.get("operating_point", {})
    if method == "model":
        return float(op.get("threshold", 0.5))
    return float(op.get("classical_threshold", 0.5))


def synthetic_pixels(model: Path, n: int, n_boot: int) -> dict:
    from mcgenref.evaluation.synthetic import refined_probabilities, score_synthetic, segmentor_logits
    from mcgenref.inference.classical import ClassicalConfig, classical_score
    from mcgenref.models.checkpoint import load_model

    test = recipe.split().part("test")
    net, _ = load_model(model, "cpu")
    patch = 256
    samples = recipe.synthetic_patches(test, n, SYNTHETIC_SEED, patch)
    thresholds = {m: _operating_threshold(model, m) for m in ("model", "classical")}
    probs = {
        "model": refined_probabilities(samples, segmentor_logits(net, samples)),
        "classical": [classical_score(s.image, tuple(s.record["spacing_mm"]), ClassicalConfig()) for s in samples],
    }
    out = {m: score_synthetic(probs[m], samples, thresholds[m]).summary(
        n_boot, metrics=("dice", "recall", "precision")) for m in thresholds}
    out["n_patches"] = n
    out["patch"] = f"{patch} px at {MIAS_PIXEL_SPACING_MM} mm, test-part normals, seed {SYNTHETIC_SEED}"
    return out


def _fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def plot(real: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method, colour in (("model", "tab:blue"), ("classical", "tab:orange")):
        f = real[method]["metrics"]["cluster"]["froc"]
        x = np.array([np.nan if v is None else v for v in f["false_clusters_per_normal_image"]])
        y = np.array([np.nan if v is None else v for v in f["sensitivity"]])
        lo = np.array([np.nan if v is None else v for v in f["sensitivity_ci_low"]])
        hi = np.array([np.nan if v is None else v for v in f["sensitivity_ci_high"]])
        order = np.argsort(x)
        ax.step(x[order], y[order], where="post", color=colour, label=method)
        ax.fill_between(x[order], lo[order], hi[order], step="post", color=colour, alpha=0.15)
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false clusters per normal image (test women)")
    ax.set_ylabel("cluster sensitivity (8 images, 10 clusters)")
    ax.set_title("mini-MIAS cluster FROC, 95% bootstrap bands")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "src/mcgenref/weights/segmentor")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/quality")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--synthetic", type=int, default=200)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:  # predictions are large: not kept
        real = real_clusters(args.model, Path(work), args.bootstrap)
    synth = synthetic_pixels(args.model, args.synthetic, args.bootstrap)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU" if not _cuda() else "GPU"
    rows = []
    for method in ("model", "classical"):
        f = real[method]["metrics"]["cluster"]["froc"]
        at = f["sensitivity_at"]
        rows.append({
            "method": method,
            "threshold": _operating_threshold(args.model, method),
            "operating": real[method]["metrics"]["cluster"],
            "at": {k: at[f"{k:g}"] for k in FP_RATES if f"{k:g}" in at},
            "mean_sensitivity_1_8_to_8": f.get("mean_sensitivity_1_8_to_8"),
            "seconds_per_image": real[method]["seconds"] / real[method]["n_images"],
        })
    result = {"machine": machine, "runtime_s": round(time.perf_counter() - t0, 1),
              "real": rows, "synthetic": synth}
    (args.out / "table.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    plot(real, args.out / "froc_clusters.png")
    lines = [
        "# Quality: default model vs classical baseline",
        "",
        f"`python benchmarks/quality.py` on {machine}; {result['runtime_s']} s.",
        "",
        "## Real mammograms: mini-MIAS cluster FROC",
        "",
        "8 calcification images (10 clusters; development data, never trained on) and the "
        "normals of the test women (never seen in training or calibration). Sensitivity "
        "at a given number of false clusters per normal image, with 95 % bootstrap CIs "
        "(images resampled).",
        "",
        "| method | " + " | ".join(f"sens @ {k:g} FP" for k in FP_RATES) + " | operating point |",
        "|---|" + "---|" * (len(FP_RATES) + 1),
    ]
    for r in rows:
        cells = []
        for k in FP_RATES:
            a = r["at"].get(k)
            cells.append("n/a" if a is None else
                         f"{_fmt(a['sensitivity'], 2)} [{_fmt(a['ci'][0], 2)}, {_fmt(a['ci'][1], 2)}]")
        op = r["operating"]
        cells.append(f"t={r['threshold']:.3f}: {op['found']}/{op['n_truth_clusters']} clusters, "
                     f"{_fmt(op['false_clusters_per_normal_image'], 2)} FP/normal")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    lines += ["", "![cluster FROC](froc_clusters.png)", "",
              "## Synthetic validation (exact masks)", "",
              f"{synth['n_patches']} patches ({synth['patch']}); each method at its operating "
              "threshold; pooled pixel metrics with 95 % bootstrap CIs; object hits within 1 mm.",
              "", "| method | Dice | recall | precision | MC sensitivity | FP per patch |",
              "|---|---|---|---|---|---|"]
    for m in ("model", "classical"):
        s = synth[m]
        ci = s["ci"]
        lines.append(
            f"| {m} | {_fmt(s['pooled']['dice'])} [{_fmt(ci['dice'][0])}, {_fmt(ci['dice'][1])}] | "
            f"{_fmt(s['pooled']['recall'])} [{_fmt(ci['recall'][0])}, {_fmt(ci['recall'][1])}] | "
            f"{_fmt(s['pooled']['precision'])} [{_fmt(ci['precision'][0])}, {_fmt(ci['precision'][1])}] | "
            f"{_fmt(s['object_sensitivity'])} | {_fmt(s['object_fp_per_patch'], 2)} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
