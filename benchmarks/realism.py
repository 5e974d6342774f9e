"""Realism evidence: synthetic MCs vs the real ones of mini-MIAS, procedural vs real backgrounds.

    python benchmarks/realism.py --out benchmarks/results/realism [--n-synthetic 300] [--seed 0]
                                 [--config synthesis.json] [--normal-stride 2]
                                 [--normals-part training]
    python benchmarks/realism.py --resolution 85um   # -> benchmarks/results/realism-85um

What it does (details and the reading of the results: ``docs/realism.md``):

(a) Real MCs. Each mini-MIAS CALC image present is read at 0.2 mm, its breast segmented (the
    pectoral muscle excluded) and normalised inside the breast (1st/99th percentile -> 0/1). The
    spot detector of :mod:`mcgenref.spots` runs inside every cluster circle of
    ``Info.txt`` (intersected with the breast) and every candidate is measured. The same
    detector also runs in the (skin-eroded) breasts of normal images: the reference for what it
    finds where there is no MC. A cluster candidate is kept as "MC-like" when its CNR is above
    the 97.5th percentile of the normal-tissue candidates (``--select-percentile``); the expected
    number of noise peaks among the kept ones (density above that CNR in normal tissue x
    cluster area) is reported as the purity of the selection.
(b) Synthetic MCs. ``--n-synthetic`` samples (draw_sample_params + render_sample, the given or
    default SynthesisConfig, no empty samples, no redraws) on normalised 256 x 256 patches from
    inside the breasts of NORMAL mini-MIAS images at 0.2 mm. The same detector runs inside discs around
    each synthetic cluster (radius = extent/2 + 0.5 mm) and isolated MC (1 mm), the same CNR
    selection is applied, and every visible MC is also measured at its known centre.
(c) Backgrounds. beta (P ~ 1/f^beta) of 256 x 256 patches inside the breast of the normals,
    vs procedural backgrounds (BackgroundConfig), in the band ``BETA_BAND_CPMM``.
(d) ``table.md``, ``table.json`` (median and IQR of each feature, KS statistics) and
    ``realism.png``.
(e) ``--resolution 85um`` (:func:`run_85um`): the same comparison at 85 um on the MAGIC-5
    crops, for the defaults and the fine-resolution preset; ``table.md`` and ``table.json``.

Normals: only the ``training`` part of the split by woman
(:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`, 113 images) is used, for (a)'s
normal-tissue reference, (b) and (c): a calibration of the synthesis defaults must not see the
calibration or test women (``--normals-part`` changes that for checks only).

The 8 CALC images are development data (this comparison, operating thresholds): never train on
them. Real data is read from ``$MCGENREF_DATA`` (default ``../shared/data``).
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
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcgenref.config import load_config, to_dict  # noqa: E402
from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets import mias  # noqa: E402
from mcgenref.datasets.mias_split import MIAS_NORMAL_SPLIT, SPLIT_PARTS  # noqa: E402
from mcgenref.errors import McGenRefWarning  # noqa: E402
from mcgenref.evaluation.realism import (  # noqa: E402
    PROFILE_RADII_MM,
    ks_statistic,
    measure_spots,
    power_spectrum_slope,
    summarise,
)
from mcgenref.spots import find_spot_candidates  # noqa: E402

SPACING = (mias.MIAS_PIXEL_SPACING_MM, mias.MIAS_PIXEL_SPACING_MM)
PATCH = 256
#: Detector settings, shared by the real, normal and synthetic runs.
DETECTOR = {"sigma_mm": 0.15, "background_sigma_mm": 0.6, "min_distance_mm": 0.5,
            "threshold": 0.0}
#: Skin-side erosion of the breast for the normal-tissue reference (mm): keeps the
#: measurement annulus (1.2 mm) inside the breast.
NORMAL_EROSION_MM = 1.5
#: Candidates measured per normal image (a random subset; counts use all of them).
NORMAL_MAX_MEASURED = 1500
#: Frequency band for beta (cycles/mm): see docs/realism.md.
BETA_BAND_CPMM = (0.15, 0.8)
FEATURES = ("contrast", "cnr", "fwhm_mm", "noise")
#: A cluster candidate is "MC-like" when its CNR exceeds this percentile of the CNR of the
#: detector's candidates in normal tissue (P97.5: ~30 real spots kept, ~88 % estimated purity).
SELECT_PERCENTILE = 97.5
#: Bins of the renderer's CNR (noise-free peak / local noise) for the visibility calibration.
RENDER_CNR_BINS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, np.inf)


# ----------------------------------------------------------------------------- loading


def load_mias_image(ref: str, root: Path):
    """(normalised float32 image, breast mask without pectoral) of a mini-MIAS image."""
    from mcgenref.io import fit_normalization, read_image, segment_breast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", McGenRefWarning)
        image, meta = read_image(mias.image_path(ref, root), pixel_spacing_mm=SPACING[0])
        region = segment_breast(image, meta, pectoral="always")
    breast = region.breast & ~region.pectoral
    norm = fit_normalization(image, breast)
    return np.asarray(norm.apply(image), dtype=np.float32), breast


def _disk_mask(shape, centres_radii_px) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    m = np.zeros(shape, dtype=bool)
    for r0, c0, rad in centres_radii_px:
        m |= (rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2
    return m


def _concat(dicts: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate per-image measurement dicts (every dict has the same keys)."""
    keys = [k for k in (dicts[0] if dicts else {}) if k != "radii_mm"]
    return {k: np.concatenate([d[k] for d in dicts]) for k in keys}


