"""TT-GPR: ablation on synthetic data, cluster FROC on real mammograms, and cost.

    python benchmarks/tt_gpr.py [--synthetic 120] [--bootstrap 1000] [--skip-real] [--skip-cost]
                                [--out benchmarks/results/tt_gpr]

1. Synthetic ablation. Test patches (256 px at 0.2 mm) made on the HELD-OUT women's
   mini-MIAS normals (never seen by either network) with a base seed neither training used,
   and clusters of 10-40 MCs (the generator and segmentor were trained on 5-30: other
   generator settings where the test allows). Per variant (the initializer = the frozen
   segmentor alone; TT-GPR with every term; TT-GPR without each term; K = 1; one round; no
   seed): pooled pixel Dice, recall, FNR, precision, balanced accuracy, G-mean with 95 %
   bootstrap CIs (patches resampled), object sensitivity and false positives per patch
   (component centroids matched to visible MCs within 1 mm), at two thresholds: 0.5 (the
   segmentor's training decision) and the shipped operating point.
2. Real mammograms: `mcgenref segment` with and without `--refine` on the 8 mini-MIAS
   calcification images and the held-out normals, scored by `mcgenref evaluate` (cluster FROC).
3. Cost: seconds per full-field image with and without `--refine`, side by side in one run,
   on the mini-MIAS images of part 2 (1024 x 1024 at 0.2 mm) and on a generated 70 um
   full-field DICOM (4096 x 3328).

Writes table.md and table.json into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
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
sys.path.insert(0, str(REPO / "benchmarks"))

import default_segmentor as recipe  # noqa: E402

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402

SEGMENTOR = REPO / "src/mcgenref/weights/segmentor"
GENERATOR = REPO / "src/mcgenref/weights/generator"
TEST_SEED = 424_242_424  # not a training (0), validation (1_000_003) or quality seed
METRICS = ("dice", "recall", "fnr", "precision", "balanced_accuracy", "g_mean")


def variants() -> dict:
    from mcgenref.inference.refine import RefineConfig

    full = RefineConfig()
    r = dataclasses.replace
    return {
        "initializer (segmentor)": None,
        "TT-GPR": full,
        "- fit": r(full, fit=False),
        "- overlap": r(full, overlap=False),
        "- edge": r(full, edge=False),
        "- proximity": r(full, proximity=False),
        "K = 1": r(full, k=1),
        "1 round": r(full, rounds=1),
        "no seed": r(full, use_seeds=False),
    }


def synthetic_ablation(n: int, n_boot: int, generator: Path) -> dict:
    import torch
    from scipy import ndimage

    from mcgenref.evaluation.metrics import bootstrap_ci, match_points, pixel_counts, pixel_metrics
    from mcgenref.inference.refine import Refiner
    from mcgenref.models.checkpoint import GENERATOR_KIND, load_model
    from mcgenref.synthesis.config import ClusterConfig, SynthesisConfig
    from mcgenref.synthesis.dataset import SyntheticMCDataset
    from mcgenref.synthesis.patches import NegativePatchSampler

    _, held_out = recipe.split()
    seg, seg_meta = load_model(SEGMENTOR, "cpu")
    gen, _ = load_model(generator, "cpu", kind=GENERATOR_KIND)
    operating = float(seg_meta["operating_point"]["threshold"])
    patch = 256
    sampler = NegativePatchSampler(recipe.image_paths(held_out), patch, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    synthesis = SynthesisConfig(patch_size_px=patch, cluster=ClusterConfig(n_mcs_range=(10, 40)))
    data = SyntheticMCDataset(n, TEST_SEED, synthesis, sampler)
    samples = [data.sample(i) for i in range(n)]
    logits0 = []
    with torch.inference_mode():
        for s in samples:
            logits0.append(seg(torch.from_numpy(s.image)[None, None])[0, 0].numpy())
    results = {}
    for name, config in variants().items():
        t0 = time.perf_counter()
        probs = []
        for s, z0 in zip(samples, logits0, strict=True):
            if config is None:
                z = z0
            else:
                refiner = Refiner(seg, gen, config, "cpu")
                spacing = tuple(float(v) for v in s.record["spacing_mm"])
                z = refiner.refine(s.image, np.ones(s.image.shape, bool), z0, spacing).logits
            probs.append(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))
        seconds = time.perf_counter() - t0
        per_threshold = {}
        for label, threshold in (("0.5", 0.5), ("operating", operating)):
            counts, objects = [], []
            for s, p in zip(samples, probs, strict=True):
                pred = p >= threshold
                counts.append(pixel_counts(pred, s.mask.astype(bool)))
                lab, k = ndimage.label(pred, np.ones((3, 3)))
                cents = np.array(ndimage.center_of_mass(pred, lab, range(1, k + 1))).reshape(-1, 2)
                truth = np.array([[m["y_px"], m["x_px"]] for m in s.record["mcs"] if m["visible"]]).reshape(-1, 2)
                pm = match_points(cents, truth, tuple(s.record["spacing_mm"]), 1.0)
                objects.append((pm.tp, pm.fp, len(truth)))
            c = np.asarray(counts, dtype=np.int64)
            pooled = pixel_metrics(*c.sum(axis=0).tolist())
            ci = {k: list(bootstrap_ci(
                lambda idx, k=k, c=c: pixel_metrics(*c[idx].sum(axis=0).tolist())[k],
                n_boot, 0, n_items=len(c))) for k in METRICS}
            o = np.asarray(objects, dtype=float)
            per_threshold[label] = {
                "threshold": threshold, "pooled": pooled, "ci": ci,
                "object_sensitivity": float(o[:, 0].sum() / max(o[:, 2].sum(), 1)),
                "object_fp_per_patch": float(o[:, 1].mean()),
            }
        results[name] = {"config": None if config is None else dataclasses.asdict(config),
                         "seconds": round(seconds, 2), **per_threshold}
        print(f"{name}: Dice@0.5 {per_threshold['0.5']['pooled']['dice']:.3f} "
              f"recall@0.5 {per_threshold['0.5']['pooled']['recall']:.3f} "
              f"Dice@op {per_threshold['operating']['pooled']['dice']:.3f} "
              f"recall@op {per_threshold['operating']['pooled']['recall']:.3f} ({seconds:.0f} s)",
              flush=True)
    n_mcs = sum(sum(1 for m in s.record["mcs"] if m["visible"]) for s in samples)
    return {"n_patches": n, "n_visible_mcs": n_mcs, "operating_threshold": operating,
            "patch": f"{patch} px at {MIAS_PIXEL_SPACING_MM} mm, held-out normals, seed {TEST_SEED}, "
                     "clusters of 10-40 MCs", "variants": results}


def real_clusters(work: Path, n_boot: int, generator: Path) -> dict:
    from mcgenref.workflows import run_evaluate, run_segment

    _, held_out = recipe.split()
    inputs = [str(p) for p in recipe.image_paths(calc_refs() + held_out)]
    out = {}
    for refine in (False, True):
        pred = work / f"pred-{'refine' if refine else 'plain'}"
        t0 = time.perf_counter()
        run_segment(inputs, pred, model=SEGMENTOR, device="auto",
                    pixel_spacing=str(MIAS_PIXEL_SPACING_MM), overwrite=True,
                    show_progress=False, refine=refine, generator=generator)
        seconds = time.perf_counter() - t0
        metrics = run_evaluate(pred, data_root() / "mini-mias" / "Info.txt",
                               work / f"eval-{refine}", "mias", n_bootstrap=n_boot)
        cl = metrics["cluster"]
        out["refine" if refine else "plain"] = {
            "seconds_per_image": seconds / len(inputs), "n_images": len(inputs),
            "sensitivity": cl.get("sensitivity"), "found": cl.get("found"),
            "n_truth_clusters": cl.get("n_truth_clusters"),
            "false_clusters_per_normal_image": cl.get("false_clusters_per_normal_image"),
            "sensitivity_at": cl["froc"]["sensitivity_at"],
        }
    return out


def full_field_cost(work: Path, generator: Path, repeats: int = 2) -> dict:
    from segment_speed import make_dicom

    from mcgenref.inference.segment import SegmentConfig, Segmenter

    dicom = work / "ff.dcm"
    make_dicom(dicom)
    times: dict[str, list[float]] = {"plain": [], "refine": []}
    info = {}
    segmenters = {
        "plain": Segmenter(SegmentConfig(), SEGMENTOR, "auto"),
        "refine": Segmenter(SegmentConfig(refine=True), SEGMENTOR, "auto", generator_path=generator),
    }
    for _ in range(repeats):  # interleaved, so drifts of a noisy machine hit both alike
        for name, seg in segmenters.items():
            t0 = time.perf_counter()
            result = seg.segment(dicom)
            times[name].append(time.perf_counter() - t0)
            info[name] = result.meta["detector"].get("tt_gpr")
    plain, refine = min(times["plain"]), min(times["refine"])
    return {"image": "generated 70 um DICOM 4096 x 3328 (benchmarks/segment_speed.py)",
            "plain_s": round(plain, 3), "refine_s": round(refine, 3),
            "ratio": round(refine / plain, 2), "tt_gpr": info["refine"]}


def _fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def write_tables(result: dict, out: Path) -> None:
    lines = ["# TT-GPR: ablation, real-image cluster FROC and cost", "",
             f"`python benchmarks/tt_gpr.py` on {result['machine']}; {result['runtime_s']} s; "
             f"generator sha256 {result['generator_sha256'][:12]}.", ""]
    syn = result.get("synthetic")
    if syn:
        lines += ["## Synthetic ablation", "",
                  f"{syn['n_patches']} patches ({syn['patch']}), {syn['n_visible_mcs']} visible MCs; "
                  "pooled pixel metrics with 95 % bootstrap CIs (patches resampled); objects: "
                  "component centroids within 1 mm of a visible MC.", ""]
        for label in ("0.5", "operating"):
            thr = syn["variants"]["TT-GPR"][label]["threshold"]
            lines += [f"### Threshold {thr:g} ({'training decision' if label == '0.5' else 'shipped operating point'})",
                      "", "| variant | " + " | ".join(METRICS) + " | object sens | FP / patch | s |",
                      "|---|" + "---|" * (len(METRICS) + 3)]
            for name, v in syn["variants"].items():
                r = v[label]
                cells = [f"{_fmt(r['pooled'][k])} [{_fmt(r['ci'][k][0])}, {_fmt(r['ci'][k][1])}]" for k in METRICS]
                lines.append(f"| {name} | " + " | ".join(cells) +
                             f" | {_fmt(r['object_sensitivity'])} | {_fmt(r['object_fp_per_patch'], 2)} | {v['seconds']} |")
            lines.append("")
    real = result.get("real")
    if real:
        lines += ["## Real mammograms: mini-MIAS cluster FROC", "",
                  "8 calcification images (10 clusters) + held-out normals; `mcgenref evaluate`.", "",
                  "| run | sens @ 0.25 FP | @ 0.5 | @ 1 | @ 2 | operating point: found / FP per normal | s / image |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in real.items():
            at = r["sensitivity_at"]
            lines.append(f"| {name} | " + " | ".join(_fmt(at.get(k)) for k in ("0.25", "0.5", "1", "2")) +
                         f" | {r['found']}/{r['n_truth_clusters']} at {_fmt(r['false_clusters_per_normal_image'], 2)}"
                         f" | {r['seconds_per_image']:.2f} |")
        lines.append("")
    cost = result.get("cost")
    if cost:
        lines += ["## Cost per full-field image", "",
                  f"{cost['image']}: plain {cost['plain_s']} s, `--refine` {cost['refine_s']} s: "
                  f"**{cost['ratio']}x** (best of 2, interleaved; {cost['tt_gpr']}).", ""]
    (out / "table.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, default=GENERATOR)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tt_gpr")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--synthetic", type=int, default=100)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from mcgenref.models.checkpoint import GENERATOR_KIND, read_model_meta

    t0 = time.perf_counter()
    gpu = torch.cuda.is_available()
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if gpu else "no GPU"),
        "generator_sha256": read_model_meta(args.generator, GENERATOR_KIND)["weights"]["sha256"],
    }
    if args.synthetic > 0:
        result["synthetic"] = synthetic_ablation(args.synthetic, args.bootstrap, args.generator)
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_real:
            result["real"] = real_clusters(Path(work), args.bootstrap, args.generator)
        if not args.skip_cost:
            result["cost"] = full_field_cost(Path(work), args.generator)
    result["runtime_s"] = round(time.perf_counter() - t0, 1)
    (args.out / "table.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_tables(result, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
