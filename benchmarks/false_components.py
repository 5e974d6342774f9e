"""What the shipped film model's false components on synthetic patches are, and whether a
component rule chosen on development patches halves them (issue 13).

    python benchmarks/false_components.py [--patches 100] [--bootstrap 1000]
                                          [--out benchmarks/results/false_components]

**Development data only.** The synthetic patches are cut from the normals of the
``calibration`` part of the three-way split (:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`)
and the real check uses the 8 mini-MIAS calcification images and the same calibration normals;
the script refuses to run if any of its images is in the ``test`` part. Its seeds
(:data:`SEEDS`) are used by no other script (``benchmarks/quality.py``, ``benchmarks/tt_gpr.py``,
training).

1. Two synthetic sets, built as ``benchmarks/quality.py`` builds its validation set
   (``quality.synthetic_set``: 256 px at 0.2 mm, synthesis defaults): ``choose`` (rules are
   chosen on it) and ``confirm`` (the chosen rule is checked on it, once). The shipped model
   (one window a patch, ``quality.model_probabilities``'s path) at its operating threshold,
   on each patch and on the same patch before the MCs were added (``Sample.background``).
2. Every predicted component (8-connected, ``prob >= threshold``) of the ``choose`` set is
   matched as ``mcgenref.evaluation.synthetic.score_synthetic`` matches it (centroid within
   1 mm of a *visible* MC of the record, one-to-one; the counts are checked against it), and
   each unmatched one is described: area, peak logit, distance to the nearest visible and
   invisible MC (visible: CNR >= ``mask.min_cnr`` = 5, the exact mask's rule; invisible MCs
   are in the image, not in the mask), overlap with the exact mask, distance to the patch edge
   and to the breast edge, a local contrast under it (:func:`local_cnr`), and whether the
   model fires there on the MC-free patch too. Categories (first that applies):
   :data:`CATEGORIES`.
3. Scoring variants (proposed, not used by any committed benchmark): duplicates of a found MC
   and components on invisible MCs counted as neither hit nor false; objects = ``segment``'s
   peaks instead of components.
4. Rules on components (area, peak logit, both, local contrast, membership of a cluster of
   the shipped rule, merging within r mm), each swept, and one oracle row (no component where
   the model fires on the MC-free patch: what hard negatives could at most give):
   false components per 1024 x 1024 px, pooled Dice, MC sensitivity, with paired bootstrap CIs
   of the differences against no rule (patches resampled). A rule is chosen on ``choose``
   (:func:`choose_rule`; with the issue's criterion alone, :func:`choose_dice_only`) and
   measured on ``confirm``.
5. Real check: the shipped ``segment`` (in-process) on the 8 calcification images and the 20
   calibration normals; each removing rule applied to the components of the mask before the
   MC table and clusters are formed (``find_calcifications`` on the map with the removed
   components set to 0): MCs inside the labelled circles removed, labelled clusters found,
   false clusters per calibration normal.

Writes table.md and table.json (machine, runtime). Nothing derived from real images is kept
but these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))
sys.path.insert(0, str(REPO / "benchmarks"))

import default_segmentor as recipe  # noqa: E402
import quality  # noqa: E402

from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402

#: base seeds of the two development sets; no other script uses them (quality.py: 987_654_321;
#: tt_gpr.py: 424_242_424, 616_161_617, 737_373_737, 51_515_011-51_515_013; training: 0,
#: 1_000_003)
SEEDS = {"choose": 13_130_013, "confirm": 13_130_014}
MODEL = quality.SHIPPED_MODEL
TOLERANCE_MM = 1.0  # score_synthetic's object tolerance
#: a patch is one network window here, so its sides are zero-padded context: ``segment``
#: keeps this much context around every searched pixel (``inference.sliding.CONTEXT_PX``)
EDGE_PX = 16
BREAST_EDGE_MM = 2.0
STRUCTURE = np.ones((3, 3), dtype=bool)  # 8-connectivity, as metrics.components

#: the categories of an unmatched component, the first that applies
CATEGORIES = (
    ("duplicate", "centroid within 1 mm of a visible MC (matched to another component: a "
                  "second component on a found MC)"),
    ("fragment", "overlaps the exact mask, centroid > 1 mm from every visible MC"),
    ("near_visible", "within 2 mm of a visible MC, not on the mask"),
    ("invisible", "centroid within 1 mm of an invisible MC (in the image, CNR < 5)"),
    ("patch_edge", f"centroid within {EDGE_PX} px ({EDGE_PX * 0.2:g} mm) of the patch side"),
    ("breast_edge", f"centroid within {BREAST_EDGE_MM:g} mm of the breast edge"),
    ("tissue_background", "none of the above; the model fires within 1 mm of it on the same "
                          "patch without the synthetic MCs (`Sample.background`): the normal's "
                          "own texture"),
    ("tissue", "none of the above: only with the MCs added"),
)


# --------------------------------------------------------------------------------- the data

def dev_refs() -> list[str]:
    """The calibration normals, refused if any is a test image."""
    parts = recipe.split()
    refs = list(parts.part("calibration"))
    leaked = (set(refs) | set(calc_refs())) & set(parts.part("test"))
    if leaked:
        raise SystemExit(f"error: development images in the test part: {sorted(leaked)}")
    return refs


@dataclass(frozen=True)
class DevSet:
    """Synthetic samples, the model's logits on them and on their backgrounds (the patch
    before the MCs were added), and each patch's breast mask."""

    name: str
    seed: int
    samples: list
    logits: list[np.ndarray]
    background_logits: list[np.ndarray]
    breast: list[np.ndarray]
    description: str