CROP_HALF_PX = 8  # 17 x 17 px = 3.4 mm at 0.2 mm: the figure's spot gallery


def _crops(img: np.ndarray, m: dict, half: int = CROP_HALF_PX) -> np.ndarray:
    pad = np.pad(img, half, mode="edge")
    r = np.clip(np.rint(m["row"]).astype(int), 0, img.shape[0] - 1)
    c = np.clip(np.rint(m["col"]).astype(int), 0, img.shape[1] - 1)
    out = np.zeros((len(r), 2 * half + 1, 2 * half + 1), np.float32)
    for i, (ri, ci) in enumerate(zip(r, c)):
        out[i] = pad[ri:ri + 2 * half + 1, ci:ci + 2 * half + 1]
    return out


def _subset(m: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v[keep] if k != "radii_mm" else v) for k, v in m.items()}


# ----------------------------------------------------------------------------- (a) real


def real_clusters(root: Path) -> tuple[dict, list[dict]]:
    clusters = mias.calc_clusters(root)
    per_cluster, notes = [], []
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, c in enumerate(clusters):
        if c.ref not in cache:
            cache[c.ref] = load_mias_image(c.ref, root)
        img, breast = cache[c.ref]
        circle = c.mask(img.shape)
        inside = int(round(c.centre_row)), int(round(c.centre_col))
        in_breast = (0 <= inside[0] < img.shape[0] and 0 <= inside[1] < img.shape[1]
                     and breast[inside])
        region = circle & breast
        info = {"ref": c.ref, "cluster": i, "centre_row": c.centre_row,
                "centre_col": c.centre_col, "radius_px": c.radius_px,
                "area_mm2": float(region.sum() * SPACING[0] * SPACING[1]),
                "centre_in_breast": bool(in_breast)}
        if not in_breast:
            info["skipped"] = "cluster centre outside the breast mask (annotation error?)"
            notes.append(info)
            continue
        pos = find_spot_candidates(img, SPACING, region, **DETECTOR)
        m = measure_spots(img, SPACING, pos)
        m["crop"] = _crops(img, m)
        m["ref"] = np.array([c.ref] * len(pos), dtype=object)
        info["n_candidates"] = int(len(pos))
        notes.append(info)
        per_cluster.append(m)
    return _concat(per_cluster), notes


# ----------------------------------------------------------------------------- normals


def load_normals(root: Path, refs: list[str]):
    out = []
    for ref in refs:
        img, breast = load_mias_image(ref, root)
        out.append((ref, img, breast))
    return out


def normal_reference(normals, rng: np.random.Generator) -> tuple[dict, dict]:
    er = int(round(NORMAL_EROSION_MM / SPACING[0]))
    parts, counts, area = [], 0, 0.0
    for _ref, img, breast in normals:
        region = ndimage.binary_erosion(breast, iterations=er)
        pos = find_spot_candidates(img, SPACING, region, **DETECTOR)
        counts += len(pos)
        area += float(region.sum() * SPACING[0] * SPACING[1])
        if len(pos) > NORMAL_MAX_MEASURED:
            pos = pos[np.sort(rng.choice(len(pos), NORMAL_MAX_MEASURED, replace=False))]
        parts.append(measure_spots(img, SPACING, pos))
    return _concat(parts), {"n_candidates": counts, "area_mm2": area,
                            "density_per_mm2": counts / area if area else float("nan"),
                            "n_images": len(normals)}


# ----------------------------------------------------------------------------- (b) synthetic


def _valid_origins(breast: np.ndarray, size: int, min_fraction: float = 0.95) -> np.ndarray:
    h, w = breast.shape
    if h < size or w < size:
        return np.zeros((0, 2), dtype=np.int64)
    ii = np.zeros((h + 1, w + 1), dtype=np.int64)
    ii[1:, 1:] = np.cumsum(np.cumsum(breast, axis=0, dtype=np.int64), axis=1)
    cnt = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    return np.argwhere(cnt >= int(np.ceil(min_fraction * size * size)))


def synthetic_spots(normals, config, n: int, seed: int) -> tuple[dict, dict, dict]:
    from mcgenref.synthesis.geometry import draw_sample_params
    from mcgenref.synthesis.render import render_sample

    cfg = dataclasses.replace(config, empty_fraction=0.0, patch_size_px=PATCH)
    origins = [_valid_origins(b, PATCH) for _r, _i, b in normals]
    usable = [i for i, o in enumerate(origins) if len(o)]
    det_parts, known_parts = [], []
    n_mcs = n_visible = 0
    area = 0.0
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        j = usable[int(rng.integers(len(usable)))]
        r0, c0 = origins[j][int(rng.integers(len(origins[j])))]
        _ref, img, breast = normals[j]
        patch = img[r0:r0 + PATCH, c0:c0 + PATCH].copy()
        allowed = breast[r0:r0 + PATCH, c0:c0 + PATCH].copy()
        params = draw_sample_params(rng, patch.shape, SPACING, cfg, allowed=allowed)
        res = render_sample(patch, SPACING, params, cfg, int(rng.integers(2**31)))
        out = np.asarray(res.image, dtype=np.float32)
        discs = [(c.centre_row, c.centre_col, (0.5 * c.extent_mm + 0.5) / SPACING[0])
                 for c in params.clusters]
        discs += [(m.centre_row, m.centre_col, 1.0 / SPACING[0])
                  for m in params.mcs if m.cluster_id < 0]
        region = _disk_mask(patch.shape, discs) & allowed
        area += float(region.sum() * SPACING[0] * SPACING[1])
        pos = find_spot_candidates(out, SPACING, region, **DETECTOR)
        dm = measure_spots(out, SPACING, pos)
        dm["crop"] = _crops(out, dm)
        det_parts.append(dm)
        n_mcs += len(params.mcs)
        centres = np.array([[m.centre_row, m.centre_col] for m in params.mcs],
                           dtype=np.float64).reshape(-1, 2)
        km = measure_spots(out, SPACING, centres)
        # what the renderer recorded: noise-free peak CNR and the mask decision
        km["render_cnr"] = np.array([float(r.cnr) for r in res.mcs])
        km["visible"] = np.array([bool(r.visible) for r in res.mcs], dtype=bool)
        km["size_mm"] = np.array([float(m.size_mm) for m in params.mcs])
        n_visible += int(km["visible"].sum())
        known_parts.append(km)
    info = {"n_samples": n, "n_mcs": n_mcs, "n_visible": n_visible, "region_area_mm2": area,
            "n_candidates": int(sum(len(d["contrast"]) for d in det_parts))}
    return _concat(det_parts), _concat(known_parts), info


