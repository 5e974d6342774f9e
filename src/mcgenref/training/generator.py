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
to the observation, zero outside the MCs (the convention is
:class:`mcgenref.models.generator.GeneratorContract`, recorded in ``model.json``; the
condition is drawn by :func:`mcgenref.models.generator.draw_condition`). So the velocity
field transports noise to "what the seeded MCs the observation supports lack of full
contrast, and nothing where it does not": a
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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgenref.flow.rectified import TimeDistribution, rectified_flow_loss
from mcgenref.flow.seeds import Seed, SeedConfig
from mcgenref.models.generator import (
    ConditionConfig,
    GeneratorConfig,
    GeneratorContract,
    build_generator,
    draw_condition,
    drop_condition,
)
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
        seeds, observation_gain, decoy_rate, decoy_size_mm, hard_decoy_fraction: how the
            condition is drawn: :class:`~mcgenref.models.generator.ConditionConfig` (their
            meaning and defaults are stated there; :meth:`condition_config` gathers them).
        time_distribution: how training times are drawn (:func:`~mcgenref.flow.rectified.sample_time`).
        residual_scale: :attr:`mcgenref.models.generator.GeneratorContract.residual_scale`
            (:meth:`contract`), recorded in the model's ``model.json``.
        seed_loss_weight: the loss weight of a pixel is ``1 + seed_loss_weight * seed_map``:
            MCs and decoys cover ~1 % of a patch; 100 gives the seeded pixels about the weight
            of the rest together, so the decoys (residual 0) teach as much as the MCs.
    """

    synthesis: SynthesisConfig = field(default_factory=lambda: SynthesisConfig(patch_size_px=64))
    batch_size: int = 32
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)
    observation_gain: tuple[float, float] = ConditionConfig.observation_gain
    decoy_rate: float = ConditionConfig.decoy_rate
    decoy_size_mm: tuple[float, float] = ConditionConfig.decoy_size_mm
    hard_decoy_fraction: float = ConditionConfig.hard_decoy_fraction
    time_distribution: TimeDistribution = "logit_normal"
    seed_loss_weight: float = 100.0
    residual_scale: float = GeneratorContract.residual_scale

    def network_size_multiple(self) -> int:
        return self.model.size_multiple

    def condition_config(self) -> ConditionConfig:
        """How this run draws its conditions (:func:`~mcgenref.models.generator.draw_condition`)."""
        return ConditionConfig(observation_gain=self.observation_gain, decoy_rate=self.decoy_rate,
                               decoy_size_mm=self.decoy_size_mm,
                               hard_decoy_fraction=self.hard_decoy_fraction, seeds=self.seeds)

    def contract(self) -> GeneratorContract:
        """The data convention the trained generator will follow (written to model.json)."""
        return GeneratorContract(residual_scale=self.residual_scale)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.condition_config()  # checks the condition's fields
        self.contract()  # checks residual_scale
        if self.seed_loss_weight < 0:
            raise ValueError(f"seed_loss_weight must be >= 0, got {self.seed_loss_weight}")
        if self.time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(f"time_distribution must be uniform or logit_normal, got {self.time_distribution!r}")


def generator_condition(
    sample: Sample, config: TrainGeneratorConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[Seed], list[Seed]]:
    """The training condition of one sample: ``(observation, seed_map, mc_seeds, decoys)``,
    by :func:`mcgenref.models.generator.draw_condition` with this config's condition settings."""
    return draw_condition(sample, config.condition_config(), rng, config.contract())


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
        image = np.asarray(sample.image, dtype=np.float32)
        return {
            "residual": torch.from_numpy(self.config.contract().residual(image, observation))[None],
            "background": torch.from_numpy(observation)[None],
            "seed_map": torch.from_numpy(seed_map)[None],
        }

    def _loss(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator,
              autocast: Autocast, dropout: float) -> torch.Tensor:
        cond = self.config.contract().condition(batch["background"], batch["seed_map"])
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
            **c.contract().to_extra(),
            "condition": {
                "observation_gain": list(c.observation_gain),
                "decoy_rate": c.decoy_rate,
                "decoy_size_mm": list(c.decoy_size_mm),
                "hard_decoy_fraction": c.hard_decoy_fraction,
                "seed_strength": GeneratorContract.seed_strength,
                "seed_loss_weight": c.seed_loss_weight,
            },
            "seeds": {
                "blob_sigma_scale": c.seeds.blob_sigma_scale,
                "min_sigma_mm": c.seeds.min_sigma_mm,
            },
        }