def dev_set(name: str, n: int, notes: list[str], model: Path = MODEL) -> DevSet:
    """``n`` patches of ``quality.synthetic_set`` on the calibration normals, seed
    ``SEEDS[name]``, with the shipped model's logits (one window a patch) on them and on their
    MC-free backgrounds, and their breast masks."""
    from mcgenref.errors import McGenRefWarning
    from mcgenref.evaluation.synthetic import segmentor_logits
    from mcgenref.models.checkpoint import load_model
    from mcgenref.synthesis.patches import NegativePatchSampler
    from mcgenref.synthesis.sample import Sample

    paths = recipe.image_paths(dev_refs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", McGenRefWarning)
        samples, how = quality.synthetic_set(model, paths, n, SEEDS[name], MIAS_PIXEL_SPACING_MM)
        # the patch's breast mask (the intensity rule does not change it)
        sampler = NegativePatchSampler(paths, quality.SYNTHETIC_PATCH_PX,
                                       pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    for w in caught:
        note = f"{w.message}".split(":")[0]
        if note not in notes:
            notes.append(note)
    breast = [sampler.patch_from_record(s.record["source"])[1] for s in samples]
    net, _ = load_model(model, "cpu")
    backgrounds = [Sample(s.background, s.mask, s.record) for s in samples]
    return DevSet(name, SEEDS[name], samples, segmentor_logits(net, samples),
                  segmentor_logits(net, backgrounds), breast, how)


def operating_threshold(model: Path = MODEL) -> float:
    """The model's recorded operating threshold (``model.json``)."""
    point = json.loads((model / "model.json").read_text()).get("operating_point")
    if not point:
        raise SystemExit(f"error: {model} records no operating point; pass --threshold")
    return float(point["threshold"])


# ---------------------------------------------------------------------------- the components

@dataclass(frozen=True)
class PatchComponents:
    """The components of one patch's prediction and what each is.

    ``labels``: int32 [H, W], 0 = background, k = component k (1-based, ``ndimage.label``
    order, as ``metrics.components``). ``table``: per component (index k-1) the features of
    :func:`describe_patch`.
    """

    labels: np.ndarray
    table: dict[str, np.ndarray]


def local_cnr(image: np.ndarray, labels: np.ndarray, n: int, spacing_mm: float) -> np.ndarray:
    """Per component: (max of the image under it - median of a ring 2-5 px around it) /
    robust noise (1.4826 MAD of the image's high-pass, ``image - Gaussian(0.3 mm)`` as the
    synthesis' visibility rule, in a 2.5 mm window, the component dilated by 2 px left out).
    The synthesis calls an MC visible at a CNR of its (noise-free) signal >= 5."""
    hp = image - ndimage.gaussian_filter(image.astype(np.float64), 0.3 / spacing_mm)
    half = int(np.ceil(0.5 * 2.5 / spacing_mm))
    out = np.zeros(n)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        r0, r1 = max(sl[0].start - half, 0), min(sl[0].stop + half, image.shape[0])
        c0, c1 = max(sl[1].start - half, 0), min(sl[1].stop + half, image.shape[1])
        own = labels[r0:r1, c0:c1] == k
        near = ndimage.binary_dilation(own, iterations=2, structure=STRUCTURE)
        ring = ndimage.binary_dilation(own, iterations=5, structure=STRUCTURE) & ~near
        img, h = image[r0:r1, c0:c1], hp[r0:r1, c0:c1][~near]
        noise = 1.4826 * np.median(np.abs(h - np.median(h))) if h.size else np.nan
        base = np.median(img[ring]) if ring.any() else np.nan
        out[k - 1] = (img[own].max() - base) / max(noise, 1e-3)
    return out


def describe_patch(sample, logit: np.ndarray, background_logit: np.ndarray,  # noqa: ANN001
                   breast: np.ndarray, threshold: float) -> PatchComponents:
    """Label ``prob >= threshold``, match as ``score_synthetic`` and describe each component."""
    from scipy.spatial import cKDTree

    from mcgenref.evaluation.metrics import match_points
    from mcgenref.evaluation.synthetic import visible_points

    prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0)))
    pred = prob >= threshold
    labels, n = ndimage.label(pred, structure=STRUCTURE)
    sp = float(sample.record["spacing_mm"][0])
    if not np.isclose(sp, float(sample.record["spacing_mm"][1])):
        raise SystemExit("error: a square pixel spacing is assumed")
    idx = np.arange(1, n + 1)
    area = np.asarray(ndimage.sum_labels(np.ones_like(labels), labels, idx)).reshape(-1)
    centroid = np.asarray(ndimage.center_of_mass(pred, labels, idx)).reshape(-1, 2)
    peak = np.asarray(ndimage.maximum(logit, labels, idx)).reshape(-1)
    on_mask = np.asarray(ndimage.maximum(sample.mask, labels, idx)).reshape(-1) > 0
    visible = visible_points(sample.record)
    invisible = np.array([[m["y_px"], m["x_px"]] for m in sample.record["mcs"]
                          if not m["visible"]], dtype=float).reshape(-1, 2)
    match = match_points(centroid, visible, (sp, sp), TOLERANCE_MM)
    matched = np.zeros(n, dtype=bool)
    matched[match.pairs[:, 0]] = True

    def nearest_mm(points: np.ndarray) -> np.ndarray:
        if len(points) == 0 or n == 0:
            return np.full(n, np.inf)
        return cKDTree(points).query(centroid)[0] * sp

    h, w = pred.shape
    edge = np.minimum.reduce([centroid[:, 0], centroid[:, 1], h - 1 - centroid[:, 0],
                              w - 1 - centroid[:, 1]]) if n else np.zeros(0)
    inside = ndimage.distance_transform_edt(breast) * sp if not breast.all() else None
    rc = np.clip(np.rint(centroid).astype(int), 0, [h - 1, w - 1]) if n else np.zeros((0, 2), int)
    breast_mm = inside[rc[:, 0], rc[:, 1]] if inside is not None else np.full(n, np.inf)
    z_t = np.log(threshold / (1.0 - threshold))
    bg_pred = background_logit >= z_t
    bg_labels, n_bg = ndimage.label(bg_pred, structure=STRUCTURE)
    bg_centroid = np.asarray(ndimage.center_of_mass(bg_pred, bg_labels, np.arange(1, n_bg + 1))
                             ).reshape(-1, 2)
    table = {
        "area_px": area.astype(int), "peak_logit": peak, "matched": matched,
        "background_mm": nearest_mm(bg_centroid),
        "on_mask": on_mask, "visible_mm": nearest_mm(visible), "invisible_mm": nearest_mm(invisible),
        "patch_edge_px": edge, "breast_edge_mm": breast_mm,
        "cnr": local_cnr(sample.image, labels, n, sp), "centroid": centroid,
        "centroid_mm": centroid * sp,
    }
    table["category"] = categorise(table)
    return PatchComponents(labels, table)