# ----------------------------------------------------------------------------- (c) backgrounds


def real_betas(normals, rng: np.random.Generator, per_image: int = 2) -> np.ndarray:
    betas = []
    for _ref, img, breast in normals:
        o = _valid_origins(breast, PATCH, 1.0)
        if not len(o):
            continue
        for idx in rng.choice(len(o), min(per_image, len(o)), replace=False):
            r0, c0 = o[idx]
            betas.append(power_spectrum_slope(img[r0:r0 + PATCH, c0:c0 + PATCH], SPACING,
                                              band_cpmm=BETA_BAND_CPMM))
    return np.array(betas)


def procedural_betas(config, n: int, seed: int) -> np.ndarray:
    from mcgenref.synthesis.background import procedural_background

    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, 10_000 + k])
        bg = procedural_background(rng, (PATCH, PATCH), SPACING, config.background)
        out.append(power_spectrum_slope(bg, SPACING, band_cpmm=BETA_BAND_CPMM))
    return np.array(out)


# ----------------------------------------------------------------------------- (d) outputs


def _fmt(s: dict, digits: int = 3) -> str:
    if s["n"] == 0:
        return "n/a (n=0)"
    return f"{s['median']:.{digits}f} [{s['q25']:.{digits}f}, {s['q75']:.{digits}f}]"


def mean_profile(profiles: np.ndarray, with_mean: bool = True) -> dict:
    """The mean radial profile of a group's spots, and that mean divided by its own centre
    value (a ratio of means: robust to the many near-zero centres of noise peaks)."""
    ok = np.isfinite(profiles).all(axis=1) if len(profiles) else np.zeros(0, bool)
    mean = profiles[ok].mean(axis=0) if ok.any() else np.full(len(PROFILE_RADII_MM), np.nan)
    normed = mean / mean[0] if mean[0] > 0 else np.full_like(mean, np.nan)
    out = {"radii_mm": [float(r) for r in PROFILE_RADII_MM]}
    if with_mean:
        out["mean"] = [float(v) for v in mean]
    out["mean_normalised"] = [float(v) for v in normed]
    return out


def build_table(groups: dict[str, dict], betas: dict[str, np.ndarray]) -> dict:
    table: dict = {"features": {}, "profiles": {}, "beta": {}, "ks": {}}
    for feat in FEATURES:
        table["features"][feat] = {g: summarise(m[feat]) for g, m in groups.items()}
    for g, m in groups.items():
        table["profiles"][g] = mean_profile(m["profile"])
    for g, b in betas.items():
        table["beta"][g] = summarise(b)
    pairs = [("real_selected", "synthetic_selected"), ("real_selected", "synthetic_known"),
             ("real_all", "synthetic_all"), ("real_all", "normal_tissue")]
    for a, b in pairs:
        if a in groups and b in groups:
            table["ks"][f"{a} vs {b}"] = {f: ks_statistic(groups[a][f], groups[b][f])
                                          for f in FEATURES}
    if len(betas) == 2:
        a, b = list(betas)
        table["ks"][f"beta {a} vs {b}"] = ks_statistic(betas[a], betas[b])
    return table


def visibility_calibration(mcs: dict, normal_cnr: np.ndarray) -> list[dict]:
    """How synthetic MCs of a given renderer CNR compare with the noise peaks of normal tissue.

    For each bin of the renderer's CNR (the one ``mask.min_cnr`` thresholds), the median CNR
    measured at the MC's known centre, its median rank among the normal-tissue candidates
    (0.5 = a typical background bump) and the fractions above their P90 and P97.5.
    """
    ref = np.sort(normal_cnr[np.isfinite(normal_cnr)])
    p90, p975 = np.percentile(ref, [90, 97.5])
    rows = []
    rc, mc = mcs["render_cnr"], mcs["cnr"]
    for lo, hi in zip(RENDER_CNR_BINS[:-1], RENDER_CNR_BINS[1:]):
        sel = (rc >= lo) & (rc < hi) & np.isfinite(mc)
        if not sel.any():
            continue
        m = mc[sel]
        rows.append({"render_cnr": [float(lo), float(hi)], "n": int(sel.sum()),
                     "measured_cnr_median": float(np.median(m)),
                     "noise_rank_median": float(np.median(np.searchsorted(ref, m) / len(ref))),
                     "frac_above_normal_p90": float(np.mean(m > p90)),
                     "frac_above_normal_p97_5": float(np.mean(m > p975))})
    return rows


