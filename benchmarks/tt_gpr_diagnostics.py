"""TT-GPR diagnostics on synthetic development data (issue 14, items 1 and 3, and the FROC).

    python benchmarks/tt_gpr_diagnostics.py [--patches 96] [--bootstrap 500]
                                            [--out benchmarks/results/tt_gpr_diagnostics]

Development data only (never the ``test`` normals): patches of 256 px at 0.2 mm with clusters
of 10-40 MCs on the ``calibration`` part's mini-MIAS normals (base seed ``CALIBRATION_SEED``)
and, for the second opinion's training set, on the ``training`` part's normals
(``TRAINING_SEED``); both seeds are fresh (no network, tuning or benchmark used them).
"Missed": a visible MC that no component of ``p >= operating threshold`` matches (centroids
within 1 mm, one-to-one, :func:`mcgenref.evaluation.synthetic.score_synthetic`'s rule).

1. **Seed coverage**: per seed rule, the share of the missed visible MCs with a seed within
   ``SEED_HIT_MM`` and the seeds per patch (on the calibration-normal patches, and as a
   second look on the training-normal ones).
2. **Oracle projector** (:class:`OracleProjector`): the projection adds the sample's own
   visible-MC signal (image minus background, on the exact mask dilated by one pixel) at seeds
   on an MC, and nothing elsewhere; degraded to an MC-vs-not AUC of ``1 - q`` by withholding
   the signal from a share ``q`` of MC seeds and drawing an MC-like blob (the patch's median
   MC contrast) at a share ``q`` of the other seeds. TT-GPR (the shipped defaults, with this
   projector instead of the generator) per AUC: object sensitivity, false components per
   patch, pixel Dice and recall at the operating point.
3. **Second opinion**: a tiny CNN (two 3 x 3 convolutions, a global max, plus a weight on
   the peak logit) on 15 x 15 crops (image minus its median, and the segmentor's clipped
   logits) at the logit rule's seeds, trained on the training-normal
   patches and scored on the calibration-normal ones: its AUC (MC seed vs not) against the
   segmentor's own peak logit at the same seeds.
4. **FROC**: object sensitivity against false components per patch, for a sweep of the
   threshold on the segmentor's logits and on TT-GPR's (the shipped generator and defaults),
   read at 0.25, 0.5, 1, 2 and 4 false components per patch; paired bootstrap CIs of the
   difference (patches resampled).

5. **K-projection spread** (``--spread-only``, issue 14 item 5; written to spread.md and
   spread.json in --out): for TT-GPR's first round on each window (the shipped generator),
   per sampler variant (today's; fresh noise from ``t_start = 0`` with more Euler steps; a
   random half of the seeds per projection, ``seed_keep``): the mean pixel std across the K
   projections inside the seed discs (radius ``max(size / 2, 0.3 mm)``), in normalised
   intensity and in surrogate probability, and per seed the MC-vs-not AUC of the
   surrogates' agreement ``1 - 2 std`` and of their mean logit change.

6. **Oracle FROC** (``--oracle-froc fresh|shifted``, written to oracle_froc_<set>.md/json
   in --out): on ``--patches`` patches of the development evidence set of
   ``benchmarks/tt_gpr.py`` (calibration normals; the shifted set is the regime the paper
   claims), the object FROC of TT-GPR with the oracle projector at AUC 1 and 0.9 against the
   segmentor's own threshold sweep, with paired bootstrap CIs, and each at the operating
   point: the most the machinery can deliver as a curve, not one point.

Writes table.md and table.json into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))
sys.path.insert(0, str(REPO / "benchmarks"))

import default_segmentor as recipe  # noqa: E402

SEGMENTOR = REPO / "src/mcgenref/weights/segmentor"
GENERATOR = REPO / "src/mcgenref/weights/generator"
CALIBRATION_SEED = 51_515_001
TRAINING_SEED = 51_515_002
SEED_HIT_MM = 0.5  # a missed MC "gets a seed" when one lies this close (the NMS radius)
TOLERANCE_MM = 1.0  # object matching, as score_synthetic
FP_LEVELS = (0.25, 0.5, 1.0, 2.0, 4.0)
AUC_LEVELS = (1.0, 0.9, 0.8, 0.6)
CROP = 7  # half-side of the second opinion's crops (15 x 15)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def _spacing(sample) -> tuple[float, float]:
    return float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1])


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from scipy.stats import rankdata

    labels = np.asarray(labels, bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def missed_mcs(sample, logits: np.ndarray, threshold: float) -> np.ndarray:
    """``[n, 2]`` the visible MCs that no component of ``p >= threshold`` matches."""
    from mcgenref.evaluation.metrics import components, match_points
    from mcgenref.evaluation.synthetic import visible_points

    sp = _spacing(sample)
    pred = _sigmoid(logits) >= threshold
    centroids = np.array([[o.row, o.col] for o in components(pred, sp)]).reshape(-1, 2)
    truth = visible_points(sample.record)
    match = match_points(centroids, truth, sp, TOLERANCE_MM)
    hit = np.zeros(len(truth), bool)
    hit[match.pairs[:, 1]] = True
    return truth[~hit]


def seed_rules() -> dict:
    from mcgenref.flow.seeds import SeedConfig
    from mcgenref.inference.refine import DEFAULT_SEEDS

    rules = {"probability >= 0.84 (main's default)": SeedConfig(min_prob=0.84),
             "probability >= 0.3": SeedConfig(min_prob=0.3)}
    for min_logit in (-10.0, -8.0, -6.0, -4.0):
        for per_tile in (2, 4, 8, None):
            rules[f"logit >= {min_logit:g}, top {per_tile or 'all'} per 64 px"] = SeedConfig(
                rule="logit", min_logit=min_logit, max_per_tile=per_tile)
    rules["TT-GPR default (logit >= -8, top 8 per 64 px)"] = DEFAULT_SEEDS
    return rules


def seed_coverage(samples: list, logits: list, threshold: float) -> dict:
    from mcgenref.flow.seeds import find_seeds

    missed = [missed_mcs(s, z, threshold) for s, z in zip(samples, logits, strict=True)]
    out = {"n_missed": int(sum(len(m) for m in missed)), "rules": {}}
    for name, config in seed_rules().items():
        got = n_seeds = 0
        for s, z, m in zip(samples, logits, missed, strict=True):
            seeds = find_seeds(z, _spacing(s), config)
            n_seeds += len(seeds)
            if len(m) and seeds:
                pos = np.array([[q.row, q.col] for q in seeds])
                d = np.linalg.norm((m[:, None] - pos[None]) * np.asarray(_spacing(s)), axis=2)
                got += int((d.min(axis=1) <= SEED_HIT_MM).sum())
        out["rules"][name] = {"missed_seeded": got / max(out["n_missed"], 1),
                              "seeds_per_patch": n_seeds / len(samples)}
    return out


class OracleProjector:
    """Projections that know the truth of one synthetic sample (module docstring, section 2).

    ``q``: the share of MC seeds whose signal is withheld and of other seeds that get an
    MC-like blob (MC-vs-not AUC ``1 - q`` of "the projection added something"). Which seeds
    are flipped is drawn per image position (``seed``, row, col), so a seed keeps its fate
    over projections and rounds.
    """

    def __init__(self, sample, q: float, seed: int = 0) -> None:
        from scipy import ndimage

        self.sp = _spacing(sample)
        self.on_mc = ndimage.binary_dilation(sample.mask.astype(bool))
        self.signal = np.where(self.on_mc, sample.image - sample.background, 0.0).astype(np.float32)
        peaks = [float(self.signal[int(round(m["y_px"])), int(round(m["x_px"]))])
                 for m in sample.record["mcs"] if m["visible"]]
        self.contrast = float(np.median(peaks)) if peaks else 0.05
        self.q, self.seed = q, seed

    def _flipped(self, r: int, c: int) -> bool:
        return bool(np.random.default_rng([self.seed, r, c]).random() < self.q)

    def __call__(self, request):
        import torch

        b, k, h, w = request.noise.shape
        x = request.observation.expand(b, k, h, w).clone()
        rr, cc = np.mgrid[0:h, 0:w]
        for i, ((r0, c0), seeds) in enumerate(zip(request.corners, request.seeds, strict=True)):
            add = np.zeros((h, w), np.float32)
            for s in seeds:
                r, c = int(round(r0 + s.row)), int(round(c0 + s.col))
                d2 = ((rr - s.row) * self.sp[0]) ** 2 + ((cc - s.col) * self.sp[1]) ** 2
                if self.on_mc[r, c] and not self._flipped(r, c):
                    add += np.where(d2 <= 0.6**2, self.signal[r0:r0 + h, c0:c0 + w], 0.0)
                elif not self.on_mc[r, c] and self._flipped(r, c):
                    sigma = max(0.5 * s.size_mm, 0.1)
                    add += self.contrast * np.exp(-d2 / (2 * sigma**2))
            x[i] += torch.from_numpy(add).to(x.dtype)
        return x


def _score(probs: list, samples: list, threshold: float) -> dict:
    from mcgenref.evaluation.synthetic import score_synthetic

    scores = score_synthetic(probs, samples, threshold, TOLERANCE_MM)
    pooled = scores.pooled()
    return {"object_sensitivity": scores.object_sensitivity, "fp_per_patch": scores.fp_per_patch,
            "dice": pooled["dice"], "recall": pooled["recall"]}


def _refine_all(samples: list, logits: list, make_refiner) -> tuple[list, dict]:
    out, info = [], {"windows": 0, "unsettled": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    for s, z in zip(samples, logits, strict=True):
        result = make_refiner(s).refine(s.image, np.ones(s.image.shape, bool), z, _spacing(s))
        out.append(result.logits)
        info["windows"] += result.info["windows"]
        info["unsettled"] += result.info["unsettled"]
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["windows_per_patch"] = info["windows"] / len(samples)
    return out, info


def oracle_curve(samples: list, logits: list, seg, threshold: float,
                 levels: tuple[float, ...] = AUC_LEVELS) -> dict:
    """TT-GPR with :class:`OracleProjector` at each MC-vs-not AUC of ``levels``: the operating
    point's scores per level (``rows``) and the refined logits (``logits``, same keys)."""
    from mcgenref.inference.refine import RefineConfig, Refiner

    config = dataclasses.replace(RefineConfig(), k=1)  # the oracle is deterministic
    rows = {"initializer (segmentor)": _score([_sigmoid(z) for z in logits], samples, threshold)}
    refined_by: dict[str, list] = {}
    for auc in levels:
        refined, info = _refine_all(samples, logits, lambda s, auc=auc: Refiner(
            seg, None, config, "cpu", projector=OracleProjector(s, 1.0 - auc)))
        name = f"oracle, AUC {auc:g}"
        rows[name] = {**_score([_sigmoid(z) for z in refined], samples, threshold), **info}
        refined_by[name] = refined
        print(f"oracle AUC {auc}: {rows[name]}", flush=True)
    return {"config": "RefineConfig() defaults, k = 1", "rows": rows, "logits": refined_by}