def categorise(t: dict[str, np.ndarray]) -> np.ndarray:
    """The :data:`CATEGORIES` name of each component ("matched" for the hits)."""
    tests = {
        "duplicate": t["visible_mm"] <= TOLERANCE_MM,
        "fragment": t["on_mask"],
        "near_visible": t["visible_mm"] <= 2 * TOLERANCE_MM,
        "invisible": t["invisible_mm"] <= TOLERANCE_MM,
        "patch_edge": t["patch_edge_px"] < EDGE_PX,
        "breast_edge": t["breast_edge_mm"] < BREAST_EDGE_MM,
        "tissue_background": t["background_mm"] <= TOLERANCE_MM,
        "tissue": np.ones(len(t["matched"]), dtype=bool),
    }
    out = np.full(len(t["matched"]), "matched", dtype=object)
    todo = ~t["matched"]
    for name, _ in CATEGORIES:
        hit = todo & tests[name]
        out[hit] = name
        todo &= ~hit
    return out


def describe_set(data: DevSet, threshold: float) -> list[PatchComponents]:
    from mcgenref.evaluation.synthetic import refined_probabilities, score_synthetic

    comps = [describe_patch(s, z, zb, b, threshold) for s, z, zb, b in
             zip(data.samples, data.logits, data.background_logits, data.breast, strict=True)]
    # the same hits and false components as the library's scorer
    ref = score_synthetic(refined_probabilities(data.samples, data.logits), data.samples, threshold)
    ours = np.array([[c.table["matched"].sum(), (~c.table["matched"]).sum()] for c in comps])
    if not np.array_equal(ours.reshape(-1, 2), ref.objects[:, :2]):
        raise SystemExit("error: the component matching differs from score_synthetic's")
    return comps


# ------------------------------------------------------------------------- scores and rules

@dataclass(frozen=True)
class Scores:
    """Per patch: pixel ``(tp, fp, fn, tn)`` and objects ``(hits, false, visible MCs)``."""

    counts: np.ndarray
    objects: np.ndarray

    def stats(self, idx: np.ndarray, per_image: float) -> np.ndarray:
        """``[B, 3]`` (false components per 1024 px, pooled Dice, MC sensitivity) of the
        resampled patch sets ``idx`` ``[B, n]``."""
        c, o = self.counts[idx].sum(axis=1), self.objects[idx].sum(axis=1)
        dice = 2 * c[:, 0] / np.maximum(2 * c[:, 0] + c[:, 1] + c[:, 2], 1)
        sens = o[:, 0] / np.maximum(o[:, 2], 1)
        return np.stack([o[:, 1] / idx.shape[1] * per_image, dice, sens], axis=1)