GROUP_LABELS = {
    "real_selected": "real, MC-like (cluster candidates, CNR > normal-tissue percentile)",
    "synthetic_selected": "synthetic, same detector + selection",
    "synthetic_known": "synthetic, at known centres of visible MCs",
    "real_all": "real, all cluster candidates",
    "synthetic_all": "synthetic, all candidates in cluster regions",
    "normal_tissue": "normal tissue, all candidates (noise peaks)",
}


def write_markdown(path: Path, table: dict, meta: dict) -> None:
    lines = ["# Realism: synthetic vs real microcalcifications (mini-MIAS, 0.2 mm)", "",
             f"Generated by `benchmarks/realism.py` ({meta['command']}), "
             f"{meta['runtime_s']:.0f} s on {meta['machine']}.", "",
             f"Normals: the {meta['normals']['part']} part of the split by woman "
             f"({meta['normals']['n_images']} images; `mcgenref.datasets.mias_split`), for the "
             "normal-tissue reference, the synthetic MCs and the backgrounds.", "",
             "Median [25th, 75th percentile]; n = number of spots. Contrast and noise in "
             "normalised intensity (0 ~ 1st, 1 ~ 99th percentile inside the breast).", "",
             "| group | n | contrast | CNR | FWHM (mm) | local noise |",
             "|---|---|---|---|---|---|"]
    groups = list(table["features"]["contrast"])
    for g in groups:
        f = table["features"]
        lines.append(f"| {GROUP_LABELS.get(g, g)} | {f['contrast'][g]['n']} | "
                     f"{_fmt(f['contrast'][g])} | {_fmt(f['cnr'][g], 1)} | "
                     f"{_fmt(f['fwhm_mm'][g], 2)} | {_fmt(f['noise'][g], 4)} |")
    lines += ["", "Two-sample Kolmogorov-Smirnov statistic D (0 = same distribution, "
              "1 = disjoint):", "", "| comparison | contrast | CNR | FWHM | noise |",
              "|---|---|---|---|---|"]
    for k, v in table["ks"].items():
        if isinstance(v, dict):
            lines.append(f"| {k} | " + " | ".join(f"{v[f]:.2f}" for f in FEATURES) + " |")
    lines += ["", "Mean radial profile, normalised to 1 at the centre (value at radius, mm):",
              "", "| group | " + " | ".join(f"{r:.1f}" for r in PROFILE_RADII_MM[1:8]) + " |",
              "|---|" + "---|" * 7]
    for g, p in table["profiles"].items():
        vals = p["mean_normalised"][1:8]
        lines.append(f"| {GROUP_LABELS.get(g, g)} | " + " | ".join(f"{v:.2f}" for v in vals)
                     + " |")
    b = table["beta"]
    lines += ["", f"Background power-spectrum slope beta (band {BETA_BAND_CPMM[0]}-"
              f"{BETA_BAND_CPMM[1]} cycles/mm, 256 x 256 patches at 0.2 mm):", "",
              "| backgrounds | n | beta |", "|---|---|---|"]
    for g, s in b.items():
        lines.append(f"| {g} | {s['n']} | {_fmt(s, 2)} |")
    for k, v in table["ks"].items():
        if not isinstance(v, dict):
            lines.append(f"\nKS D ({k}) = {v:.2f}")
    lines += ["", "Visibility calibration (all synthetic MCs, visible or not): renderer CNR "
              "(noise-free peak / local noise, what `mask.min_cnr` thresholds) vs the CNR "
              "measured at the known centre and its rank among normal-tissue noise peaks:", "",
              "| renderer CNR | n | measured CNR (median) | rank among noise peaks (median) "
              "| > normal P90 | > normal P97.5 |", "|---|---|---|---|---|---|"]
    for r in table["visibility"]:
        lo, hi = r["render_cnr"]
        lines.append(f"| {lo:g}-{hi:g} | {r['n']} | {r['measured_cnr_median']:.1f} | "
                     f"{r['noise_rank_median']:.2f} | {r['frac_above_normal_p90']:.2f} | "
                     f"{r['frac_above_normal_p97_5']:.2f} |")
    sel = meta["selection"]
    lines += ["", "Selection: " + (
        f"CNR > {sel['cnr_threshold']:.2f} (P{sel['percentile']:g} of {sel['n_normal_measured']} "
        f"normal-tissue candidates measured, from {meta['normal']['n_candidates']} in "
        f"{meta['normal']['n_images']} images); {sel['n_real_selected']} real cluster candidates "
        f"kept, {sel['expected_noise_peaks']:.1f} expected from normal tissue "
        f"(estimated purity {sel['purity']:.2f})."), ""]
    skipped = [c for c in meta["clusters"] if "skipped" in c]
    for c in skipped:
        lines.append(f"Skipped cluster {c['ref']} (row {c['centre_row']:.0f}, col "
                     f"{c['centre_col']:.0f}, r {c['radius_px']:.0f} px): {c['skipped']}.")
    path.write_text("\n".join(lines) + "\n")


def _gallery(crops: np.ndarray | None, n_rows: int = 2, n_cols: int = 8,
             seed: int = 0) -> np.ndarray:
    """A tile of randomly chosen spot crops, each scaled to [0, 1]."""
    side = 2 * CROP_HALF_PX + 1
    tile = np.ones((n_rows * (side + 1) - 1, n_cols * (side + 1) - 1), np.float32)
    if crops is None or len(crops) == 0:
        return tile
    pick = np.random.default_rng(seed).permutation(len(crops))[: n_rows * n_cols]
    for i, j in enumerate(pick):
        c = crops[j]
        c = (c - c.min()) / max(float(c.max() - c.min()), 1e-6)
        r, q = divmod(i, n_cols)
        tile[r * (side + 1):r * (side + 1) + side, q * (side + 1):q * (side + 1) + side] = c
    return tile


