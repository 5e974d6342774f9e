"""Training the seed-conditioned rectified-flow generator on synthetic MCs made on the fly.

The loop (data by step, AdamW, EMA, validation, checkpoints, exact resume, DDP, AMP) is
:func:`mcgenref.training.loop.run_training`; this module is the generator's
:class:`~mcgenref.training.loop.Task` (``run_training("generator", out_dir, negatives, config)``).

What the generator learns (METHOD section 4, and the reason for each choice). A training pair
is a synthetic sample: ``x_1`` = a real negative patch with MCs rendered in by the physical
model (the data, ``t = 1``), and its MC-free ``background``. The condition is

- the **observation** ``y = background + g * (x_1 - background)``: the same patch with every
  MC's signal scaled by a gain ``g`` drawn per sample from ``observation_gain`` (< 1: the MCs
  are fainter than in ``x_1``). At test time ``y`` is the real image window, whose faint MCs
  are exactly the ones the segmentor half-saw;
- the **seed map** (:func:`mcgenref.flow.seeds.render_seed_map`, every seed drawn with
  strength 1) of all the sample's MCs **plus decoys**: ``Poisson(decoy_rate)`` seeds at
  random places with no MC under them, whose target is the unchanged background; with
  ``hard_decoy_fraction`` > 0, that fraction of them (on average) sit instead on the
  background's own MC-like spots (local maxima of a difference-of-Gaussians response, away
  from the MCs): the segmentor's typical false candidates, which TT-GPR seeds at test time
  and which the generator must then leave as they are.

The flow's data is the **residual** ``r_1 = residual_scale * (x_1 - y)``: what must be added
to the observation, zero outside the MCs. So the velocity field transports noise to "what the
seeded MCs the observation supports lack of full contrast, and nothing where it does not": a
projection is ``y + r / residual_scale``, which keeps the real image outside the seeds up to
the sampler's error divided by ``residual_scale``, a true MC's faint trace becomes a clear MC,
and a seed on plain tissue stays plain tissue. (The first design generated ``x_1`` itself; its
MC detail, ~0.02 in normalised intensity, was lost against unit noise: after 1000-1900 CPU
steps a faint MC left a projection no brighter than it came in, 0.059 -> 0.059-0.064 of the
clean 0.074, with or without loss weights.) Where the
observation is ambiguous (a very faint MC vs a decoy) the generator's samples disagree, which
is what TT-GPR's agreement weights and uncertainty map measure. Seeds are drawn at strength 1
because at test time a seed's probability says how sure the segmentor was, which is what is
being questioned; the generator must judge from the pixels.

Loss: :func:`mcgenref.flow.rectified.rectified_flow_loss`, weighted ``1 + seed_loss_weight *
seed_map`` per pixel (the MCs and decoys must not drown in the background), with the seed map
zeroed per sample with probability ``model.condition_dropout`` (classifier-free guidance). Validation metric: the
same loss on the fixed validation set with fixed draws (``val_loss``, lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgenref.spots import find_spot_candidates
from mcgenref.flow.rectified import TimeDistribution, rectified_flow_loss
from mcgenref.flow.seeds import Seed, SeedConfig, render_seed_map, seeds_from_records
from mcgenref.models.generator import GeneratorConfig, build_generator, drop_condition
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.sample import Sample
from mcgenref.training.loop import Autocast, LoopConfig, Task

__all__ = ["GeneratorTask", "TrainGeneratorConfig", "generator_condition"]


@dataclass(frozen=True)
class TrainGeneratorConfig(LoopConfig):
    """Everything ``mcgenref train-generator`` needs besides its inputs (the --config format).

    The shared fields are documented in :class:`~mcgenref.training.loop.LoopConfig`; the
    defaults here differ where the generator needs it: 64-pixel patches (TT-GPR works on
    small windows around candidates; 12.8 mm at 0.2 mm), batch 32.

    Attributes:
        model: the velocity network.
        seeds: how seeds are drawn into the seed map (the same config TT-GPR uses).
        observation_gain: range of the gain ``g`` of the MC signal in the observation
            (uniform). Its low end is the faintest MC the generator is taught to restore:
            with the synthesis' visibility threshold of CNR 5, 0.3 keeps a seeded MC at CNR
            >= 1.5 in the observation, still distinguishable from a decoy on average.
        decoy_rate: mean number of decoy seeds (no MC under them) per patch (Poisson). 15,
            about the mean number of MCs of a patch, so that a seed is an MC about half of the
            time: with 3 (about 1 seed in 10 a decoy) the generator learnt that a seed is an
            MC and raised the segmentor's logit at MC and non-MC seeds alike
            (docs/generator_model_card.md).
        decoy_size_mm: range of the decoys' sizes (uniform), that of the synthesised MCs.
        hard_decoy_fraction: probability that a decoy is moved to one of the background's
            MC-like spots (module docstring), the segmentor's typical false candidates;
            0 = all decoys at uniform random places.
        time_distribution: how training times are drawn (:func:`~mcgenref.flow.rectified.sample_time`).
        residual_scale: the flow's data is ``residual_scale * (x_1 - observation)``; 10 puts
            the missing MC contrast (~0.02-0.05) at ~0.2-0.5, against unit noise.
        seed_loss_weight: the loss weight of a pixel is ``1 + seed_loss_weight * seed_map``:
            MCs and decoys cover ~1 % of a patch; 100 gives the seeded pixels about the weight
            of the rest together, so the decoys (residual 0) teach as much as the MCs.
    """

    synthesis: SynthesisConfig = field(default_factory=lambda: SynthesisConfig(patch_size_px=64))
    batch_size: int = 32
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    observation_gain: tuple[float, float] = (0.3, 1.0)
    decoy_rate: float = 15.0
    decoy_size_mm: tuple[float, float] = (0.15, 0.6)
    hard_decoy_fraction: float = 0.5
    time_distribution: TimeDistribution = "logit_normal"
    seed_loss_weight: float = 100.0
    residual_scale: float = 10.0

    def network_size_multiple(self) -> int:
        return self.model.size_multiple

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.observation_gain
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"observation_gain must satisfy 0 <= low <= high <= 1, got {self.observation_gain}")
        if not 0.0 <= self.decoy_rate <= 100.0:
            raise ValueError(f"decoy_rate must be in [0, 100], got {self.decoy_rate}")
        if not 0.0 <= self.hard_decoy_fraction <= 1.0:
            raise ValueError(f"hard_decoy_fraction must be in [0, 1], got {self.hard_decoy_fraction}")
        low, high = self.decoy_size_mm
        if not 0.0 < low <= high:
            raise ValueError(f"decoy_size_mm must satisfy 0 < low <= high, got {self.decoy_size_mm}")
        if not self.residual_scale > 0:
            raise ValueError(f"residual_scale must be > 0, got {self.residual_scale}")
        if self.seed_loss_weight < 0:
            raise ValueError(f"seed_loss_weight must be >= 0, got {self.seed_loss_weight}")
        if self.time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(f"time_distribution must be uniform or logit_normal, got {self.time_distribution!r}")


def _mc_like_spots(background: np.ndarray, spacing: tuple[float, float], mc_seeds: list[Seed],
                   max_spots: int = 16, min_distance_mm: float = 1.0) -> np.ndarray:
    """``[n, 2]`` the background's strongest MC-like spots (DoG maxima, with a positive
    response), at least ``min_distance_mm`` from every MC."""
    spots = find_spot_candidates(background, spacing, np.ones(background.shape, dtype=bool),
                                 threshold=1e-6, max_candidates=max_spots + len(mc_seeds))
    if mc_seeds and len(spots):
        mcs = np.array([[s.row, s.col] for s in mc_seeds]) * np.asarray(spacing)
        d = np.linalg.norm(spots[:, None, :] * np.asarray(spacing) - mcs[None], axis=2).min(axis=1)
        spots = spots[d >= min_distance_mm]
    return spots[:max_spots].astype(float)


def generator_condition(
    sample: Sample, config: TrainGeneratorConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[Seed], list[Seed]]:
    """The training condition of one sample: ``(observation, seed_map, mc_seeds, decoys)``.

    Draws, from ``rng`` and in this order, the observation gain, the number of decoys, their
    (row, col, size) and, with ``hard_decoy_fraction`` > 0, which of them move to MC-like
    spots of the background and to which. See the module docstring.
    """
    if sample.background is None:
        raise ValueError("the sample has no background (made by an old synthesis version?)")
    image = np.asarray(sample.image, dtype=np.float32)
    background = np.asarray(sample.background, dtype=np.float32)
    gain = float(rng.uniform(*config.observation_gain))
    observation = (background + gain * (image - background)).astype(np.float32)
    spacing = (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1]))
    # every rendered MC, visible or not: each is in x_1, so each must have its seed
    mc_seeds = [replace(s, strength=1.0) for s in seeds_from_records(sample.record["mcs"], only_visible=False)]
    h, w = image.shape
    n = int(rng.poisson(config.decoy_rate))
    rows, cols = rng.uniform(0, h - 1, n), rng.uniform(0, w - 1, n)
    sizes = rng.uniform(*config.decoy_size_mm, n)
    if config.hard_decoy_fraction > 0 and n:
        hard = np.flatnonzero(rng.random(n) < config.hard_decoy_fraction)
        spots = _mc_like_spots(background, spacing, mc_seeds)
        if len(hard) and len(spots):
            pick = rng.choice(len(spots), size=min(len(hard), len(spots)), replace=False)
            for i, j in zip(hard, pick, strict=False):
                rows[i], cols[i] = spots[j]
    decoys = [Seed(float(r), float(c), float(s), 1.0) for r, c, s in zip(rows, cols, sizes, strict=True)]
    seed_map = render_seed_map(mc_seeds + decoys, (h, w), spacing, config.seeds)
    return observation, seed_map, mc_seeds, decoys


class GeneratorTask(Task):
    """The generator: rectified-flow loss of the velocity net conditioned on seeds + observation."""

    config_cls = TrainGeneratorConfig
    metric = "val_loss"
    metric_label = "val loss"
    n_totals = 2  # sum of per-sample losses, number of samples

    def build(self) -> nn.Module:
        return build_generator(self.config.model)

    def item(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([int(sample.record["seed"]), 0xC0DE])
        observation, seed_map, _, _ = generator_condition(sample, self.config, rng)
        return {
            "residual": torch.from_numpy(
                self.config.residual_scale * (np.asarray(sample.image, dtype=np.float32) - observation)
            )[None],
            "background": torch.from_numpy(observation)[None],
            "seed_map": torch.from_numpy(seed_map)[None],
        }

    def _loss(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator,
              autocast: Autocast, dropout: float) -> torch.Tensor:
        cond = {"seed_map": batch["seed_map"], "background": batch["background"]}
        weight = 1.0 + self.config.seed_loss_weight * batch["seed_map"]  # before any drop
        cond = drop_condition(cond, generator, dropout)
        with autocast():
            result = rectified_flow_loss(
                model, batch["residual"], cond, generator, self.config.time_distribution, weight
            )
        return result.loss.float()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        return self._loss(model, batch, generator, autocast, self.config.model.condition_dropout)

    def validation_totals(self, model: nn.Module, batch: dict[str, torch.Tensor],
                          generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        n = batch["residual"].shape[0]
        loss = self._loss(model, batch, generator, autocast, 0.0)
        return torch.stack([loss.double() * n, torch.tensor(float(n), dtype=torch.float64)])

    def metric_value(self, totals: torch.Tensor) -> float:
        return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")

    def extra(self) -> dict[str, Any]:
        c = self.config
        return {
            "time_convention": "t = 0 noise, t = 1 data (mcgenref.flow.rectified)",
            "data": "residual_scale * (image - observation); projection = observation + sample / residual_scale",
            "residual_scale": c.residual_scale,
            "condition": {
                "observation_gain": list(c.observation_gain),
                "decoy_rate": c.decoy_rate,
                "decoy_size_mm": list(c.decoy_size_mm),
                "hard_decoy_fraction": c.hard_decoy_fraction,
                "seed_strength": 1.0,
                "seed_loss_weight": c.seed_loss_weight,
            },
            "seeds": {
                "blob_sigma_scale": c.seeds.blob_sigma_scale,
                "min_sigma_mm": c.seeds.min_sigma_mm,
            },
        }