def score_kept(data: DevSet, comps: list[PatchComponents],
               keep: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Scores:
    """The library's scorer on the predictions with only the components ``keep(table)``."""
    from mcgenref.evaluation.synthetic import score_synthetic

    preds = []
    for c in comps:
        k = np.concatenate([[False], np.asarray(keep(c.table), dtype=bool)])
        preds.append(k[c.labels].astype(np.float32))
    s = score_synthetic(preds, data.samples, 0.5)
    return Scores(s.counts, s.objects)


def score_merged(data: DevSet, comps: list[PatchComponents], radius_mm: float) -> Scores:
    """Components with pixel centres within ``radius_mm`` of each other counted as one object
    (transitively), its centroid the mean of their pixels; pixels unchanged. 8-connected
    pixels are at most 0.28 mm apart at 0.2 mm, so radii start above that."""
    from scipy.spatial import cKDTree

    from mcgenref.evaluation.metrics import match_points, pixel_counts
    from mcgenref.evaluation.synthetic import visible_points

    counts, objects = [], []
    for s, c in zip(data.samples, comps, strict=True):
        sp = float(s.record["spacing_mm"][0])
        pred = c.labels > 0
        rc = np.argwhere(pred)
        lab = c.labels[pred] - 1  # argwhere and boolean indexing share the row-major order
        n = int(c.labels.max())
        # union-find of the components with two pixel centres within radius_mm
        parent = np.arange(n)

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in cKDTree(rc).query_pairs(radius_mm / sp + 1e-9, output_type="ndarray"):
            ra, rb = root(lab[a]), root(lab[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        group = np.array([root(i) for i in range(n)], dtype=int)
        centroids = np.array([rc[group[lab] == g].mean(axis=0) for g in np.unique(group)]
                             ).reshape(-1, 2)
        truth = visible_points(s.record)
        m = match_points(centroids, truth, (sp, sp), TOLERANCE_MM)
        counts.append(pixel_counts(pred, s.mask.astype(bool)))
        objects.append((m.tp, m.fp, len(truth)))
    return Scores(np.asarray(counts, dtype=np.int64), np.asarray(objects, dtype=np.int64))


#: the swept rules: name -> (parameter values, keep(table, value)); "merge" is scored apart
RULES: dict[str, tuple[tuple[float, ...], Callable | None]] = {
    "min_area_px": ((2, 3, 4, 5, 6, 8),
                    lambda t, v: t["area_px"] >= v),
    "min_peak_logit": ((5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0),
                       lambda t, v: t["peak_logit"] >= v),
    "min_local_cnr": ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
                      lambda t, v: t["cnr"] >= v),
    "in_cluster_min_count": ((2, 3, 4), lambda t, v: in_cluster(t, int(v))),
    # two-feature rules: a component stays if it is large enough *or* confident enough
    "area_3px_or_peak_logit": ((10.0, 12.0, 14.0, 16.0),
                               lambda t, v: (t["area_px"] >= 3) | (t["peak_logit"] >= v)),
    "area_4px_or_peak_logit": ((10.0, 12.0, 14.0, 16.0),
                               lambda t, v: (t["area_px"] >= 4) | (t["peak_logit"] >= v)),
    "merge_within_mm": ((0.4, 0.6, 0.8, 1.0, 1.5, 2.0), None),
    # not a rule (it needs the patch without its MCs): the false components if the model did
    # not fire where it fires on the MC-free patch, the ceiling of what hard negatives can give
    "oracle_off_background": ((1.0,), lambda t, v: t["background_mm"] > v),
}
#: rows of the rule tables that no choice and no real check may use
ORACLES = {"oracle_off_background"}


def in_cluster(t: dict[str, np.ndarray], min_count: int) -> np.ndarray:
    """Components that are members of a cluster of the shipped rule with ``min_count`` (the
    cluster tables' grouping, on the components' centroids, scored by peak logit)."""
    from mcgenref.clusters import ClusterRule, group_clusters

    keep = np.zeros(len(t["area_px"]), dtype=bool)
    if len(keep):
        rule = ClusterRule(min_count=min_count)
        for c in group_clusters(t["centroid_mm"], t["peak_logit"], rule=rule):
            keep[list(c.members)] = True
    return keep


def rule_scores(data: DevSet, comps: list[PatchComponents]) -> dict[tuple[str, float], Scores]:
    out = {("none", 0.0): score_kept(data, comps, lambda t: np.ones(len(t["area_px"]), bool))}
    for name, (values, keep) in RULES.items():
        for v in values:
            out[(name, float(v))] = (score_merged(data, comps, v) if keep is None else
                                     score_kept(data, comps, lambda t, k=keep, v=v: k(t, v)))
    return out


def compare(scores: dict[tuple[str, float], Scores], n_boot: int, per_image: float,
            seed: int) -> list[dict]:
    """Each rule's statistics and their paired bootstrap differences against no rule."""
    base = scores[("none", 0.0)]
    n = len(base.counts)
    every = np.arange(n)[None, :]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    b_all, b_boot = base.stats(every, per_image)[0], base.stats(idx, per_image)
    rows = []
    for (name, value), s in scores.items():
        point, boot = s.stats(every, per_image)[0], s.stats(idx, per_image)
        diff = boot - b_boot
        lo, hi = np.percentile(diff, [2.5, 97.5], axis=0)
        row = {"rule": name, "value": value}
        for j, key in enumerate(("false_per_1024px", "dice", "sensitivity")):
            ci = np.percentile(boot[:, j], [2.5, 97.5])
            row[key] = {"value": float(point[j]), "ci": [float(ci[0]), float(ci[1])],
                        "difference": float(point[j] - b_all[j]),
                        "difference_ci": [float(lo[j]), float(hi[j])]}
        rows.append(row)
    return rows


def choose_rule(rows: list[dict]) -> dict | None:
    """On the ``choose`` set: of the rules that at least halve the false components with no
    Dice loss (point difference >= 0) and an MC sensitivity loss under 0.01, the one with the
    fewest false components (ties: the mildest value). ``None`` when no rule qualifies."""
    base = next(r for r in rows if r["rule"] == "none")["false_per_1024px"]["value"]
    ok = [r for r in rows if r["rule"] not in ("none", *ORACLES)
          and r["false_per_1024px"]["value"] <= 0.5 * base
          and r["dice"]["difference"] >= 0.0 and r["sensitivity"]["difference"] > -0.01]
    return min(ok, key=lambda r: (r["false_per_1024px"]["value"], r["value"])) if ok else None


def halving_rules(rows: list[dict]) -> list[dict]:
    """The rules that at least halve the false components with no Dice loss (point
    difference >= 0), whatever they do to the MC sensitivity (the issue's criterion)."""
    base = next(r for r in rows if r["rule"] == "none")["false_per_1024px"]["value"]
    return [r for r in rows if r["rule"] not in ("none", *ORACLES)
            and r["false_per_1024px"]["value"] <= 0.5 * base and r["dice"]["difference"] >= 0.0]


def choose_dice_only(rows: list[dict]) -> dict | None:
    """Of :func:`halving_rules` (on ``choose``), the one that keeps the most MC sensitivity
    (ties: fewer false components)."""
    ok = halving_rules(rows)
    return max(ok, key=lambda r: (r["sensitivity"]["value"], -r["false_per_1024px"]["value"])
               ) if ok else None


def _name(r: dict) -> str:
    return f"{r['rule']} >= {r['value']:g}"


# ------------------------------------------------------------------------- categories, scoring

def category_table(comps: list[PatchComponents], per_patch_to_image: float) -> dict:
    """Counts of the unmatched components per category, per 1024 px, and the features'
    medians in each."""
    n = len(comps)
    cat = np.concatenate([c.table["category"] for c in comps])
    cols = {k: np.concatenate([c.table[k] for c in comps])
            for k in ("area_px", "peak_logit", "cnr", "visible_mm", "invisible_mm", "on_mask")}
    false = cat != "matched"
    out = {"n_patches": n, "n_components": int(len(cat)), "n_matched": int((~false).sum()),
           "n_false": int(false.sum()), "rows": []}
    for name, what in (*CATEGORIES, ("matched", "hits (for comparison)")):
        sel = cat == name
        k = int(sel.sum())
        out["rows"].append({
            "category": name, "what": what, "count": k,
            "share_of_false": (k / false.sum() if false.sum() and name != "matched" else None),
            "per_1024px": k / n * per_patch_to_image,
            "median_area_px": float(np.median(cols["area_px"][sel])) if k else None,
            "median_peak_logit": float(np.median(cols["peak_logit"][sel])) if k else None,
            "median_cnr": float(np.median(cols["cnr"][sel])) if k else None,
            "on_an_invisible_mc": int((sel & (cols["invisible_mm"] <= TOLERANCE_MM)).sum()),
        })
    # distributions of the false against the hits (for the rules' parameter ranges)
    out["quantiles"] = {
        key: {grp: [float(np.quantile(cols[key][m], q)) if m.any() else None
                    for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
              for grp, m in (("false", false), ("matched", ~false))}
        for key in ("area_px", "peak_logit", "cnr")}
    out["area_1px_false"] = int((false & (cols["area_px"] == 1)).sum())
    return out


def scoring_variants(data: DevSet, comps: list[PatchComponents], threshold: float,
                     per_image: float) -> list[dict]:
    """False components per 1024 px under the committed rule and proposed variants (the same
    hits): duplicates / fragments of a found MC and components on invisible MCs counted as
    neither hit nor false; and the objects ``segment`` reports (peaks, ``PEAK_RULE``, in the
    mask) in place of components."""
    from mcgenref.detections import find_peaks
    from mcgenref.evaluation.evaluate import PEAK_RULE
    from mcgenref.evaluation.metrics import match_points
    from mcgenref.evaluation.synthetic import visible_points

    n = len(comps)
    cat = [c.table["category"] for c in comps]
    inv = [c.table["invisible_mm"] <= TOLERANCE_MM for c in comps]

    def rate(drop: Callable[[int], np.ndarray]) -> tuple[float, list[int]]:
        per = [int(((cat[i] != "matched") & ~drop(i)).sum()) for i in range(n)]
        return sum(per) / n * per_image, per

    variants = {
        "committed (score_synthetic)": lambda i: np.zeros(len(cat[i]), bool),
        "duplicates and fragments of a found MC not counted": lambda i: np.isin(
            cat[i], ("duplicate", "fragment")),
        "components on invisible MCs not counted": lambda i: inv[i],
        "both not counted": lambda i: np.isin(cat[i], ("duplicate", "fragment")) | inv[i],
    }
    out = []
    for name, drop in variants.items():
        r, per = rate(drop)
        out.append({"scoring": name, "false_per_1024px": r, "per_patch": per})
    # peaks as objects (what segment's MC table holds)
    per, hits, truth_n = [], 0, 0
    for s, z, c in zip(data.samples, data.logits, comps, strict=True):
        sp = float(s.record["spacing_mm"][0])
        prob = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
        peaks = find_peaks(prob, (sp, sp), PEAK_RULE, c.labels > 0, min_score=threshold)
        truth = visible_points(s.record)
        m = match_points(peaks.points_px, truth, (sp, sp), TOLERANCE_MM)
        per.append(m.fp)
        hits += m.tp
        truth_n += len(truth)
    out.append({"scoring": "objects = segment's peaks (PEAK_RULE) in the mask",
                "false_per_1024px": sum(per) / n * per_image, "per_patch": per,
                "sensitivity": hits / max(truth_n, 1)})
    return out


def invisible_hits(data: DevSet, comps: list[PatchComponents]) -> dict:
    """The CNR of the invisible MCs nearest to a false component within 1 mm, beside that of
    all invisible MCs."""
    from scipy.spatial import cKDTree

    hit_cnr, all_cnr = [], []
    for s, c in zip(data.samples, comps, strict=True):
        inv = [m for m in s.record["mcs"] if not m["visible"]]
        all_cnr += [m["cnr"] for m in inv]
        false = ~c.table["matched"]
        if not inv or not false.any():
            continue
        pts = np.array([[m["y_px"], m["x_px"]] for m in inv])
        d, j = cKDTree(pts).query(c.table["centroid"][false])
        sp = float(s.record["spacing_mm"][0])
        hit_cnr += [inv[k]["cnr"] for k in set(j[d * sp <= TOLERANCE_MM].tolist())]
    q = (0.25, 0.5, 0.75)
    return {"n_invisible": len(all_cnr), "n_with_a_false_component": len(hit_cnr),
            "cnr_quartiles_all": [float(np.quantile(all_cnr, v)) for v in q] if all_cnr else None,
            "cnr_quartiles_with_false_component": ([float(np.quantile(hit_cnr, v)) for v in q]
                                                   if hit_cnr else None)}


# ---------------------------------------------------------------------------- the real check

def real_check(rules: list[tuple[str, float]], threshold: float, model: Path = MODEL) -> dict:
    """Each removing rule on ``segment``'s maps of the 8 calcification images and the
    calibration normals: MCs inside labelled circles, labelled clusters found and false
    clusters per normal, before and after (the rule on the mask's components; MCs and clusters
    by ``find_calcifications``, as ``segment``)."""
    from mcgenref.evaluation.evaluate import DEFAULT_CLUSTER_TOLERANCE_MM
    from mcgenref.evaluation.metrics import cluster_detection
    from mcgenref.evaluation.truth import read_truth
    from mcgenref.inference.postprocess import find_calcifications
    from mcgenref.inference.segment import SegmentConfig, Segmenter

    seg = Segmenter(SegmentConfig(threshold=threshold), model_path=model, device="cpu",
                    pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    if abs(seg.threshold - threshold) > 1e-9:
        raise SystemExit(f"error: segment's threshold {seg.threshold} is not {threshold}")
    truths = read_truth(quality._info_txt(), "mias")
    stems = calc_refs() + dev_refs()
    paths = recipe.image_paths(stems)
    per_rule: dict[str, dict] = {}
    for stem, path in zip(stems, paths, strict=True):
        r = seg.segment(path, stem)
        sp = r.meta.pixel_spacing_mm
        labels, n = ndimage.label(r.detections.mask, structure=STRUCTURE)
        idx = np.arange(1, n + 1)
        logit = np.log(np.clip(r.prob, 1e-7, 1 - 1e-7) / (1 - np.clip(r.prob, 1e-7, 1 - 1e-7)))
        centroid = np.asarray(ndimage.center_of_mass(labels > 0, labels, idx)).reshape(-1, 2)
        table = {"area_px": np.asarray(ndimage.sum_labels(np.ones_like(labels), labels, idx)),
                 "peak_logit": np.asarray(ndimage.maximum(logit, labels, idx)),
                 "centroid_mm": centroid * np.asarray(sp, dtype=float),
                 "cnr": local_cnr(r.image, labels, n, float(sp[0]))}
        circles = np.array([c.in_mm(sp) for c in truths[stem].clusters or []]).reshape(-1, 3)
        for name, value in [("none", 0.0), *rules]:
            keep = (np.ones(n, bool) if name == "none" else RULES[name][1](table, value))
            removed = np.concatenate([[False], ~keep])[labels]
            det = (r.detections if name == "none" else find_calcifications(
                np.where(removed, 0.0, r.prob), r.region, sp, seg.threshold,
                seg.config.cluster_rule, seg.config.peak_rule))
            mcs = np.array([[m["y_mm"], m["x_mm"]] for m in det.mcs]).reshape(-1, 2)
            groups = [mcs[[m - 1 for m in c["members"]]] for c in det.clusters]
            key = f"{name}>={value:g}" if name != "none" else "none"
            acc = per_rule.setdefault(key, {"rule": name, "value": value, "mcs_in_labelled": 0,
                                            "labelled_found": 0, "n_labelled": 0,
                                            "false_clusters_normals": 0, "n_normals": 0,
                                            "mcs_normals": 0,
                                            "components_removed_calc": 0,
                                            "components_calc": 0})
            if truths[stem].is_normal:
                acc["false_clusters_normals"] += len(det.clusters)
                acc["mcs_normals"] += len(det.mcs)
                acc["n_normals"] += 1
                continue
            d = np.hypot(mcs[:, None, 0] - circles[None, :, 0], mcs[:, None, 1] - circles[None, :, 1])
            acc["mcs_in_labelled"] += int((d <= circles[None, :, 2]).any(axis=1).sum())
            acc["labelled_found"] += cluster_detection(groups, circles,
                                                       DEFAULT_CLUSTER_TOLERANCE_MM).n_found
            acc["n_labelled"] += len(circles)
            acc["components_calc"] += n
            acc["components_removed_calc"] += int((~keep).sum())
    rows = list(per_rule.values())
    for row in rows:
        row["false_clusters_per_normal"] = row["false_clusters_normals"] / max(row["n_normals"], 1)
        row["mcs_per_normal"] = row["mcs_normals"] / max(row["n_normals"], 1)
    return {"images": stems, "rows": rows}


# ------------------------------------------------------------------------------ the tables

def _f(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _diff(d: dict, nd: int) -> str:
    return f"{d['difference']:+.{nd}f} [{d['difference_ci'][0]:+.{nd}f}, {d['difference_ci'][1]:+.{nd}f}]"


def curve_lines(rows: list[dict]) -> list[str]:
    lines = ["| rule | value | false comps / 1024 px | Δ vs no rule | Dice | Δ Dice | "
             "MC sensitivity | Δ sensitivity |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, d, s = r["false_per_1024px"], r["dice"], r["sensitivity"]
        lines.append(f"| {r['rule']} | {r['value']:g} | {_f(f['value'], 1)} | {_diff(f, 1)} | "
                     f"{_f(d['value'], 3)} | {_diff(d, 3)} | {_f(s['value'], 3)} | {_diff(s, 3)} |")
    return lines


def _shipped_and_given(res: dict) -> tuple[bool, bool]:
    """Whether ``res`` is of the shipped model, and whether its threshold was given on the
    command line (tables of runs before ``threshold_given`` was recorded: given for other
    models)."""
    shipped = res.get("model", {}).get("shipped", True)
    return shipped, res.get("threshold_given", not shipped)


def command_line(res: dict) -> str:
    """The command that wrote ``res``: ``--model`` and ``--threshold`` for another model than
    the shipped one or a threshold given on the command line (:func:`_shipped_and_given`),
    ``--no-real`` without the real check."""
    shipped, given = _shipped_and_given(res)
    args = [f"--patches {res['n_patches']}", f"--bootstrap {res['n_bootstrap']}"]
    if not shipped:
        args.append(f"--model {res['model']['path']}")
    if given:
        args.append(f"--threshold {res['threshold']:.10g}")
    if "real_check" not in res:
        args.append("--no-real")
    return "python benchmarks/false_components.py " + " ".join(args)


def table_lines(res: dict) -> list[str]:
    c = res["categories"]
    shipped, given = _shipped_and_given(res)
    lines = [
        "# False components of the shipped film model on development patches (issue 13)"
        if shipped else
        f"# False components of film model {res['model']['path']} on development patches (issue 13)", "",
        f"`{command_line(res)}` on {res['machine']}; {res['runtime_s']} s. Development data "
        "only: patches on the 20 calibration-part normals (`quality.synthetic_set`: "
        f"{res['sets']['choose']['description']}), the "
        + (f"model (sha256 {res['model']['sha256'][:12]})" if "model" in res else "shipped model")
        + (" at the threshold given" if given else " at its operating threshold")
        + f" {res['threshold']:.10g} (logit {np.log(res['threshold'] / (1 - res['threshold'])):.2f}), "
        "one window a patch; objects matched as `score_synthetic` (centroid within 1 mm of a "
        "visible MC, one-to-one). Per 1024 x 1024 px = per 256-px patch x 16. The test-part "
        "table (`benchmarks/results/quality`) was not used.", "",
        f"## 1. What the false components are (`choose` set, {c['n_patches']} patches)", "",
        f"{c['n_components']} components: {c['n_matched']} hits, {c['n_false']} false "
        f"({_f(c['n_false'] / c['n_patches'] * 16, 1)} per 1024 px).", "",
        "| category (first that applies) | what | count | share of false | per 1024 px | "
        "per 1024 px on `confirm` | median area px | median peak logit | median local CNR | "
        "also on an invisible MC |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    confirm = {r["category"]: r for r in res["categories_confirm"]["rows"]}
    for r in c["rows"]:
        lines.append(f"| {r['category']} | {r['what']} | {r['count']} | "
                     f"{_f(r['share_of_false'])} | {_f(r['per_1024px'], 1)} | "
                     f"{_f(confirm[r['category']]['per_1024px'], 1)} | "
                     f"{_f(r['median_area_px'], 0)} | {_f(r['median_peak_logit'], 1)} | "
                     f"{_f(r['median_cnr'], 1)} | {r['on_an_invisible_mc']} |")
    lines += ["", "Quantiles (10, 25, 50, 75, 90 %) of the features, false components vs hits:", "",
              "| feature | false | hits |", "|---|---|---|"]
    for key, q in c["quantiles"].items():
        lines.append(f"| {key} | {', '.join(_f(v, 1) for v in q['false'])} | "
                     f"{', '.join(_f(v, 1) for v in q['matched'])} |")
    inv = res["invisible_hits"]
    lines += ["", f"Invisible MCs (CNR < 5, not in the mask): {inv['n_invisible']} in the "
              f"patches, {inv['n_with_a_false_component']} with a false component within 1 mm; CNR "
              f"quartiles {', '.join(_f(v, 1) for v in inv['cnr_quartiles_all'] or [])} (all) vs "
              f"{', '.join(_f(v, 1) for v in inv['cnr_quartiles_with_false_component'] or [])} "
              "(with a false component).", "",
              "## 2. Scoring variants (proposed; no committed benchmark changed)", "",
              "| scoring | false comps / 1024 px |", "|---|---|"]
    for v in res["scoring_variants"]:
        extra = f" (MC sensitivity {v['sensitivity']:.3f})" if "sensitivity" in v else ""
        lines.append(f"| {v['scoring']} | {_f(v['false_per_1024px'], 1)}{extra} |")
    lines += ["", "## 3. Rules on components (`choose` set)", "",
              "Paired 95 % bootstrap CIs of the differences against no rule "
              f"({res['n_bootstrap']} draws, patches resampled). Removing rules take the "
              "component's pixels out of the prediction (Dice changes); *in_cluster_min_count*: "
              "keep the members of clusters of the shipped rule (min_count MCs within 5 mm) "
              "of the components; *area_Npx_or_peak_logit*: keep a component of at least N px or "
              "with a peak logit of at least the value; merging counts components with pixel "
              "centres within r mm as one object (pixels unchanged). *oracle_off_background* "
              "is not a rule (it needs the patch without its MCs): no component where the model "
              "fires on the MC-free patch, the most that hard negatives could remove.", "",
              *curve_lines(res["rules"]["choose"]), ""]
    ch = res["chosen"]
    if ch is None:
        lines += ["**No rule** halves the false components with no Dice loss and a sensitivity "
                  "loss under 0.01 on the `choose` set (`choose_rule`).", ""]
    else:
        lines += [f"Chosen on `choose` (`choose_rule`: at least halves the false components, "
                  f"Dice difference >= 0, sensitivity difference > -0.01, fewest false): "
                  f"**{ch['rule']} >= {ch['value']:g}**.", ""]
    for name, found in res["halving_without_dice_loss"].items():
        lines.append(f"- `{name}`: rules that at least halve the false components with no Dice "
                     f"loss (point estimate; any sensitivity): {', '.join(found) or 'none'}.")
    lines.append("")
    pick = res.get("chosen_dice_only")
    if pick:
        lines += [f"With the issue's criterion alone (at least half, no Dice loss; "
                  f"`choose_dice_only`: of those, the most MC sensitivity), `choose` picks "
                  f"**{_name(pick['choose'])}**; on `confirm`:", "",
                  *curve_lines([next(r for r in res["rules"]["confirm"] if r["rule"] == "none"),
                                pick["confirm"]]), ""]
    lines += [f"## 4. The same rules on the `confirm` set ({res['n_patches']} fresh patches, "
              f"seed {res['sets']['confirm']['seed']})", "",
              *curve_lines(res["rules"]["confirm"]), ""]
    rc = res.get("real_check")
    if rc:
        lines += ["## 5. Real images: what the removing rules take from labelled clusters", "",
                  "`segment` (shipped model, threshold and skin margin) on the 8 mini-MIAS "
                  "calcification images and the 20 calibration normals; the rule removes "
                  "components of the mask, then the MC table (peaks) and clusters are formed "
                  "as `segment` forms them. *MCs in labelled*: MC-table entries inside a "
                  "labelled circle (Info.txt radius).", "",
                  "| rule | components removed (calc. images) | MCs in labelled circles | "
                  "labelled clusters found | false clusters per calibration normal | "
                  "MCs per calibration normal |",
                  "|---|---|---|---|---|---|"]
        for r in rc["rows"]:
            lines.append(f"| {r['rule']} {'' if r['rule'] == 'none' else '>= ' + format(r['value'], 'g')} | "
                         f"{r['components_removed_calc']}/{r['components_calc']} | "
                         f"{r['mcs_in_labelled']} | {r['labelled_found']}/{r['n_labelled']} | "
                         f"{_f(r['false_clusters_per_normal'], 2)} | "
                         f"{_f(r['mcs_per_normal'], 1)} |")
        lines.append("")
    if res["notes"]:
        lines += ["Notes: " + "; ".join(res["notes"]) + ".", ""]
    return lines


def _machine() -> str:
    import torch

    gpu = "GPU" if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu} (the model ran on the CPU)"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=100, help="patches in each of the two sets")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/false_components")
    ap.add_argument("--model", type=Path, default=MODEL,
                    help="film segmentor folder (default: the shipped one), at its recorded operating point")
    ap.add_argument("--threshold", type=float, default=None,
                    help="probability threshold (default: the model's recorded operating point)")
    ap.add_argument("--no-real", action="store_true", help="leave out the mini-MIAS check")
    ap.add_argument("--tables-only", action="store_true",
                    help="rewrite table.md from --out/table.json")
    args = ap.parse_args()
    if args.tables_only:
        res = json.loads((args.out / "table.json").read_text())
        _atomic_write(args.out / "table.md", "\n".join(table_lines(res)) + "\n")
        return
    if args.patches < 10 or args.bootstrap < 1:
        raise SystemExit("error: --patches must be >= 10 and --bootstrap >= 1")
    t0 = time.perf_counter()
    threshold = operating_threshold(args.model) if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise SystemExit("error: --threshold must be in (0, 1)")
    notes: list[str] = []
    per_image = (quality.IMAGE_PX / quality.SYNTHETIC_PATCH_PX) ** 2
    meta = json.loads((args.model / "model.json").read_text())
    res: dict = {"machine": _machine(), "n_patches": args.patches, "n_bootstrap": args.bootstrap,
                 "model": {"path": str(args.model), "sha256": meta["weights"]["sha256"],
                           "shipped": args.model.resolve() == MODEL.resolve()},
                 "threshold": threshold, "threshold_given": args.threshold is not None,
                 "seeds": SEEDS, "sets": {}, "rules": {}}
    sets = {}
    for name in ("choose", "confirm"):
        data = dev_set(name, args.patches, notes, args.model)
        comps = describe_set(data, threshold)
        sets[name] = (data, comps)
        res["sets"][name] = {"seed": data.seed, "description": data.description}
        res["rules"][name] = compare(rule_scores(data, comps), args.bootstrap, per_image,
                                     seed=SEEDS[name])
    data, comps = sets["choose"]
    res["categories"] = category_table(comps, per_image)
    res["scoring_variants"] = scoring_variants(data, comps, threshold, per_image)
    res["invisible_hits"] = invisible_hits(data, comps)
    res["chosen"] = choose_rule(res["rules"]["choose"])
    res["halving_without_dice_loss"] = {k: [_name(r) for r in halving_rules(v)]
                                        for k, v in res["rules"].items()}
    pick = choose_dice_only(res["rules"]["choose"])
    res["chosen_dice_only"] = None if pick is None else {
        "choose": pick, "confirm": next(r for r in res["rules"]["confirm"]
                                        if (r["rule"], r["value"]) == (pick["rule"], pick["value"]))}
    res["categories_confirm"] = category_table(sets["confirm"][1], per_image)
    if not args.no_real:
        # each removing rule at the values that cut the choose set's false components most
        # while keeping its Dice (and the chosen one)
        picks = sorted({(r["rule"], r["value"]) for r in res["rules"]["choose"]
                        if r["rule"] in RULES and RULES[r["rule"]][1] is not None
                        and r["rule"] not in ORACLES})
        res["real_check"] = real_check(picks, threshold, args.model)
    res["notes"] = notes
    res["runtime_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(args.out / "table.json", json.dumps(res, indent=2, default=float) + "\n")
    lines = table_lines(res)
    _atomic_write(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
