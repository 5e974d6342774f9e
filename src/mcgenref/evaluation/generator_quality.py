"""Sample quality of the seed-conditioned generator, judged by the frozen segmentor.

On synthetic validation patches that training never saw (their own base seed; the caller
chooses backgrounds, e.g. held-out women's normals), each patch's training-style condition is
built (:func:`mcgenref.models.generator.draw_condition`: a faint observation, the MCs'
seeds plus decoy seeds with no MC under them) and projected once by the generator's own
contract (:meth:`~mcgenref.models.generator.GeneratorContract.sample_projection`, as TT-GPR
does). Then:

- **seed recall**: the fraction of visible MCs whose seed gets a detection (segmentor
  probability >= 0.5 within ``hit_radius_mm`` of the seed) in the projection; reported beside
  the same fraction on the observation itself (what the projection added) and on the clean
  synthetic image ``x_1`` (the ceiling);
- **decoy acceptance**: the fraction of decoy seeds (farther than 1 mm from any MC) where
  the projection gets a detection: a generator that draws an MC at every seed scores 1;
- **spurious MCs per patch**: detected components in the projection farther than 1 mm from
  every seed, MC or decoy (MCs drawn where nothing asked for one), and the same on the
  observation;
- **MC contrast**: the mean of (value - MC-free background) at the visible MCs' centre
  pixels in the clean image, the observation and the projection: does the projection restore
  what the observation lost?
- **background error**: mean absolute difference between projection and ``x_1`` over the
  pixels farther than 1 mm from every seed and MC, in normalised intensity units, beside the
  texture scale of ``x_1`` there (mean absolute difference from its 3x3 local mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from mcgenref.models.generator import ConditionConfig, draw_condition
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.patches import NegativePatchSampler, PatchSamplerConfig
from mcgenref.synthesis.sample import generate_sample, sample_seed

__all__ = ["generator_quality"]

#: Base seed of the quality patches: not the training (0) nor the validation (1_000_003) one.
QUALITY_SEED = 7_000_001


def _detected_near(prob: np.ndarray, points: list[tuple[float, float]], radius_px: float) -> list[bool]:
    h, w = prob.shape
    rr, cc = np.mgrid[0:h, 0:w]
    return [bool((prob[(rr - r) ** 2 + (cc - c) ** 2 <= radius_px**2] >= 0.5).any()) for r, c in points]


def _far_mask(shape: tuple[int, int], points: list[tuple[float, float]], radius_px: float) -> np.ndarray:
    near = np.zeros(shape, dtype=bool)
    for r, c in points:
        ri, ci = int(round(r)), int(round(c))
        if 0 <= ri < shape[0] and 0 <= ci < shape[1]:
            near[ri, ci] = True
    if not near.any():
        return np.ones(shape, dtype=bool)
    return ndimage.distance_transform_edt(~near) > radius_px


def generator_quality(
    generator_path: str | Path,
    segmentor_path: str | Path,
    negatives: Sequence[str | Path] | None,
    *,
    synthesis: SynthesisConfig,
    condition: ConditionConfig,
    patches: PatchSamplerConfig,
    procedural_spacing_mm: tuple[float, float],
    pixel_spacing_mm: float | tuple[float, float] | None = None,
    n_samples: int = 256,
    t_start: float = 0.3,
    steps: int = 4,
    device: str = "cpu",
    seed: int = QUALITY_SEED,
) -> dict[str, Any]:
    """The measures of the module docstring over ``n_samples`` patches (see there).

    ``synthesis``, ``patches``, ``procedural_spacing_mm``: how the patches are made, and
    ``condition`` how their conditions are drawn: pass the generator's training settings
    (its run's ``config.json``; e.g. ``TrainGeneratorConfig.condition_config()``) to judge it
    on the task it was trained for.
    """
    from mcgenref.models.checkpoint import load_generator, load_model
    from mcgenref.runtime import resolve_device

    dev = resolve_device(device)
    generator, contract, gen_meta = load_generator(generator_path, dev)
    segmentor, _ = load_model(segmentor_path, dev)
    sampler = None
    if negatives:
        sampler = NegativePatchSampler([Path(p) for p in negatives], synthesis.patch_size_px,
                                       patches, pixel_spacing_mm=pixel_spacing_mm)
    counts = {k: 0.0 for k in ("c_clean", "c_obs", "c_proj", "mcs", "hit_proj", "hit_obs", "hit_clean", "decoys", "decoy_hits",
                               "spurious_proj", "spurious_obs", "bg_err", "bg_noise", "bg_n")}
    for i in range(n_samples):
        sample = generate_sample(sample_seed(seed, i), synthesis, sampler,
                                 procedural_spacing_mm, index=i)
        rng = np.random.default_rng([seed, i, 0xC0DE])
        observation, seed_map, _, decoys = draw_condition(sample, condition, rng, contract)
        spacing = tuple(float(s) for s in sample.record["spacing_mm"])
        radius_px = 0.5 / min(spacing)
        noise = torch.randn((1, 1, *observation.shape), generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            x = contract.sample_projection(
                generator, torch.from_numpy(observation)[None, None].to(dev),
                torch.from_numpy(seed_map)[None, None].to(dev), noise.to(dev), t_start, steps)
            batch = torch.cat([x, torch.from_numpy(observation)[None, None].to(dev),
                               torch.from_numpy(sample.image.astype(np.float32))[None, None].to(dev)])
            probs = torch.sigmoid(segmentor(batch)).cpu().numpy()[:, 0]
        p_proj, p_obs, p_clean = probs
        visible = [(m["y_px"], m["x_px"]) for m in sample.record["mcs"] if m["visible"]]
        all_mcs = [(m["y_px"], m["x_px"]) for m in sample.record["mcs"]]
        counts["mcs"] += len(visible)
        x_np = x.float().cpu().numpy()[0, 0]
        for r, c in visible:
            ri, ci = round(r), round(c)
            b = sample.background[ri, ci]
            counts["c_clean"] += float(sample.image[ri, ci] - b)
            counts["c_obs"] += float(observation[ri, ci] - b)
            counts["c_proj"] += float(x_np[ri, ci] - b)
        counts["hit_proj"] += sum(_detected_near(p_proj, visible, radius_px))
        counts["hit_obs"] += sum(_detected_near(p_obs, visible, radius_px))
        counts["hit_clean"] += sum(_detected_near(p_clean, visible, radius_px))
        one_mm = 1.0 / min(spacing)
        far_decoys = [(d.row, d.col) for d in decoys
                      if all((d.row - r) ** 2 + (d.col - c) ** 2 > one_mm**2 for r, c in all_mcs)]
        counts["decoys"] += len(far_decoys)
        counts["decoy_hits"] += sum(_detected_near(p_proj, far_decoys, radius_px))
        seeds_all = all_mcs + [(d.row, d.col) for d in decoys]
        far = _far_mask(observation.shape, seeds_all, one_mm)
        for key, p in (("spurious_proj", p_proj), ("spurious_obs", p_obs)):
            labels, n = ndimage.label(p >= 0.5)
            if n:
                centres = ndimage.center_of_mass(np.ones_like(p), labels, range(1, n + 1))
                counts[key] += sum(1 for r, c in centres if far[int(round(r)), int(round(c))])
        counts["bg_err"] += float(np.abs(x_np - sample.image)[far].sum())
        high_pass = sample.image - ndimage.uniform_filter(sample.image.astype(np.float64), 3)
        counts["bg_noise"] += float(np.abs(high_pass)[far].sum())
        counts["bg_n"] += float(far.sum())

    def ratio(a: str, b: str) -> float | None:
        return None if counts[b] == 0 else round(counts[a] / counts[b], 4)

    return {
        "generator_sha256": gen_meta["weights"]["sha256"],
        "n_patches": n_samples,
        "n_visible_mcs": int(counts["mcs"]),
        "seed_recall": ratio("hit_proj", "mcs"),
        "seed_recall_observation": ratio("hit_obs", "mcs"),
        "seed_recall_clean": ratio("hit_clean", "mcs"),
        "mc_contrast_clean": ratio("c_clean", "mcs"),
        "mc_contrast_observation": ratio("c_obs", "mcs"),
        "mc_contrast_projection": ratio("c_proj", "mcs"),
        "n_decoys": int(counts["decoys"]),
        "decoy_acceptance": ratio("decoy_hits", "decoys"),
        "spurious_per_patch": round(counts["spurious_proj"] / n_samples, 4),
        "spurious_per_patch_observation": round(counts["spurious_obs"] / n_samples, 4),
        "background_mae": ratio("bg_err", "bg_n"),
        "background_texture_mad": ratio("bg_noise", "bg_n"),
        "t_start": t_start,
        "sampler_steps": steps,
    }