def oracle_froc(which: str, n: int, seg, threshold: float, n_boot: int) -> dict:
    """Section 6 of the module docstring."""
    import tt_gpr
    from mcgenref.evaluation.synthetic import segmentor_logits

    samples = tt_gpr.evidence_patches("dev", which, n)
    logits = segmentor_logits(seg, samples)
    oracle = oracle_curve(samples, logits, seg, threshold, levels=(1.0, 0.9))
    curves = {"segmentor (threshold sweep)": logits, **oracle.pop("logits")}
    visible = sum(int(s.record["n_visible"]) for s in samples)
    return {"set": which, "n_patches": n, "visible_mcs": visible, "threshold": threshold,
            "operating_point": oracle, "froc": froc(samples, curves, n_boot)}


def froc_table(f: dict) -> list[str]:
    """Markdown rows of :func:`froc`'s result: sensitivity at each FP level per curve, the
    difference to the first curve with its CI in brackets."""
    lines = ["| curve | " + " | ".join(f"@ {v:g} FP" for v in f["fp_levels"]) + " |",
             "|---|" + "---|" * len(f["fp_levels"])]
    for name, v in f["curves"].items():
        cells = [_fmt(x) for x in v["sensitivity_at"]]
        if "difference" in v:
            cells = [f"{c} ({d:+.3f} [{lo:+.3f}, {hi:+.3f}])"
                     for c, d, (lo, hi) in zip(cells, v["difference"], v["difference_ci"], strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_oracle_froc(r: dict, out: Path) -> None:
    f = r["froc"]
    lines = [f"# TT-GPR with the oracle projector: FROC against the segmentor's sweep ({r['set']} dev set)", "",
             f"`python benchmarks/tt_gpr_diagnostics.py --oracle-froc {r['set']} --patches {r['n_patches']}` on "
             f"{r['machine']}; {r['runtime_s']} s. {r['n_patches']} patches of the development "
             f"`{r['set']}` evidence set of benchmarks/tt_gpr.py (calibration normals), {r['visible_mcs']} "
             "visible MCs. Object sensitivity at each number of false components per patch (sweep of the "
             "logit from -12 to 30 in steps of 0.5); difference to the segmentor with a 95 % paired bootstrap "
             "CI (patches resampled).", "", *froc_table(f)]
    lines += ["", f"At the operating point {r['threshold']:g}:", "",
              "| projector | object sensitivity | FP / patch | Dice | recall |", "|---|---|---|---|---|"]
    for name, v in r["operating_point"]["rows"].items():
        lines.append(f"| {name} | {_fmt(v['object_sensitivity'])} | {v['fp_per_patch']:.2f} | "
                     f"{_fmt(v['dice'])} | {_fmt(v['recall'])} |")
    (out / f"oracle_froc_{r['set']}.md").write_text("\n".join(lines) + "\n")


def _seed_table(samples: list, logits: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels (seed on an MC) and the peak logit of every default-rule seed."""
    from scipy import ndimage

    from mcgenref.flow.seeds import find_seeds
    from mcgenref.inference.refine import DEFAULT_SEEDS

    feats, labels, peak = [], [], []
    for s, z in zip(samples, logits, strict=True):
        on_mc = ndimage.binary_dilation(s.mask.astype(bool))
        img = np.pad(s.image, CROP, mode="reflect")
        zp = np.pad(np.clip(z, -12, 12), CROP, mode="reflect")
        for q in find_seeds(z, _spacing(s), DEFAULT_SEEDS):
            r, c = int(round(q.row)), int(round(q.col))
            crop = img[r:r + 2 * CROP + 1, c:c + 2 * CROP + 1]
            feats.append(np.concatenate([(crop - np.median(crop)).ravel() * 20.0,
                                         zp[r:r + 2 * CROP + 1, c:c + 2 * CROP + 1].ravel() / 12.0]))
            labels.append(bool(on_mc[r, c]))
            peak.append(float(z[r, c]))
    return np.asarray(feats, np.float32), np.asarray(labels), np.asarray(peak)


class _SecondOpinion:
    """The tiny CNN: ``cnn(crop) + w * peak_logit`` (so it starts from the segmentor's view)."""

    def __new__(cls, channels: int = 2):  # noqa: ANN204 (a torch module, built lazily)
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.features = nn.Sequential(
                    nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                    nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 1))
                self.peak = nn.Linear(1, 1)

            def forward(self, x: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
                return self.features(x) + self.peak(peak)

        return Net()


def second_opinion(train: tuple[list, list], dev: tuple[list, list], epochs: int = 80) -> dict:
    import torch

    side = 2 * CROP + 1

    def tensors(samples: list, logits: list):
        x, y, peak = _seed_table(samples, logits)
        crops = torch.from_numpy(x).reshape(-1, 2, side, side).float()
        return crops, torch.from_numpy(peak / 12.0).float()[:, None], y, peak

    xt, pt, yt, _ = tensors(*train)
    xd, pd, yd, peak_d = tensors(*dev)
    torch.manual_seed(0)
    net = _SecondOpinion()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-2)
    target = torch.from_numpy(yt.astype(np.float32))[:, None]
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        order = torch.randperm(len(target), generator=g)
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            x = xt[idx].flip(-1) if epoch % 2 else xt[idx]  # flips: an MC has no orientation
            x = x.flip(-2) if epoch % 3 == 0 else x
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x, pt[idx]), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        score = net(xd, pd)[:, 0].numpy()
    return {"train_seeds": len(yt), "train_on_mc": int(yt.sum()), "dev_seeds": len(yd),
            "dev_on_mc": int(yd.sum()), "auc_classifier": _auc(yd, score),
            "auc_segmentor_peak_logit": _auc(yd, peak_d),
            "model": f"tiny CNN (conv 8, conv 16, global max, + peak logit) on {side} x {side} crops "
                     f"(image minus median, clipped logits), Adam, {epochs} epochs with flips"}


def froc(samples: list, curves: dict, n_boot: int) -> dict:
    """Object FROC of each curve (logits per patch) over a threshold sweep; differences
    against the first curve with paired bootstrap CIs (patches resampled)."""
    from mcgenref.evaluation.synthetic import score_synthetic

    thresholds = np.arange(-12.0, 30.01, 0.5)
    objects = {}
    for name, logits in curves.items():
        probs = [_sigmoid(z) for z in logits]
        objects[name] = np.stack([score_synthetic(probs, samples, float(_sigmoid(t)), TOLERANCE_MM).objects
                                  for t in thresholds])  # [T, n, 3]

    def sens_at(obj: np.ndarray, index: np.ndarray) -> np.ndarray:
        tot = obj[:, index].sum(axis=1)  # [T, 3]
        sens = tot[:, 0] / max(tot[0, 2], 1)
        fp = tot[:, 1] / len(index)
        return np.array([sens[fp <= level].max() if (fp <= level).any() else 0.0 for level in FP_LEVELS])

    n = len(samples)
    every = np.arange(n)
    base_name = next(iter(curves))
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, n, n) for _ in range(n_boot)]
    out = {"fp_levels": list(FP_LEVELS), "curves": {}}
    for name, obj in objects.items():
        entry = {"sensitivity_at": sens_at(obj, every).tolist()}
        if name != base_name:
            diffs = np.array([sens_at(obj, b) - sens_at(objects[base_name], b) for b in boots])
            entry["difference"] = (sens_at(obj, every) - sens_at(objects[base_name], every)).tolist()
            entry["difference_ci"] = np.percentile(diffs, [2.5, 97.5], axis=0).T.tolist()
        out["curves"][name] = entry
    return out


