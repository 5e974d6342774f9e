"""TT-GPR: ablation on synthetic data, cluster FROC on real mammograms, and cost.

    python benchmarks/tt_gpr.py [--split dev|test] [--evidence N] [--synthetic 300]
                                [--bootstrap 1000] [--skip-real] [--skip-cost] [--cost-variants N]
                                [--out DIR]

(The diagnostics of issue 14, on development data, are benchmarks/tt_gpr_diagnostics.py.)

``--split`` chooses the data of every part: ``dev`` (the default, for every development run)
uses the ``calibration`` part's normals and development seeds only; ``test`` the held-out
``test`` normals and the test seeds, for the one final run. Default ``--out``:
benchmarks/results/tt_gpr (test) or benchmarks/results/tt_gpr_dev (dev).

0. Evidence (``--evidence N`` patches per set; issue 14, item 6): two sets fixed before
   TT-GPR first ran on them (:data:`EVIDENCE_SEEDS`, :func:`fresh_synthesis`,
   :func:`shifted_synthesis`): a fresh-seed set with training's image-formation model, and a
   shifted set (lower contrast, wider blur, other MC shapes and cluster patterns, half on
   another procedural texture). Per set: the object FROC of TT-GPR against the segmentor's
   own threshold sweep at 0.25-4 false components per patch with paired bootstrap CIs of
   the differences (patches resampled), pixel Dice and recall, object sensitivity and FP per
   patch at the operating point with paired CIs, and the per-MC exact McNemar test
   (:func:`mcnemar_exact`).
1. Synthetic ablation. Patches (256 px at 0.2 mm) made on the split's mini-MIAS normals
   (``test``: held-out women, never seen by either network;
   :data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`) with a base seed neither training used,
   and clusters of 10-40 MCs (the generator and segmentor were trained on 5-30: other
   generator settings where the test allows). Per variant (the initializer = the frozen
   segmentor alone; TT-GPR with the defaults; with the probability seed rule of before;
   without each term; K = 1; one round; no seed): pooled pixel Dice, recall, FNR, precision, balanced accuracy, G-mean with 95 %
   bootstrap CIs (patches resampled), object sensitivity and false positives per patch
   (component centroids matched to visible MCs within 1 mm), at two thresholds: 0.5 (the
   segmentor's training decision) and the shipped operating point. Then the seed evidence:
   whether the generator's projections raise the segmentor's logit more at seeds on MCs than
   at seeds on other spots (:func:`seed_evidence`).
2. Real mammograms: `mcgenref segment` with and without `--refine` on the 8 mini-MIAS
   calcification images and the split's normals, scored by `mcgenref evaluate` (cluster FROC).
3. Cost: seconds per full-field image with and without `--refine`, side by side in one run
   (interleaved, best of 2), on a generated 70 um full-field DICOM (4096 x 3328) and on 6
   mini-MIAS normals of the split (1024 x 1024 at 0.2 mm), with the machine's load average
   (part 2's seconds per image are sequential runs). ``--cost-variants N``
   (``dev`` only) also times the cheaper settings of :data:`COST_VARIANTS` on the full field
   and the films, and scores each against the defaults on ``N`` patches of both dev evidence sets
   (:func:`cost_variant_effect`; ``N = 0``: timing only), since each of them changes results.

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
from mcgenref.evaluation.synthetic import PIXEL_METRICS  # noqa: E402

SEGMENTOR = REPO / "src/mcgenref/weights/segmentor"
GENERATOR = REPO / "src/mcgenref/weights/generator"
TEST_SEED = 424_242_424  # not a training (0), validation (1_000_003) or quality seed


# --------------------------------------------------------------------------- the evidence sets
# Issue 14, item 6. Written down and committed before TT-GPR first ran on any of them; the
# ``test`` sets are for the one final run (the lead's), ``dev`` ones for development runs.

#: base seeds of the evidence sets: (split, set) -> seed. Fresh: no network, tuning,
#: diagnostic or earlier benchmark used them (TEST_SEED above was used by the ablation).
EVIDENCE_SEEDS = {
    ("test", "fresh"): 616_161_617,
    ("test", "shifted"): 737_373_737,
    ("dev", "fresh"): 51_515_011,
    ("dev", "shifted"): 51_515_012,
}
#: which mini-MIAS normals (:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT` part)
#: each split's patches are cut from: test women only for ``test``, calibration for ``dev``
EVIDENCE_NORMALS = {"test": "test", "dev": "calibration"}
#: clusters of 10-40 MCs in both sets (the networks were trained on 5-30)
EVIDENCE_N_MCS = (10, 40)
#: share of the shifted set's patches on procedural texture instead of a real normal
SHIFTED_PROCEDURAL_FRACTION = 0.5


def shifted_synthesis(patch: int = 256):  # noqa: ANN201
    """The shifted test set's image-formation settings, each away from training's
    (``SynthesisConfig()`` with clusters of 5-30, on which both networks were trained):

    - lower contrast: attenuation 0.15-0.45 per mm (training 0.2-0.6) and stronger damping by
      dense tissue, 0.7 (training 0.5);
    - wider blur: PSF sigma 0.12-0.20 mm (training 0.06-0.14);
    - other MC shapes: 15 % punctate, 15 % round/oval, 40 % pleomorphic, 30 % fine linear
      (training 35/30/25/10), median size 0.35 mm (training 0.3), clusters mostly ductal
      (25 % cloud, 30 % linear, 30 % branching, 15 % segmental; training 50/20/15/15);
    - other backgrounds: half the patches on procedural texture with a flatter spectrum,
      beta 1.8-2.4 (training 2.5-3.5), and more white noise, 0.015-0.03 (training
      0.005-0.02); the other half on real normals (:data:`SHIFTED_PROCEDURAL_FRACTION`).
    """
    from mcgenref.synthesis.config import (
        BackgroundConfig,
        ClusterConfig,
        ContrastConfig,
        MCConfig,
        PSFConfig,
        SynthesisConfig,
    )

    return SynthesisConfig(
        patch_size_px=patch,
        cluster=ClusterConfig(n_mcs_range=EVIDENCE_N_MCS, p_cloud=0.25, p_linear=0.30,
                              p_branching=0.30, p_segmental=0.15),
        mc=MCConfig(size_median_mm=0.35, p_punctate=0.15, p_round_oval=0.15, p_pleomorphic=0.40,
                    p_fine_linear=0.30),
        contrast=ContrastConfig(attenuation_per_mm_range=(0.15, 0.45), density_damping=0.7),
        psf=PSFConfig(sigma_mm_range=(0.12, 0.20)),
        background=BackgroundConfig(beta_range=(1.8, 2.4), white_noise_std_range=(0.015, 0.03)),
    )


def fresh_synthesis(patch: int = 256):  # noqa: ANN201
    """The fresh-seed set's settings: training's image-formation model, clusters of 10-40."""
    from mcgenref.synthesis.config import ClusterConfig, SynthesisConfig

    return SynthesisConfig(patch_size_px=patch, cluster=ClusterConfig(n_mcs_range=EVIDENCE_N_MCS))


def evidence_patches(split: str, which: str, n: int, patch: int = 256) -> list:
    """``n`` patches of the evidence set ``which`` ("fresh" or "shifted") of ``split``
    ("dev" or "test"): sample ``i`` is ``generate_sample(sample_seed(seed, i))`` on the split's
    normals, or, for a shifted sample whose draw ``U(seed, i) < SHIFTED_PROCEDURAL_FRACTION``,
    on procedural texture at 0.2 mm."""
    from mcgenref.synthesis.patches import NegativePatchSampler
    from mcgenref.synthesis.sample import generate_sample, sample_seed

    if split not in EVIDENCE_NORMALS or which not in ("fresh", "shifted"):
        raise SystemExit(f"error: unknown evidence set {split}/{which}")
    seed = EVIDENCE_SEEDS[(split, which)]
    config = shifted_synthesis(patch) if which == "shifted" else fresh_synthesis(patch)
    refs = recipe.split().part(EVIDENCE_NORMALS[split])
    sampler = NegativePatchSampler(recipe.image_paths(refs), patch, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    spacing = (MIAS_PIXEL_SPACING_MM, MIAS_PIXEL_SPACING_MM)
    out = []
    for i in range(n):
        procedural = (which == "shifted"
                      and np.random.default_rng([seed, i, 0x5EED]).random() < SHIFTED_PROCEDURAL_FRACTION)
        out.append(generate_sample(sample_seed(seed, i), config, None if procedural else sampler,
                                   spacing, index=i))
    return out


def mc_hits(probs: list, samples: list, threshold: float) -> np.ndarray:
    """bool ``[n MCs]``: for each visible MC of ``samples`` (in order), whether a component of
    ``prob >= threshold`` matches it (centroids within 1 mm, one-to-one, as
    :func:`mcgenref.evaluation.synthetic.score_synthetic`)."""
    from mcgenref.evaluation.metrics import components, match_points
    from mcgenref.evaluation.synthetic import visible_points

    hits = []
    for prob, s in zip(probs, samples, strict=True):
        sp = (float(s.record["spacing_mm"][0]), float(s.record["spacing_mm"][1]))
        centroids = np.array([[o.row, o.col] for o in components(prob >= threshold, sp)]).reshape(-1, 2)
        truth = visible_points(s.record)
        hit = np.zeros(len(truth), bool)
        hit[match_points(centroids, truth, sp, 1.0).pairs[:, 1]] = True
        hits.append(hit)
    return np.concatenate(hits) if hits else np.zeros(0, bool)


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> dict:
    """The exact McNemar test of paired per-MC outcomes: ``b`` = found by A only, ``c`` = by
    B only; two-sided p of ``min(b, c)`` under Binomial(b + c, 1/2) (1 when no pair is
    discordant)."""
    from scipy.stats import binomtest

    hits_a, hits_b = np.asarray(hits_a, bool), np.asarray(hits_b, bool)
    if hits_a.shape != hits_b.shape:
        raise ValueError(f"paired outcomes differ in length: {hits_a.shape} vs {hits_b.shape}")
    b, c = int((hits_a & ~hits_b).sum()), int((~hits_a & hits_b).sum())
    p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return {"n": int(hits_a.size), "both": int((hits_a & hits_b).sum()), "neither": int((~hits_a & ~hits_b).sum()),
            "a_only": b, "b_only": c, "p_value": float(p)}


def paired_difference(stat_b, stat_a, n_items: int, n_boot: int, seed: int = 0) -> dict:  # noqa: ANN001
    """``stat_b(idx) - stat_a(idx)`` on all patches, with a 95 % percentile bootstrap CI that
    resamples the same patches for both (paired)."""
    every = np.arange(n_items)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n_items, n_items)
        diffs.append(stat_b(idx) - stat_a(idx))
    diffs = np.asarray(diffs, float)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = (np.percentile(diffs, [2.5, 97.5]).tolist() if len(diffs) else [float("nan")] * 2)
    return {"difference": float(stat_b(every) - stat_a(every)), "ci": [lo, hi]}


def evidence(split: str, which: str, n: int, n_boot: int, generator: Path) -> dict:
    """TT-GPR (defaults) against its initializer on one evidence set: the object FROC against
    the segmentor's own threshold sweep (0.25-4 FP per patch, paired bootstrap CIs of the
    differences), pixel Dice and recall, object sensitivity and FP per patch at the operating
    point (paired bootstrap CIs), and the per-MC exact McNemar test there."""
    from tt_gpr_diagnostics import froc

    from mcgenref.evaluation.synthetic import score_synthetic, segmentor_logits
    from mcgenref.inference.refine import RefineConfig, Refiner
    from mcgenref.models.checkpoint import load_generator, load_model

    seg, seg_meta = load_model(SEGMENTOR, "cpu")
    gen, contract, _ = load_generator(generator, "cpu")
    operating = float(seg_meta["operating_point"]["threshold"])
    samples = evidence_patches(split, which, n)
    z0 = segmentor_logits(seg, samples)
    refiner = Refiner(seg, gen, RefineConfig(), "cpu", contract=contract)
    t0 = time.perf_counter()
    refined, windows = [], 0
    for s, z in zip(samples, z0, strict=True):
        result = refiner.refine(s.image, np.ones(s.image.shape, bool), z,
                                (float(s.record["spacing_mm"][0]), float(s.record["spacing_mm"][1])))
        refined.append(result.logits)
        windows += result.info["windows"]
    seconds = time.perf_counter() - t0
    sig = [1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))) for z in z0]
    sig_r = [1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))) for z in refined]
    base, ref = score_synthetic(sig, samples, operating), score_synthetic(sig_r, samples, operating)

    def pooled(scores, key):  # noqa: ANN001, ANN202
        return lambda idx: scores.pooled(idx)[key]

    def sensitivity(scores):  # noqa: ANN001, ANN202
        return lambda idx: float(scores.objects[idx, 0].sum() / max(scores.objects[idx, 2].sum(), 1))

    def fp(scores):  # noqa: ANN001, ANN202
        return lambda idx: float(scores.objects[idx, 1].mean())

    at_operating = {}
    for name, make in (("dice", lambda sc: pooled(sc, "dice")), ("recall", lambda sc: pooled(sc, "recall")),
                       ("object_sensitivity", sensitivity), ("fp_per_patch", fp)):
        at_operating[name] = {"segmentor": make(base)(np.arange(n)), "tt_gpr": make(ref)(np.arange(n)),
                              **paired_difference(make(ref), make(base), n, n_boot)}
    return {
        "set": which, "split": split, "n_patches": n, "seed": EVIDENCE_SEEDS[(split, which)],
        "n_visible_mcs": int(base.objects[:, 2].sum()), "operating_threshold": operating,
        "tt_gpr": {"windows_per_patch": windows / max(n, 1), "seconds": round(seconds, 1)},
        "froc": froc(samples, {"segmentor (threshold sweep)": z0, "TT-GPR": refined}, n_boot),
        "at_operating_point": at_operating,
        "mcnemar": mcnemar_exact(mc_hits(sig, samples, operating), mc_hits(sig_r, samples, operating)),
    }


def variants() -> dict:
    from mcgenref.flow.seeds import SeedConfig
    from mcgenref.inference.refine import RefineConfig

    full = RefineConfig()
    r = dataclasses.replace
    return {
        "initializer (segmentor)": None,
        "TT-GPR": full,
        "probability seeds (>= 0.84, as before)": r(full, seeds=SeedConfig(min_prob=0.84)),
        "- fit": r(full, fit=False),
        "- overlap": r(full, overlap=False),
        "- edge": r(full, edge=False),
        "- proximity": r(full, proximity=False),
        "K = 1": r(full, k=1),
        "1 round": r(full, rounds=1),
        "no seed": r(full, use_seeds=False),
    }


#: base seed of the ablation's patches with ``--split dev`` (calibration normals; fresh)
DEV_ABLATION_SEED = 51_515_013


def synthetic_ablation(n: int, n_boot: int, generator: Path, split: str = "test") -> dict:

    from mcgenref.evaluation.synthetic import refined_probabilities, score_synthetic, segmentor_logits
    from mcgenref.inference.refine import Refiner
    from mcgenref.models.checkpoint import load_generator, load_model

    normals = recipe.split().part(EVIDENCE_NORMALS[split])
    seed = TEST_SEED if split == "test" else DEV_ABLATION_SEED
    seg, seg_meta = load_model(SEGMENTOR, "cpu")
    gen, contract, _ = load_generator(generator, "cpu")
    operating = float(seg_meta["operating_point"]["threshold"])
    patch = 256
    samples = recipe.synthetic_patches(normals, n, seed, patch, n_mcs_range=(10, 40))
    logits0 = segmentor_logits(seg, samples)
    results = {}
    for name, config in variants().items():
        t0 = time.perf_counter()
        refiner = None if config is None else Refiner(seg, gen, config, "cpu", contract=contract)
        probs = refined_probabilities(samples, logits0, refiner)
        seconds = time.perf_counter() - t0
        per_threshold = {label: score_synthetic(probs, samples, threshold).summary(n_boot, metrics=PIXEL_METRICS)
                         for label, threshold in (("0.5", 0.5), ("operating", operating))}
        results[name] = {"config": None if config is None else dataclasses.asdict(config),
                         "seconds": round(seconds, 2), **per_threshold}
        print(f"{name}: Dice@0.5 {per_threshold['0.5']['pooled']['dice']:.3f} "
              f"recall@0.5 {per_threshold['0.5']['pooled']['recall']:.3f} "
              f"Dice@op {per_threshold['operating']['pooled']['dice']:.3f} "
              f"recall@op {per_threshold['operating']['pooled']['recall']:.3f} ({seconds:.0f} s)",
              flush=True)
    n_mcs = results["TT-GPR"]["0.5"]["n_truth_mcs"]
    return {"n_patches": n, "n_visible_mcs": n_mcs, "operating_threshold": operating,
            "seed_evidence": seed_evidence(samples, logits0, seg, gen, contract, operating),
            "patch": f"{patch} px at {MIAS_PIXEL_SPACING_MM} mm, {EVIDENCE_NORMALS[split]}-part normals, seed {seed}, "
                     "clusters of 10-40 MCs", "variants": results}


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney), ``None`` with one class only."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def seed_evidence(samples: list, logits0: list, seg, gen, contract, operating: float, k: int = 4) -> dict:
    """Does the generator tell a seeded MC from a seeded non-MC?

    Seeds from the segmentor's logits (``logits0``: its logits on each sample; TT-GPR's
    rule, first round), ``k`` projections of
    each whole patch, and at each seed the mean change of the segmentor's logit that the
    projections cause (what TT-GPR's surrogates add). A seed is an MC when it lies on the
    exact mask dilated by one pixel. Per band of the initial probability: counts and the
    AUC of the logit change (and, for comparison, of the initial probability) for MC vs not.
    """
    import torch
    from scipy import ndimage

    from mcgenref.flow.seeds import find_seeds
    from mcgenref.inference.refine import RefineConfig

    config = RefineConfig()
    rows = []
    for i, (s, z0) in enumerate(zip(samples, logits0, strict=True)):
        x = torch.from_numpy(s.image)[None, None]
        p0 = 1.0 / (1.0 + np.exp(-np.clip(z0, -60, 60)))
        spacing = tuple(float(v) for v in s.record["spacing_mm"])
        seeds = find_seeds(z0, spacing, config.seeds)
        if not seeds:
            continue
        seed_map = torch.from_numpy(contract.seed_map(seeds, p0.shape, spacing, config.seeds))[None, None]
        noise = torch.randn((k, 1, *p0.shape), generator=torch.Generator().manual_seed(TEST_SEED + i))
        x_k = contract.sample_projection(gen, x.expand(k, -1, -1, -1), seed_map.expand(k, -1, -1, -1),
                                         noise, config.t_start, config.sampler_steps, config.guidance)
        with torch.inference_mode():
            z_k = seg(x_k)[:, 0].numpy()
        on_mc = ndimage.binary_dilation(s.mask.astype(bool))
        for q in seeds:
            r, c = round(q.row), round(q.col)
            rows.append((p0[r, c], float((z_k[:, r, c] - z0[r, c]).mean()), bool(on_mc[r, c])))
    a = np.asarray(rows, dtype=float).reshape(-1, 3)
    bands = {}
    for name, lo, hi in (("all seeds", 0.0, 1.01), (f"below the operating point ({operating:g})", 0.0, operating),
                         ("at or above it", operating, 1.01)):
        b = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        mc = b[:, 2] > 0
        bands[name] = {
            "seeds": len(b), "on_mc": int(mc.sum()),
            "mean_logit_change_mc": float(b[mc, 1].mean()) if mc.any() else None,
            "mean_logit_change_not": float(b[~mc, 1].mean()) if (~mc).any() else None,
            "auc_logit_change": _auc(mc, b[:, 1]), "auc_initial_prob": _auc(mc, b[:, 0]),
        }
    return {"k": k, "bands": bands}


def real_clusters(work: Path, n_boot: int, generator: Path, split: str = "test",
                  variants: dict | None = None) -> dict:
    """Cluster FROC of plain ``segment`` and ``segment --refine`` on the 8 calcification images
    and the split's normals; ``variants`` (name -> :class:`RefineConfig` changes; ``dev``
    only) adds a ``--refine`` run with each of those TT-GPR settings."""
    from mcgenref.config import to_dict
    from mcgenref.inference.refine import RefineConfig
    from mcgenref.inference.segment import SegmentConfig
    from mcgenref.workflows import SegmentOptions, run_evaluate, run_segment

    # reported quality: the held-out test women only; --split dev: the calibration women
    normals = recipe.split().part(EVIDENCE_NORMALS[split])
    inputs = [str(p) for p in recipe.image_paths(calc_refs() + normals)]
    runs: dict[str, tuple[bool, Path | None]] = {"plain": (False, None), "refine": (True, None)}
    for i, (name, change) in enumerate((variants or {}).items()):
        config_path = work / f"variant-{i}.json"
        config_path.write_text(json.dumps(to_dict(SegmentConfig(tt_gpr=dataclasses.replace(RefineConfig(), **change)))))
        runs[f"refine, {name}"] = (True, config_path)
    out = {}
    for i, (name, (refine, config_path)) in enumerate(runs.items()):
        pred = work / f"pred-{i}"
        t0 = time.perf_counter()
        run_segment(inputs, pred, SegmentOptions(
            model=SEGMENTOR, device="auto", pixel_spacing=str(MIAS_PIXEL_SPACING_MM),
            overwrite=True, show_progress=False, refine=refine, generator=generator,
            config_path=config_path,
        ))
        seconds = time.perf_counter() - t0
        metrics = run_evaluate(pred, data_root() / "mini-mias" / "Info.txt",
                               work / f"eval-{i}", "mias", n_bootstrap=n_boot)
        cl = metrics["cluster"]
        out[name] = {
            "seconds_per_image": seconds / len(inputs), "n_images": len(inputs),
            "sensitivity": cl.get("sensitivity"), "found": cl.get("found"),
            "n_truth_clusters": cl.get("n_truth_clusters"),
            "false_clusters_per_normal_image": cl.get("false_clusters_per_normal_image"),
            "sensitivity_at": cl["froc"]["sensitivity_at"],
        }
    return out


#: other TT-GPR settings whose cost and effect ``--cost-variants`` (and ``--real-variants``)
#: measure (issue 14, item 6, "cost"), each as changes to :class:`RefineConfig`'s defaults.
#: The window cap became a default (``max_windows`` 24, then 9) after these were measured
#: against the defaults of then (512, which no image reached), so each variant names its cap:
#: the committed tables (benchmarks/results/tt_gpr_cost/) are reproduced by these settings,
#: their "the defaults" row being "no window cap" (caps, caps_k2), "24 windows" (timing_capped,
#: cap9) or today's defaults, and their "9 windows" row today's defaults.
COST_VARIANTS = {
    "no window cap": {"max_windows": 512},
    "1 round": {"rounds": 1, "max_windows": 512},
    "K = 2": {"k": 2, "max_windows": 512},
    "2 sampler steps": {"sampler_steps": 2, "max_windows": 512},
    "K = 2, 1 round": {"k": 2, "rounds": 1, "max_windows": 512},
    # a cap of 24 or more binds on full fields only (a 256 px patch has at most ~14 windows):
    # its effect is measured on the dev split's mini-MIAS images (``--real-variants``); the
    # smaller caps below bind on patches too, so ``--cost-variants N`` scores them there as well
    "K = 2, 1 round, 96 windows": {"k": 2, "rounds": 1, "max_windows": 96},
    "K = 2, 1 round, 64 windows": {"k": 2, "rounds": 1, "max_windows": 64},
    "32 windows": {"max_windows": 32},
    "1 round, 48 windows": {"rounds": 1, "max_windows": 48},
    "24 windows": {"max_windows": 24},
    # issue 14, step 4 (docs/tt_gpr.md, "Cost"): for the films; rejected on the dev mini-MIAS images
    "8 windows": {"max_windows": 8},
    "7 windows": {"max_windows": 7},
}


def _timed_segmenters(paths: list, generator: Path, variants: dict | None, repeats: int,
                      pixel_spacing_mm: float | None = None) -> tuple[dict, dict]:
    """Plain segmentation, ``--refine`` with the defaults (``"refine"``) and with each of
    ``variants`` on every image of ``paths``, interleaved (so drifts of a noisy machine hit
    all alike): the best of ``repeats`` seconds per setting and image, and the TT-GPR record
    of each refined image (``tt_gpr`` of its meta)."""
    from mcgenref.inference.refine import RefineConfig
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    configs = {"refine": RefineConfig()}
    configs.update({name: dataclasses.replace(RefineConfig(), **change) for name, change in (variants or {}).items()})
    segmenters = {"plain": Segmenter(SegmentConfig(), SEGMENTOR, "auto", pixel_spacing_mm=pixel_spacing_mm)}
    segmenters.update({name: Segmenter(SegmentConfig(refine=True, tt_gpr=config), SEGMENTOR, "auto",
                                       pixel_spacing_mm=pixel_spacing_mm, generator_path=generator)
                       for name, config in configs.items()})
    best = {name: [np.inf] * len(paths) for name in segmenters}
    info: dict[str, list] = {name: [None] * len(paths) for name in configs}
    for _ in range(repeats):
        for i, path in enumerate(paths):
            for name, seg in segmenters.items():
                t0 = time.perf_counter()
                result = seg.segment(path)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
                if name in info:
                    info[name][i] = result.meta.detector.get("tt_gpr")
    return best, info


def full_field_cost(work: Path, generator: Path, repeats: int = 2, variants: dict | None = None) -> dict:
    """Seconds per full-field image, plain and with ``--refine`` (the defaults and, with
    ``variants``, each of those TT-GPR settings), best of ``repeats``, interleaved."""
    from segment_speed import make_dicom

    dicom = work / "ff.dcm"
    make_dicom(dicom)
    best, info = _timed_segmenters([dicom], generator, variants, repeats)
    plain, refine = best["plain"][0], best["refine"][0]
    out = {"image": "generated 70 um DICOM 4096 x 3328 (benchmarks/segment_speed.py)",
           "load_average": _load_average(), "repeats": repeats,
           "plain_s": round(plain, 3), "refine_s": round(refine, 3),
           "ratio": round(refine / plain, 2), "tt_gpr": info["refine"][0]}
    if variants:
        out["variants"] = {name: {"change": variants[name], "refine_s": round(best[name][0], 3),
                                  "ratio": round(best[name][0] / plain, 2),
                                  "windows": info[name][0]["windows"], "window_rounds": info[name][0]["window_rounds"]}
                           for name in variants}
    return out


def film_cost(split: str, generator: Path, n_images: int = 6, repeats: int = 2,
              variants: dict | None = None) -> dict:
    """Seconds per mini-MIAS film (1024 x 1024 px at 0.2 mm), plain and with ``--refine`` (the
    defaults and, with ``variants``, each of those TT-GPR settings), best of ``repeats`` per
    image, interleaved, on the first ``n_images`` normals of the split's part: a film has a
    quarter of a 70 um field's pixels, so the plain pass is cheaper while TT-GPR's windows
    cost the same."""
    paths = recipe.image_paths(recipe.split().part(EVIDENCE_NORMALS[split]))[:n_images]
    best, info = _timed_segmenters(paths, generator, variants, repeats, MIAS_PIXEL_SPACING_MM)
    total = {name: float(np.sum(v)) for name, v in best.items()}
    windows = {name: [record["windows"] for record in records] for name, records in info.items()}
    out = {"images": f"{len(paths)} mini-MIAS normals of the {EVIDENCE_NORMALS[split]} part (1024 x 1024 at 0.2 mm)",
           "load_average": _load_average(), "repeats": repeats,
           "plain_s_per_image": round(total["plain"] / len(paths), 3),
           "refine_s_per_image": round(total["refine"] / len(paths), 3),
           "ratio": round(total["refine"] / total["plain"], 2), "windows_per_image": windows["refine"]}
    if variants:
        out["variants"] = {name: {"change": variants[name], "refine_s_per_image": round(total[name] / len(paths), 3),
                                  "ratio": round(total[name] / total["plain"], 2), "windows_per_image": windows[name]}
                           for name in variants}
    return out


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (other jobs on the same cores)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def cost_variant_effect(n: int, n_boot: int, generator: Path, variants: dict) -> dict:
    """What each cheaper setting changes, on development patches only (the ``dev`` evidence
    sets, calibration normals): at the operating point, pooled Dice and recall, object
    sensitivity and FP per patch for the defaults and each variant, with the variant minus
    the defaults (95 % paired bootstrap CI, patches resampled); and the seconds."""
    from mcgenref.evaluation.synthetic import score_synthetic, segmentor_logits
    from mcgenref.inference.refine import RefineConfig, Refiner
    from mcgenref.models.checkpoint import load_generator, load_model

    seg, seg_meta = load_model(SEGMENTOR, "cpu")
    gen, contract, _ = load_generator(generator, "cpu")
    operating = float(seg_meta["operating_point"]["threshold"])
    configs = {"defaults": RefineConfig()}
    configs.update({name: dataclasses.replace(RefineConfig(), **change) for name, change in variants.items()})
    stats = {"dice": lambda sc: lambda idx: sc.pooled(idx)["dice"],
             "recall": lambda sc: lambda idx: sc.pooled(idx)["recall"],
             "object_sensitivity": lambda sc: lambda idx: float(sc.objects[idx, 0].sum() / max(sc.objects[idx, 2].sum(), 1)),
             "fp_per_patch": lambda sc: lambda idx: float(sc.objects[idx, 1].mean())}
    out = {}
    for which in ("fresh", "shifted"):
        samples = evidence_patches("dev", which, n)
        z0 = segmentor_logits(seg, samples)
        scores, seconds = {}, {}
        for name, config in configs.items():
            refiner = Refiner(seg, gen, config, "cpu", contract=contract)
            t0 = time.perf_counter()
            probs = []
            for sample, z in zip(samples, z0, strict=True):
                refined = refiner.refine(sample.image, np.ones(sample.image.shape, bool), z,
                                         (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1])))
                probs.append(1.0 / (1.0 + np.exp(-np.clip(refined.logits, -60, 60))))
            seconds[name] = round(time.perf_counter() - t0, 1)
            scores[name] = score_synthetic(probs, samples, operating)
            print(f"cost variant {which} {name}: {seconds[name]} s", flush=True)
        every = np.arange(n)
        rows = {}
        for name in configs:
            row = {"seconds": seconds[name]}
            for stat, make in stats.items():
                row[stat] = make(scores[name])(every)
                if name != "defaults":
                    row[f"{stat}_vs_defaults"] = paired_difference(make(scores[name]), make(scores["defaults"]),
                                                                   n, n_boot)
            rows[name] = row
        out[which] = {"n_patches": n, "seed": EVIDENCE_SEEDS[("dev", which)],
                      "n_visible_mcs": int(scores["defaults"].objects[:, 2].sum()), "variants": rows}
    return out


def _fmt(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def write_tables(result: dict, out: Path) -> None:
    from tt_gpr_diagnostics import froc_table

    lines = ["# TT-GPR: ablation, real-image cluster FROC and cost", "",
             f"`python benchmarks/tt_gpr.py --split {result.get('split', 'test')}` on {result['machine']}; "
             f"{result['runtime_s']} s; "
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
                      "", "| variant | " + " | ".join(PIXEL_METRICS) + " | object sens | FP / patch | s |",
                      "|---|" + "---|" * (len(PIXEL_METRICS) + 3)]
            for name, v in syn["variants"].items():
                r = v[label]
                cells = [f"{_fmt(r['pooled'][k])} [{_fmt(r['ci'][k][0])}, {_fmt(r['ci'][k][1])}]" for k in PIXEL_METRICS]
                lines.append(f"| {name} | " + " | ".join(cells) +
                             f" | {_fmt(r['object_sensitivity'])} | {_fmt(r['object_fp_per_patch'], 2)} | {v['seconds']} |")
            lines.append("")
        ev = syn["seed_evidence"]
        lines += ["### Seed evidence: does the generator tell a seeded MC from a seeded non-MC?", "",
                  f"Seeds of TT-GPR's first round on the same patches; mean change of the segmentor's logit "
                  f"at the seed over {ev['k']} projections; a seed is an MC on the exact mask (dilated 1 px). "
                  "AUC: MC vs not.", "",
                  "| initial probability | seeds | on an MC | logit change, MC | logit change, not | "
                  "AUC of the change | AUC of the initial probability |", "|---|---|---|---|---|---|---|"]
        for name, b in ev["bands"].items():
            lines.append(f"| {name} | {b['seeds']} | {b['on_mc']} | {_fmt(b['mean_logit_change_mc'], 2)} | "
                         f"{_fmt(b['mean_logit_change_not'], 2)} | {_fmt(b['auc_logit_change'])} | "
                         f"{_fmt(b['auc_initial_prob'])} |")
        lines.append("")
    for ev in result.get("evidence", []):
        lines += [f"## Evidence: {ev['set']} set ({ev['split']} split)", "",
                  f"{ev['n_patches']} patches of 256 px at 0.2 mm (seed {ev['seed']}), {ev['n_visible_mcs']} "
                  f"visible MCs; TT-GPR defaults ({ev['tt_gpr']['windows_per_patch']:.1f} windows / patch, "
                  f"{ev['tt_gpr']['seconds']} s).", "",
                  "Object FROC: sensitivity at most N false components per patch (threshold sweep of the "
                  "logits, -12 to 30); TT-GPR minus the segmentor's own sweep, 95 % paired bootstrap CI.", "",
                  *froc_table(ev["froc"])]
        lines += ["", f"At the operating point {ev['operating_threshold']:g} (difference TT-GPR - segmentor, "
                  "95 % paired bootstrap CI):", "", "| | segmentor | TT-GPR | difference [CI] |", "|---|---|---|---|"]
        for name, v in ev["at_operating_point"].items():
            lines.append(f"| {name} | {_fmt(v['segmentor'])} | {_fmt(v['tt_gpr'])} | "
                         f"{v['difference']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] |")
        mc = ev["mcnemar"]
        lines += ["", f"Per-MC exact McNemar at the operating point: {mc['n']} MCs, found by both {mc['both']}, "
                  f"the segmentor only {mc['a_only']}, TT-GPR only {mc['b_only']}, neither {mc['neither']}; "
                  f"p = {mc['p_value']:.3g}.", ""]
    real = result.get("real")
    if real:
        lines += ["## Real mammograms: mini-MIAS cluster FROC", "",
                  f"8 calcification images (10 clusters) + the {EVIDENCE_NORMALS[result.get('split', 'test')]}"
                  " part's normals; `mcgenref evaluate`.", "",
                  "Cluster sensitivity [95 % CI] at 0.125 ... 2 false clusters per normal image.", "",
                  "| run | @ 0.125 | @ 0.25 | @ 0.5 | @ 1 | @ 2 | operating point: found / FP per normal | s / image |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in real.items():
            at = r["sensitivity_at"]
            lines.append(f"| {name} | " + " | ".join(_fmt(at[k]["sensitivity"], 2) + f" [{_fmt(at[k]['ci'][0], 2)}, "
                                                     f"{_fmt(at[k]['ci'][1], 2)}]" for k in ("0.125", "0.25", "0.5", "1", "2")) +
                         f" | {r['found']}/{r['n_truth_clusters']} at {_fmt(r['false_clusters_per_normal_image'], 2)}"
                         f" | {r['seconds_per_image']:.2f} |")
        lines.append("")
    cost = result.get("cost")
    if cost:
        load = f"load average {cost['load_average']}" if cost.get("load_average") else "load not recorded"
        lines += ["## Cost per full-field image", "",
                  f"{cost['image']}: plain {cost['plain_s']} s, `--refine` {cost['refine_s']} s: "
                  f"**{cost['ratio']}x** (best of {cost.get('repeats', 2)}, interleaved, {load}; "
                  f"{cost['tt_gpr']}).", ""]
        films = cost.get("films")
        if films:
            lines += [f"{films['images']}: plain {films['plain_s_per_image']} s, `--refine` "
                      f"{films['refine_s_per_image']} s per image: **{films['ratio']}x** (best of "
                      f"{films['repeats']} per image, interleaved, load average {films['load_average']}; "
                      f"windows per image {films['windows_per_image']}).", ""]
            if films.get("variants"):
                lines += ["| `--refine` on the films with | windows per image | s per image | x plain |", "|---|---|---|---|",
                          f"| the defaults | {np.mean(films['windows_per_image']):.1f} | {films['refine_s_per_image']} | "
                          f"{films['ratio']} |"]
                lines += [f"| {name} | {np.mean(v['windows_per_image']):.1f} | {v['refine_s_per_image']} | {v['ratio']} |"
                          for name, v in films["variants"].items()]
                lines.append("")
        if cost.get("variants"):
            lines += ["| `--refine` with | windows | window-rounds | s | x plain |", "|---|---|---|---|---|",
                      f"| the defaults | {cost['tt_gpr']['windows']} | {cost['tt_gpr']['window_rounds']} | "
                      f"{cost['refine_s']} | {cost['ratio']} |"]
            lines += [f"| {name} | {v['windows']} | {v['window_rounds']} | {v['refine_s']} | {v['ratio']} |"
                      for name, v in cost["variants"].items()]
            lines.append("")
    effect = result.get("cost_variant_effect")
    if effect:
        lines += ["## What the cheaper settings change (development patches)", "",
                  "The dev evidence sets (calibration normals); at the operating point; variant minus the "
                  "defaults with a 95 % paired bootstrap CI (patches resampled).", ""]
        for which, ev in effect.items():
            lines += [f"### {which} ({ev['n_patches']} patches, seed {ev['seed']}, {ev['n_visible_mcs']} visible MCs)", "",
                      "| setting | Dice | recall | object sens | FP / patch | s |", "|---|---|---|---|---|---|"]
            for name, row in ev["variants"].items():
                cells = []
                for stat in ("dice", "recall", "object_sensitivity", "fp_per_patch"):
                    cell = _fmt(row[stat], 2 if stat == "fp_per_patch" else 3)
                    if f"{stat}_vs_defaults" in row:
                        d = row[f"{stat}_vs_defaults"]
                        cell += f" ({d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}])"
                    cells.append(cell)
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['seconds']} |")
            lines.append("")
    (out / "table.md").write_text("\n".join(lines))


def _named_variants(names: str, option: str) -> dict:
    """The :data:`COST_VARIANTS` named in ``names`` (semicolon-separated); unknown names exit."""
    chosen = [name.strip() for name in names.split(";") if name.strip()]
    if unknown := [name for name in chosen if name not in COST_VARIANTS]:
        raise SystemExit(f"error: {option}: unknown {unknown}; known: {list(COST_VARIANTS)}")
    return {name: COST_VARIANTS[name] for name in chosen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, default=GENERATOR)
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/tt_gpr (test) or benchmarks/results/tt_gpr_dev (dev)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--synthetic", type=int, default=300)
    ap.add_argument("--split", choices=("dev", "test"), default="dev",
                    help="dev: calibration normals and development seeds only (every development run); "
                         "test: the held-out test normals and the test sets (the one final run)")
    ap.add_argument("--evidence", type=int, default=0, metavar="N",
                    help="patches per evidence set (fresh-seed and shifted; 0: skip)")
    ap.add_argument("--evidence-sets", default="fresh,shifted",
                    help="comma-separated evidence sets to run (default: fresh,shifted); run one set per "
                         "process, each with its own --out, to use both cores")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--cost-variants", type=int, default=None, metavar="N",
                    help="also time the cheaper TT-GPR settings of COST_VARIANTS on the full field "
                         "(unless --skip-cost) and score them against the defaults on N patches of each "
                         "dev evidence set (0: time only; development data only, refused with --split test)")
    ap.add_argument("--variants", default="", metavar="NAMES",
                    help="semicolon-separated names of COST_VARIANTS that --cost-variants times and scores "
                         "(default: all of them)")
    ap.add_argument("--real-variants", default="", metavar="NAMES",
                    help="semicolon-separated names of COST_VARIANTS to run on the real images too, beside the "
                         "defaults (development data only, refused with --split test)")
    ap.add_argument("--tables-only", action="store_true", help="rewrite table.md from --out/table.json")
    args = ap.parse_args()
    if args.out is None:
        args.out = REPO / "benchmarks/results" / ("tt_gpr" if args.split == "test" else "tt_gpr_dev")
    if args.tables_only:
        write_tables(json.loads((args.out / "table.json").read_text()), args.out)
        return
    if args.cost_variants is not None and args.split == "test":
        raise SystemExit("error: --cost-variants scores development patches only; use --split dev")
    real_variants = _named_variants(args.real_variants, "--real-variants")
    cost_variants = _named_variants(args.variants, "--variants") or COST_VARIANTS
    if real_variants and args.split == "test":
        raise SystemExit("error: --real-variants runs on development images only; use --split dev")
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    from mcgenref.models.checkpoint import GENERATOR_KIND, read_model_meta

    t0 = time.perf_counter()
    gpu = torch.cuda.is_available()
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if gpu else "no GPU"),
        "generator_sha256": read_model_meta(args.generator, GENERATOR_KIND)["weights"]["sha256"],
        "split": args.split,
    }
    if args.synthetic > 0:
        result["synthetic"] = synthetic_ablation(args.synthetic, args.bootstrap, args.generator, args.split)
    if args.evidence > 0:
        result["evidence"] = [evidence(args.split, which, args.evidence, args.bootstrap, args.generator)
                              for which in args.evidence_sets.split(",") if which]
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_real:
            result["real"] = real_clusters(Path(work), args.bootstrap, args.generator, args.split, real_variants)
        if not args.skip_cost:
            result["cost"] = full_field_cost(Path(work), args.generator,
                                             variants=None if args.cost_variants is None else cost_variants)
            result["cost"]["films"] = film_cost(args.split, args.generator,
                                                variants=None if args.cost_variants is None else cost_variants)
    if args.cost_variants:
        result["cost_variant_effect"] = cost_variant_effect(args.cost_variants, args.bootstrap, args.generator,
                                                            cost_variants)
    result["runtime_s"] = round(time.perf_counter() - t0, 1)
    (args.out / "table.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_tables(result, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