def plot(path: Path, groups: dict, betas: dict, table: dict, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"real_selected": ("C3", "-", 2.0), "synthetic_selected": ("C0", "-", 2.0),
             "synthetic_known": ("C0", "--", 1.2), "normal_tissue": ("0.5", ":", 1.2)}
    fig = plt.figure(figsize=(12, 10))
    gs = fig.add_gridspec(3, 6, height_ratios=[1, 1, 0.8])
    axes = np.array([[fig.add_subplot(gs[r, 2 * c:2 * c + 2]) for c in range(3)]
                     for r in range(2)])
    specs = [("contrast", "peak contrast (normalised; last bin: beyond)", (0, 0.4)),
             ("cnr", "CNR (last bin: beyond)", (0, 30)),
             ("fwhm_mm", "FWHM (mm)", (0, 1.4))]
    for ax, (feat, label, rng) in zip(axes[0], specs):
        bins = np.linspace(*rng, 36)
        for g, (col, ls, lw) in style.items():
            v = groups[g][feat]
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(np.clip(v, *rng), bins=bins, density=True, histtype="step", color=col,
                        ls=ls, lw=lw, label=f"{g} (n={len(v)})")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].axvline(meta["selection"]["cnr_threshold"], color="k", lw=0.8)
    for ax, key, ylabel in ((axes[1, 0], "mean", "mean profile - background"),
                            (axes[1, 1], "mean_normalised", "mean profile / centre value")):
        for g, (col, ls, lw) in style.items():
            p = table["profiles"][g]
            ax.plot(p["radii_mm"], p[key], color=col, ls=ls, lw=lw, marker=".", label=g)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("radius (mm)")
        ax.set_ylabel(ylabel)
    axes[1, 1].axhline(0.5, color="k", lw=0.5, ls=":")
    ax = axes[1, 2]
    bins = np.linspace(1.0, 4.5, 36)
    for (g, b), col in zip(betas.items(), ("C3", "C0")):
        b = b[np.isfinite(b)]
        ax.hist(np.clip(b, 1.0, 4.5), bins=bins, density=True, histtype="step", color=col, lw=2,
                label=f"{g} (n={len(b)})")
    ax.set_xlabel(f"beta ({BETA_BAND_CPMM[0]}-{BETA_BAND_CPMM[1]} c/mm)")
    ax.legend(fontsize=7)
    for k, (g, title) in enumerate((("real_selected", "real MC-like spots"),
                                    ("synthetic_selected", "synthetic, same selection"))):
        ax = fig.add_subplot(gs[2, 3 * k:3 * k + 3])
        ax.imshow(_gallery(groups[g].get("crop"), seed=k), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"{title} (3.4 mm crops, each min-max scaled)", fontsize=9)
        ax.axis("off")
    fig.suptitle("Synthetic vs real MCs (mini-MIAS, 0.2 mm) and backgrounds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


# ----------------------------------------------------------------------------- 85 um (MAGIC-5)

#: MAGIC-5 crops: 60 x 60 px at 85 um (5.1 mm). MCs are sharper than on 200 um film, so the
#: detector and the annulus are scaled down; the same settings serve the real, normal and
#: synthetic runs, so the comparison stays like for like.
SPACING_85 = (0.085, 0.085)
DETECTOR_85 = {"sigma_mm": 0.1, "background_sigma_mm": 0.4, "min_distance_mm": 0.3,
               "threshold": 0.0}
MEASURE_85 = {"annulus_mm": (0.4, 0.8), "noise_sigma_mm": 0.15, "max_fwhm_radius_mm": 0.8}
#: Candidates keep this distance (mm) from the crop border, so their annulus is inside it.
BORDER_85_MM = 0.9
#: beta band (cycles/mm) that a 5 mm crop and a 64 px mini-MIAS patch both resolve, above
#: the breast-shape range and below the Nyquist frequency of 200 um film (2.5 c/mm).
BETA_BAND_85_CPMM = (0.4, 1.6)
#: High band, where 85 um crops show their noise floor (up to Nyquist 5.9 c/mm).
BETA_HIGH_BAND_85_CPMM = (1.6, 5.0)


def _interior(shape, spacing=SPACING_85, border_mm=BORDER_85_MM) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    br, bc = int(np.ceil(border_mm / spacing[0])), int(np.ceil(border_mm / spacing[1]))
    m[br:shape[0] - br, bc:shape[1] - bc] = True
    return m


def _spots_in(crops: list[np.ndarray], regions: list[np.ndarray] | None = None) -> dict:
    parts = []
    for k, img in enumerate(crops):
        region = _interior(img.shape) if regions is None else regions[k]
        pos = find_spot_candidates(img, SPACING_85, region, **DETECTOR_85)
        parts.append(measure_spots(img, SPACING_85, pos, **MEASURE_85))
    return _concat(parts)


def synthetic_spots_85(backgrounds: list[np.ndarray], config, n: int, seed: int) -> tuple[dict, dict]:
    """Synthetic MCs rendered at 85 um into MAGIC-5 normal crops; same detector and regions."""
    from mcgenref.synthesis.geometry import draw_sample_params
    from mcgenref.synthesis.render import render_sample

    size = backgrounds[0].shape[0]
    cfg = dataclasses.replace(config, empty_fraction=0.0, patch_size_px=size)
    det, known = [], []
    n_mcs = n_visible = 0
    for k in range(n):
        rng = np.random.default_rng([seed, 85, k])
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        params = draw_sample_params(rng, bg.shape, SPACING_85, cfg)
        res = render_sample(bg, SPACING_85, params, cfg, int(rng.integers(2**31)))
        out = np.asarray(res.image, dtype=np.float32)
        discs = [(c.centre_row, c.centre_col, (0.5 * c.extent_mm + 0.3) / SPACING_85[0])
                 for c in params.clusters]
        discs += [(m.centre_row, m.centre_col, 0.5 / SPACING_85[0])
                  for m in params.mcs if m.cluster_id < 0]
        region = _disk_mask(bg.shape, discs) & _interior(bg.shape)
        pos = find_spot_candidates(out, SPACING_85, region, **DETECTOR_85)
        det.append(measure_spots(out, SPACING_85, pos, **MEASURE_85))
        vis = [m for m, r in zip(params.mcs, res.mcs) if r.visible]
        n_mcs += len(params.mcs)
        n_visible += len(vis)
        centres = np.array([[m.centre_row, m.centre_col] for m in vis]).reshape(-1, 2)
        known.append(measure_spots(out, SPACING_85, centres, **MEASURE_85))
    return _concat(det), {"known": _concat(known), "n_samples": n, "n_mcs": n_mcs,
                          "n_visible": n_visible}


def _betas(patches, spacing, band) -> np.ndarray:
    return np.array([power_spectrum_slope(p, spacing, band_cpmm=band) for p in patches])


def run_85um(out: Path | None, config, n_synthetic: int = 300, seed: int = 0,
             select_percentile: float = SELECT_PERCENTILE, command: str = "",
             root: Path | None = None, configs: dict | None = None) -> dict:
    """Synthetic MCs at 85 um vs the MC-like spots of the MAGIC-5 calcification crops.

    Real: the detector runs inside every calcification crop (one crop per region: shifted
    windows of a region would count its spots several times), away from the border. The same
    detector on the normal crops is the reference for noise peaks: a candidate is MC-like when
    its CNR exceeds their ``select_percentile``. Synthetic: ``n_synthetic`` samples rendered at
    85 um into the normal crops (the only real tissue at 85 um here; the calcification crops
    are never used as backgrounds), same detector inside the discs around the MCs, same
    selection. Intensities on the fixed 8-bit scale v = x / 255 (a crop has no breast to
    normalise in); CNR, FWHM and the profile's shape do not depend on that scale.
    ``configs``: extra named SynthesisConfigs compared the same way (the preset's choice).
    """
    from mcgenref.datasets import magic5

    t0 = time.perf_counter()
    root = Path(root) if root is not None else data_root()
    calc = [magic5.read_crop(p) for p in
            magic5.one_crop_per_region(magic5.list_crops("calcification", root))]
    normal = [magic5.read_crop(p) for p in
              magic5.one_crop_per_region(magic5.list_crops("normal", root))]
    normal_spots = _spots_in(normal)
    thr = float(np.nanpercentile(normal_spots["cnr"], select_percentile))
    real_all = _spots_in(calc)
    real_sel = _subset(real_all, real_all["cnr"] > thr)
    groups = {"real_selected": real_sel}
    infos = {}
    for name, cfg in {"default": config, **(configs or {})}.items():
        synth_all, info = synthetic_spots_85(normal, cfg, n_synthetic, seed)
        groups[f"synthetic_selected[{name}]"] = _subset(synth_all, synth_all["cnr"] > thr)
        groups[f"synthetic_known[{name}]"] = info.pop("known")
        infos[name] = {**info, "n_candidates": int(len(synth_all["cnr"])),
                       "synthesis_config": to_dict(cfg)}
    groups["real_all"] = real_all
    groups["normal_tissue"] = normal_spots
    table: dict = {"features": {}, "profiles": {}, "ks": {}, "beta": {}}
    for feat in FEATURES:
        table["features"][feat] = {g: summarise(m[feat]) for g, m in groups.items()}
    for g, m in groups.items():
        table["profiles"][g] = mean_profile(m["profile"], with_mean=False)
    for g in groups:
        if g.startswith("synthetic_selected") or g == "normal_tissue":
            table["ks"][f"real_selected vs {g}"] = {
                f: ks_statistic(real_sel[f], groups[g][f]) for f in FEATURES}
    # backgrounds: beta of the crops vs mini-MIAS normal patches (training part) vs procedural
    rng = np.random.default_rng(seed)
    mias_patches = []
    for ref in MIAS_NORMAL_SPLIT.training[::2]:
        img, breast = load_mias_image(ref, root)
        o = _valid_origins(breast, 64, 1.0)
        for idx in rng.choice(len(o), min(2, len(o)), replace=False) if len(o) else []:
            r0, c0 = o[idx]
            mias_patches.append(img[r0:r0 + 64, c0:c0 + 64])
    from mcgenref.synthesis.background import procedural_background

    proc = [procedural_background(np.random.default_rng([seed, 850, k]), normal[0].shape,
                                  SPACING_85, config.background) for k in range(len(normal))]
    for band_name, band in (("texture", BETA_BAND_85_CPMM), ("high", BETA_HIGH_BAND_85_CPMM)):
        table["beta"][band_name] = {
            "band_cpmm": list(band),
            "MAGIC-5 normal crops": summarise(_betas(normal, SPACING_85, band)),
            "MAGIC-5 calcification crops": summarise(_betas(calc, SPACING_85, band)),
            "procedural at 85 um": summarise(_betas(proc, SPACING_85, band)),
        }
    table["beta"]["texture"]["mini-MIAS normals (64 px at 0.2 mm)"] = summarise(
        _betas(mias_patches, SPACING, BETA_BAND_85_CPMM))
    table["meta"] = {
        "command": command or "benchmarks/realism.py --resolution 85um",
        "runtime_s": time.perf_counter() - t0,
        "machine": f"{os.cpu_count()}-core CPU container ({platform.machine()}, "
                   f"Python {platform.python_version()})",
        "seed": seed, "n_synthetic": n_synthetic, "spacing_mm": list(SPACING_85),
        "detector": DETECTOR_85, "measure": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in MEASURE_85.items()},
        "border_mm": BORDER_85_MM, "intensity": "v = x / 255 (fixed 8-bit scale)",
        "crops": {"calcification_regions": len(calc), "normal_regions": len(normal)},
        "selection": {"percentile": select_percentile, "cnr_threshold": thr,
                      "n_normal": int(len(normal_spots["cnr"])),
                      "n_real_all": int(len(real_all["cnr"])),
                      "n_real_selected": int(len(real_sel["cnr"]))},
        "synthetic": infos, "n_mias_patches": len(mias_patches),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table["meta"]["runtime_s"] = time.perf_counter() - t0
        write_markdown_85(out / "table.md", table)
        (out / "table.json").write_text(json.dumps(table, indent=1, default=_json_default) + "\n")
    return table


def write_markdown_85(path: Path, table: dict) -> None:
    meta = table["meta"]
    sel = meta["selection"]
    lines = ["# Realism at 85 um: synthetic MCs vs the MC-like spots of MAGIC-5 crops", "",
             f"Generated by `benchmarks/realism.py` ({meta['command']}), "
             f"{meta['runtime_s']:.0f} s on {meta['machine']}.", "",
             f"{meta['crops']['calcification_regions']} calcification and "
             f"{meta['crops']['normal_regions']} normal regions (one crop each), 60 x 60 px at "
             "0.085 mm; intensity v = x / 255. Synthetic MCs rendered into the normal crops. "
             f"MC-like: CNR > {sel['cnr_threshold']:.2f} (P{sel['percentile']:g} of "
             f"{sel['n_normal']} normal-crop candidates); {sel['n_real_selected']} of "
             f"{sel['n_real_all']} calcification-crop candidates kept.", "",
             "Median [25th, 75th percentile]:", "",
             "| group | n | contrast | CNR | FWHM (mm) | local noise |", "|---|---|---|---|---|---|"]
    f = table["features"]
    for g in f["contrast"]:
        lines.append(f"| {g} | {f['contrast'][g]['n']} | {_fmt(f['contrast'][g])} | "
                     f"{_fmt(f['cnr'][g], 1)} | {_fmt(f['fwhm_mm'][g], 2)} | "
                     f"{_fmt(f['noise'][g], 4)} |")
    lines += ["", "KS D against the real MC-like spots:", "",
              "| comparison | contrast | CNR | FWHM | noise |", "|---|---|---|---|---|"]
    for k, v in table["ks"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v[x]:.2f}" for x in FEATURES) + " |")
    lines += ["", "Mean radial profile / centre value (radius in mm):", "",
              "| group | " + " | ".join(f"{r:.1f}" for r in PROFILE_RADII_MM[1:6]) + " |",
              "|---|" + "---|" * 5]
    for g, p in table["profiles"].items():
        lines.append(f"| {g} | " + " | ".join(f"{v:.2f}" for v in p["mean_normalised"][1:6])
                     + " |")
    for band_name, b in table["beta"].items():
        lines += ["", f"Power-spectrum slope beta, {band_name} band {b['band_cpmm'][0]}-"
                  f"{b['band_cpmm'][1]} cycles/mm:", "", "| backgrounds | n | beta |", "|---|---|---|"]
        for g, st in b.items():
            if g != "band_cpmm":
                lines.append(f"| {g} | {st['n']} | {_fmt(st, 2)} |")
    lines += ["", "Synthetic MCs visible (CNR >= min_cnr) per config:", "",
              "| config | samples | MCs | visible |", "|---|---|---|---|"]
    for name, i in meta["synthetic"].items():
        lines.append(f"| {name} | {i['n_samples']} | {i['n_mcs']} | {i['n_visible']} "
                     f"({i['n_visible'] / max(i['n_mcs'], 1):.1%}) |")
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- main


def normal_refs_of(part: str, root: Path) -> list[str]:
    """The normals of one part of the split (``"all"``: every normal present), checked to be
    present."""
    present = set(mias.normal_refs(root))
    if part == "all":
        return sorted(present)
    refs = MIAS_NORMAL_SPLIT.part(part)
    missing = sorted(set(refs) - present)
    if missing:
        raise SystemExit(f"{len(missing)} normals of the {part} part are missing under {root}: "
                         f"{', '.join(missing[:5])}")
    return refs


def run(out: Path | None, config, n_synthetic: int = 300, seed: int = 0,
        normal_stride: int = 1, select_percentile: float = SELECT_PERCENTILE, command: str = "",
        root: Path | None = None, normals=None, normals_part: str = "training") -> dict:
    """Run the whole comparison; write the outputs when ``out`` is given. Returns the table."""
    t0 = time.perf_counter()
    root = Path(root) if root is not None else data_root()
    if not (mias.mias_dir(root) / "Info.txt").is_file():
        raise SystemExit(f"mini-MIAS not found under {root} (set MCGENREF_DATA)")
    rng = np.random.default_rng(seed)
    real_all, clusters = real_clusters(root)
    if normals is None:
        normals = load_normals(root, normal_refs_of(normals_part, root))
    ref_normals = normals[::normal_stride]
    normal, normal_info = normal_reference(ref_normals, rng)
    thr = float(np.nanpercentile(normal["cnr"], select_percentile))
    # density of normal-tissue peaks above thr, per mm^2, from the measured subset
    frac_above = float(np.mean(normal["cnr"] > thr))
    density_above = normal_info["density_per_mm2"] * frac_above
    cluster_area = sum(c["area_mm2"] for c in clusters if "skipped" not in c)
    expected = density_above * cluster_area
    real_sel = _subset(real_all, real_all["cnr"] > thr)
    n_sel = int(len(real_sel["cnr"]))
    synth_all, synth_mcs, synth_info = synthetic_spots(normals, config, n_synthetic, seed)
    synth_known = _subset(synth_mcs, synth_mcs["visible"])
    synth_sel = _subset(synth_all, synth_all["cnr"] > thr)
    betas = {"real normals": real_betas(normals, rng),
             "procedural": procedural_betas(config, max(40, len(normals)), seed)}
    groups = {"real_selected": real_sel, "synthetic_selected": synth_sel,
              "synthetic_known": synth_known, "real_all": real_all,
              "synthetic_all": synth_all, "normal_tissue": normal}
    table = build_table(groups, betas)
    table["visibility"] = visibility_calibration(synth_mcs, normal["cnr"])
    meta = {
        "command": command or "benchmarks/realism.py",
        "runtime_s": time.perf_counter() - t0,
        "machine": f"{os.cpu_count()}-core CPU container ({platform.machine()}, "
                   f"Python {platform.python_version()})",
        "seed": seed, "n_synthetic": n_synthetic, "spacing_mm": list(SPACING),
        "normals": {"part": normals_part, "n_images": len(normals),
                    "refs": [ref for ref, _img, _breast in normals]},
        "detector": DETECTOR, "beta_band_cpmm": list(BETA_BAND_CPMM),
        "normal": normal_info, "synthetic": synth_info, "clusters": clusters,
        "selection": {"feature": "cnr", "percentile": select_percentile,
                      "cnr_threshold": thr, "n_normal_measured": int(len(normal["cnr"])),
                      "n_real_all": int(len(real_all["cnr"])), "n_real_selected": n_sel,
                      "expected_noise_peaks": expected,
                      "purity": max(0.0, 1 - expected / n_sel) if n_sel else float("nan")},
        "synthesis_config": to_dict(config),
    }
    table["meta"] = meta
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        meta["runtime_s"] = time.perf_counter() - t0
        plot(out / "realism.png", groups, betas, table, meta)
        meta["runtime_s"] = time.perf_counter() - t0
        write_markdown(out / "table.md", table, meta)
        (out / "table.json").write_text(json.dumps(table, indent=1, default=_json_default)
                                        + "\n")
    return table


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


DEFAULT_OUT = REPO / "benchmarks" / "results" / "realism"


def fine_candidates() -> dict:
    """The configs the 85 um run compares with the default (see docs/realism.md)."""
    from mcgenref.synthesis.config import PSFConfig, SynthesisConfig

    base = SynthesisConfig()
    return {"fine_resolution preset": SynthesisConfig.fine_resolution(),
            "digital PSF (0.03, 0.07)": dataclasses.replace(
                base, psf=PSFConfig(sigma_mm_range=(0.03, 0.07)))}


def main(argv: list[str] | None = None) -> None:
    from mcgenref.synthesis.config import SynthesisConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-synthetic", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, default=None,
                    help="SynthesisConfig JSON (partial allowed); default: the package defaults")
    ap.add_argument("--normal-stride", type=int, default=1,
                    help="use every k-th normal image for the normal-tissue detector reference")
    ap.add_argument("--select-percentile", type=float, default=SELECT_PERCENTILE)
    ap.add_argument("--normals-part", choices=[*SPLIT_PARTS, "all"], default="training",
                    help="which normals (part of the split by woman) the calibration uses: "
                         "training (the default; the others only for checks)")
    ap.add_argument("--resolution", choices=["200um", "85um"], default="200um",
                    help="200um: mini-MIAS film (the calibration of the defaults); 85um: the "
                         "MAGIC-5 crops, default vs the fine-resolution preset")
    args = ap.parse_args(argv)
    config = load_config(SynthesisConfig, args.config) if args.config else SynthesisConfig()
    cmd = "python benchmarks/realism.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.resolution == "85um":
        out = args.out if args.out != DEFAULT_OUT else REPO / "benchmarks" / "results" / "realism-85um"
        table = run_85um(out, config, args.n_synthetic, args.seed, args.select_percentile,
                         command=cmd.strip(), configs=fine_candidates())
        print((out / "table.md").read_text())
        print(f"runtime {table['meta']['runtime_s']:.1f} s")
        return
    table = run(args.out, config, args.n_synthetic, args.seed, args.normal_stride,
                args.select_percentile, command=cmd.strip(), normals_part=args.normals_part)
    print((args.out / "table.md").read_text())
    print(f"runtime {table['meta']['runtime_s']:.1f} s")


if __name__ == "__main__":
    main()