def spread_variants() -> dict:
    from mcgenref.inference.refine import RefineConfig

    base = RefineConfig()
    r = dataclasses.replace
    return {
        "today (t_start 0.23, 3 Euler steps, every seed)": base,
        "fresh noise: t_start 0, 6 steps": r(base, t_start=0.0, sampler_steps=6),
        "seed_keep 0.5": r(base, seed_keep=0.5),
        "seed_keep 0.5, t_start 0, 6 steps": r(base, seed_keep=0.5, t_start=0.0, sampler_steps=6),
    }


def projection_spread(samples: list, logits: list, seg, gen, contract,  # noqa: ANN001
                      only: tuple[str, ...] = ()) -> dict:
    """Section 5 of the module docstring: the spread of the K projections per variant (those
    whose name starts with one of ``only``; every variant when empty)."""
    import torch
    from scipy import ndimage

    from mcgenref.inference.refine import Refiner, plan_windows

    out = {}
    for name, config in spread_variants().items():
        if only and not name.startswith(only):
            continue
        refiner = Refiner(seg, gen, config, "cpu", contract=contract)
        px_std, prob_std, rows = [], [], []
        t0 = time.perf_counter()
        for s, z in zip(samples, logits, strict=True):
            sp = _spacing(s)
            region = np.ones(s.image.shape, bool)
            corners, _ = plan_windows(z, region, sp, config)
            if not corners:
                continue
            size, m = config.window_px, config.margin_px
            sl = [(slice(r0, r0 + size), slice(c0, c0 + size)) for r0, c0 in corners]
            y = torch.from_numpy(np.stack([s.image[q] for q in sl])[:, None].astype(np.float32))
            z0 = torch.from_numpy(np.stack([z[q] for q in sl])[:, None].astype(np.float32))
            reg = torch.ones_like(z0, dtype=torch.bool)
            seeds, x, zk = refiner.project(list(range(len(corners))), corners, y, z0, z0, reg, sp)
            prob = _sigmoid(zk.numpy())
            x_sd, p_sd = x.numpy().std(axis=1), prob.std(axis=1)
            on_mc = ndimage.binary_dilation(s.mask.astype(bool))
            rr, cc = np.mgrid[0:size, 0:size]
            for i, ((r0, c0), ws) in enumerate(zip(corners, seeds, strict=True)):
                for q in ws:
                    if not (m <= q.row < size - m and m <= q.col < size - m):
                        continue  # another window's (counted once)
                    radius = max(q.size_mm / 2, 0.3)
                    disc = ((rr - q.row) * sp[0]) ** 2 + ((cc - q.col) * sp[1]) ** 2 <= radius**2
                    px_std.append(float(x_sd[i][disc].mean()))
                    prob_std.append(float(p_sd[i][disc].mean()))
                    r, c = int(round(q.row)), int(round(q.col))
                    rows.append((1.0 - 2.0 * float(p_sd[i, r, c]), float(zk[i, :, r, c].mean() - z0[i, 0, r, c]),
                                 bool(on_mc[r0 + r, c0 + c]), float(z0[i, 0, r, c]), float(zk[i, :, r, c].mean())))
        a = np.asarray(rows, float).reshape(-1, 5)
        mc = a[:, 2] > 0
        low = a[:, 3] < 0  # below p = 0.5: where the missed MCs are
        out[name] = {
            "seeds": len(a), "on_mc": int(mc.sum()),
            "pixel_std_in_seed_discs": float(np.mean(px_std)) if px_std else None,
            "surrogate_prob_std_in_seed_discs": float(np.mean(prob_std)) if prob_std else None,
            "mean_agreement_mc": float(a[mc, 0].mean()) if mc.any() else None,
            "mean_agreement_not": float(a[~mc, 0].mean()) if (~mc).any() else None,
            "auc_agreement": _auc(mc, a[:, 0]), "auc_logit_change": _auc(mc, a[:, 1]),
            "auc_initial_logit": _auc(mc, a[:, 3]), "auc_surrogate_logit": _auc(mc, a[:, 4]),
            "below_half": {"seeds": int(low.sum()), "on_mc": int(mc[low].sum()),
                           "auc_agreement": _auc(mc[low], a[low, 0]),
                           "auc_logit_change": _auc(mc[low], a[low, 1]),
                           "auc_initial_logit": _auc(mc[low], a[low, 3]),
                           "auc_surrogate_logit": _auc(mc[low], a[low, 4])},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, out[name], flush=True)
    return out


def write_spread(r: dict, out: Path) -> None:
    generator = r.get("generator", "the shipped generator")
    lines = ["# TT-GPR: spread of the K projections (development data)", "",
             f"`python benchmarks/tt_gpr_diagnostics.py --spread-only --patches {r['n_patches']}` on "
             f"{r['machine']}; {r['runtime_s']} s. {r['data']} Generator `{generator}`, K = 4, first "
             "round, seeds in each window's inner part; a seed is an MC on the exact mask dilated by one "
             "pixel. AUCs of MC vs not at the seeds: of the agreement, of the logit change the "
             "projections cause, of the initial logit z0 and of the surrogates' mean logit (z0 + change: "
             "what TT-GPR's fit term pulls to).", "",
             "| variant | seeds (on an MC) | pixel std in seed discs | surrogate p std in seed discs | "
             "agreement: MC / not | AUC: agreement, change, z0, surrogate | seeds at z0 < 0 (on an MC): "
             "AUC agreement, change, z0, surrogate | s |", "|---|---|---|---|---|---|---|---|"]
    for name, v in r["spread"].items():
        b = v["below_half"]
        lines.append(f"| {name} | {v['seeds']} ({v['on_mc']}) | {_fmt(v['pixel_std_in_seed_discs'], 4)} | "
                     f"{_fmt(v['surrogate_prob_std_in_seed_discs'], 4)} | {_fmt(v['mean_agreement_mc'])} / "
                     f"{_fmt(v['mean_agreement_not'])} | {_fmt(v['auc_agreement'])}, {_fmt(v['auc_logit_change'])}, "
                     f"{_fmt(v['auc_initial_logit'])}, {_fmt(v.get('auc_surrogate_logit'))} | "
                     f"{b['seeds']} ({b['on_mc']}): {_fmt(b['auc_agreement'])}, {_fmt(b['auc_logit_change'])}, "
                     f"{_fmt(b['auc_initial_logit'])}, {_fmt(b.get('auc_surrogate_logit'))} | {v['seconds']} |")
    (out / "spread.md").write_text("\n".join(lines) + "\n")


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def write_tables(r: dict, out: Path) -> None:
    lines = ["# TT-GPR diagnostics (development data)", "",
             f"`python benchmarks/tt_gpr_diagnostics.py --patches {r['n_patches']}` on {r['machine']}; "
             f"{r['runtime_s']} s. {r['data']}", ""]
    cov = r["seed_coverage"]
    lines += ["## 1. Seed coverage", "",
              f"{cov['n_missed']} visible MCs missed at the operating point {r['threshold']:g}; "
              f"a missed MC is seeded when a seed lies within {SEED_HIT_MM} mm.", "",
              "| seed rule | missed MCs seeded | seeds / patch |", "|---|---|---|"]
    second = r.get("seed_coverage_training", {"rules": {}, "n_missed": 0})
    lines[-2:] = ["| seed rule | missed MCs seeded | seeds / patch | on the training-normal patches "
                  f"({second['n_missed']} missed): seeded, seeds / patch |", "|---|---|---|---|"]
    for name, v in cov["rules"].items():
        t = second["rules"].get(name)
        other = f"{_fmt(t['missed_seeded'])}, {t['seeds_per_patch']:.1f}" if t else "n/a"
        lines.append(f"| {name} | {_fmt(v['missed_seeded'])} | {v['seeds_per_patch']:.1f} | {other} |")
    if "oracle" in r:
        lines += ["", "## 2. Oracle projector", "",
                  f"TT-GPR ({r['oracle']['config']}) with the oracle in place of the generator, "
                  f"at the operating point {r['threshold']:g}.", "",
                  "| projector | object sensitivity | FP / patch | Dice | recall | windows / patch |",
                  "|---|---|---|---|---|---|"]
        for name, v in r["oracle"]["rows"].items():
            lines.append(f"| {name} | {_fmt(v['object_sensitivity'])} | {v['fp_per_patch']:.2f} | "
                         f"{_fmt(v['dice'])} | {_fmt(v['recall'])} | {v.get('windows_per_patch', 0):.1f} |")
    if "second_opinion" in r:
        so = r["second_opinion"]
        lines += ["", "## 3. Second opinion", "",
                  f"{so['model']}; trained on {so['train_seeds']} seeds ({so['train_on_mc']} on an MC) of the "
                  f"training-normal patches, scored on {so['dev_seeds']} seeds ({so['dev_on_mc']} on an MC) of "
                  "the calibration-normal patches.", "",
                  f"AUC (MC seed vs not): classifier **{_fmt(so['auc_classifier'])}**, the segmentor's peak "
                  f"logit **{_fmt(so['auc_segmentor_peak_logit'])}**."]
    if "froc" in r:
        f = r["froc"]
        lines += ["", "## 4. Object FROC: TT-GPR against the segmentor's own threshold sweep", "",
                  "Object sensitivity at each number of false components per patch (the best threshold "
                  "of a sweep of the logit from -12 to 30 in steps of 0.5 with at most that many); "
                  "difference to the segmentor with a 95 % paired bootstrap CI (patches resampled).", "",
                  *froc_table(f)]
        if "tt_gpr_info" in r:
            op, base = r["tt_gpr_operating_point"], r["initializer_operating_point"]
            lines += ["", f"At the operating point {r['threshold']:g}: segmentor object sensitivity "
                      f"{_fmt(base['object_sensitivity'])}, {base['fp_per_patch']:.2f} FP / patch, Dice "
                      f"{_fmt(base['dice'])}, recall {_fmt(base['recall'])}; TT-GPR "
                      f"{_fmt(op['object_sensitivity'])}, {op['fp_per_patch']:.2f}, {_fmt(op['dice'])}, "
                      f"{_fmt(op['recall'])}.", "", f"TT-GPR run: {r['tt_gpr_info']}"]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=96)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--generator", type=Path, default=GENERATOR)
    ap.add_argument("--skip-froc", action="store_true")
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--spread-only", action="store_true",
                    help="only section 5 (K-projection spread) on --patches calibration patches; "
                         "writes spread.md / spread.json")
    ap.add_argument("--oracle-froc", choices=("fresh", "shifted"), default=None,
                    help="only section 6 (the oracle's FROC against the segmentor's sweep) on --patches "
                         "patches of this development evidence set; writes oracle_froc_<set>.md / .json")
    ap.add_argument("--variants", default="",
                    help="with --spread-only: comma-separated name prefixes of the variants to run "
                         "(default: all), e.g. 'today'")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tt_gpr_diagnostics")
    ap.add_argument("--tables-only", action="store_true", help="rewrite table.md from --out/table.json")
    args = ap.parse_args()
    if args.tables_only:
        write_tables(json.loads((args.out / "table.json").read_text()), args.out)
        return
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one core per run
    from mcgenref.evaluation.synthetic import segmentor_logits
    from mcgenref.inference.refine import RefineConfig, Refiner
    from mcgenref.models.checkpoint import load_generator, load_model

    t0 = time.perf_counter()
    seg, meta = load_model(SEGMENTOR, "cpu")
    threshold = float(meta["operating_point"]["threshold"])
    if args.oracle_froc:
        result = oracle_froc(args.oracle_froc, args.patches, seg, threshold, args.bootstrap)
        result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                             + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"))
        result["runtime_s"] = round(time.perf_counter() - t0, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"oracle_froc_{args.oracle_froc}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        write_oracle_froc(result, args.out)
        print((args.out / f"oracle_froc_{args.oracle_froc}.md").read_text())
        return
    split = recipe.split()
    dev = recipe.synthetic_patches(split.part("calibration"), args.patches, CALIBRATION_SEED, 256, (10, 40))
    if args.spread_only:
        gen, contract, _ = load_generator(args.generator, "cpu")
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                             + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
                  "n_patches": args.patches,
                  "data": f"{args.patches} patches of 256 px at 0.2 mm, clusters of 10-40 MCs, on the "
                          f"calibration normals (seed {CALIBRATION_SEED}).",
                  "generator": str(args.generator),
                  "spread": projection_spread(dev, segmentor_logits(seg, dev), seg, gen, contract,
                                              tuple(v for v in args.variants.split(",") if v))}
        result["runtime_s"] = round(time.perf_counter() - t0, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "spread.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        write_spread(result, args.out)
        print((args.out / "spread.md").read_text())
        return
    train = recipe.synthetic_patches(split.part("training"), args.patches, TRAINING_SEED, 256, (10, 40))
    dev_z, train_z = segmentor_logits(seg, dev), segmentor_logits(seg, train)
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "n_patches": args.patches, "threshold": threshold,
        "data": f"{args.patches} patches of 256 px at 0.2 mm, clusters of 10-40 MCs, on the calibration "
                f"normals (seed {CALIBRATION_SEED}); second opinion trained on as many on the training "
                f"normals (seed {TRAINING_SEED}).",
    }
    result["seed_coverage"] = seed_coverage(dev, dev_z, threshold)
    result["seed_coverage_training"] = seed_coverage(train, train_z, threshold)  # a second look
    print(json.dumps(result["seed_coverage"], indent=1), flush=True)
    result["second_opinion"] = second_opinion((train, train_z), (dev, dev_z))
    print(result["second_opinion"], flush=True)
    if not args.skip_oracle:
        result["oracle"] = oracle_curve(dev, dev_z, seg, threshold)
        result["oracle"].pop("logits")
    if not args.skip_froc:
        gen, contract, _ = load_generator(args.generator, "cpu")
        refined, info = _refine_all(dev, dev_z, lambda s: Refiner(seg, gen, RefineConfig(), "cpu",
                                                                   contract=contract))
        result["tt_gpr_info"] = info
        result["tt_gpr_operating_point"] = _score([_sigmoid(z) for z in refined], dev, threshold)
        result["initializer_operating_point"] = _score([_sigmoid(z) for z in dev_z], dev, threshold)
        result["froc"] = froc(dev, {"segmentor (threshold sweep)": dev_z, "TT-GPR (shipped generator)": refined},
                              args.bootstrap)
    result["runtime_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_tables(result, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
