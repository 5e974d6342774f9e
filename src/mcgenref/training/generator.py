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

**Mined seeds** (``seed_source="mined"``, :class:`MinedSeedsConfig`; issue 14, item 4). The
condition above is not what the generator meets in TT-GPR: there the seeds are maxima of a
segmentor's logits (:data:`mcgenref.flow.seeds.TT_GPR_SEEDS`), about 1 in 5 on an MC, and its
non-MC seeds are the segmentor's own false candidates, harder than random decoys or DoG
maxima. With ``"mined"`` each training sample's seeds are found exactly so: the observation
``y`` (the same fainter copy, whole synthesis patch) goes through a FROZEN segmentor
(``mined.segmentor``, the shipped one by default; once per step for the whole batch, under
``no_grad`` on the training device) and :func:`mcgenref.flow.seeds.seeds_from_logits` with
``mined.seeds`` mines its seeds. Each seed is labelled by the MC under it
(:func:`mc_owner_map`: the pixels within ``size / 2 + mined.mc_halo_mm`` of an MC's centre,
the nearest MC where discs overlap):

- a seed on a **visible** MC (in the synthesis' mask) gets the restoration target, the
  residual ``residual_scale * (x_1 - y)`` over that MC's pixels;
- a seed on **no** MC (the segmentor's false candidate) gets "no MC": residual 0;
- a seed on an **invisible** MC (below the synthesis' visibility CNR) is dropped, and the
  pixels of every invisible MC have loss weight 0, so they are penalised neither way;
- a visible MC without a seed keeps residual 0 ("no seed, no change": what TT-GPR asks of
  the pixels it did not seed).

The step trains on ``mined.crops_per_sample`` crops of ``mined.crop_px`` per sample, each
centred on one of its seeds drawn at random (uniformly, so the share of MC seeds among the
training crops is what the rule yields; a sample without seeds gives crops at random
places), with every seed inside the crop in its seed map (:func:`mine_crops`).

Loss: :func:`mcgenref.flow.rectified.rectified_flow_loss`, weighted ``1 + seed_loss_weight *
seed_map`` per pixel (the MCs and decoys must not drown in the background), with the seed map
zeroed per sample with probability ``model.condition_dropout`` (classifier-free guidance). Validation metric: the
same loss on the fixed validation set with fixed draws (``val_loss``, lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mcgenref.errors import ConfigError
from mcgenref.flow.rectified import TimeDistribution, rectified_flow_loss
from mcgenref.flow.seeds import TT_GPR_SEEDS, Seed, SeedConfig, seeds_from_logits
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

__all__ = ["GeneratorTask", "MinedSeedsConfig", "MinedSeeds", "TrainGeneratorConfig",
           "generator_condition", "label_mined_seeds", "mc_owner_map", "mine_crops",
           "shipped_segmentor_path"]

SeedSource = Literal["synthetic", "mined"]


def shipped_segmentor_path() -> Path:
    """The segmentor shipped inside the package (``mcgenref/weights/segmentor``)."""
    return Path(str(resources.files("mcgenref") / "weights" / "segmentor"))


@dataclass(frozen=True)
class MinedSeedsConfig:
    """How a generator trained on mined seeds gets them (``seed_source="mined"``; module
    docstring).

    Attributes:
        segmentor: the frozen segmentor's model folder (``None``: the shipped one); its path
            and weights sha256 are recorded in the generator's ``model.json``.
        seeds: the rule that mines the seeds and draws them into the seed map: TT-GPR's
            (:data:`mcgenref.flow.seeds.TT_GPR_SEEDS`), so that training sees the seeds
            TT-GPR will give; must be the ``"logit"`` rule.
        crop_px: side of the training crops centred on the seeds (a multiple of the
            network's size multiple): 32 px (6.4 mm at 0.2 mm) holds a seed and the tissue
            around it at a quarter of the cost of a 64 px window.
        crops_per_sample: crops per synthesis patch and step.
        mc_halo_mm: an MC owns the pixels within ``size_mm / 2 + mc_halo_mm`` of its centre
            (:func:`mc_owner_map`): 0.3 mm is about twice the largest PSF sigma, so the
            blurred signal of an MC falls inside its disc.
    """

    segmentor: str | None = None
    seeds: SeedConfig = field(default_factory=lambda: TT_GPR_SEEDS)
    crop_px: int = 32
    crops_per_sample: int = 4
    mc_halo_mm: float = 0.3

    def __post_init__(self) -> None:
        if self.seeds.rule != "logit":
            raise ValueError(f"mined.seeds must be the logit rule (TT-GPR's), got {self.seeds.rule!r}")
        if self.crop_px < 8:
            raise ValueError(f"mined.crop_px must be >= 8, got {self.crop_px}")
        if self.crops_per_sample < 1:
            raise ValueError(f"mined.crops_per_sample must be >= 1, got {self.crops_per_sample}")
        if not self.mc_halo_mm >= 0:
            raise ValueError(f"mined.mc_halo_mm must be >= 0, got {self.mc_halo_mm}")

    def segmentor_path(self) -> Path:
        """The segmentor folder this config names (the shipped one for ``None``)."""
        return Path(self.segmentor) if self.segmentor is not None else shipped_segmentor_path()


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
        seed_source: where the seeds of the condition come from: ``"synthetic"`` (the
            sample's MCs plus decoys, :func:`generator_condition`; the default, and what
            every config written before this field means) or ``"mined"`` (mined from a
            frozen segmentor's logits on the observation by TT-GPR's rule, ``mined``; the
            decoy fields are then unused). Recorded in ``model.json`` (``extra.condition``).
        mined: the mined-seed settings (:class:`MinedSeedsConfig`), used with ``"mined"``.
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
    seed_source: SeedSource = "synthetic"
    mined: MinedSeedsConfig = field(default_factory=MinedSeedsConfig)

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
        if self.seed_source not in ("synthetic", "mined"):
            raise ValueError(f"seed_source must be synthetic or mined, got {self.seed_source!r}")
        if self.seed_source == "mined":
            crop, multiple = self.mined.crop_px, self.model.size_multiple
            if crop % multiple or crop > self.synthesis.patch_size_px:
                raise ValueError(f"mined.crop_px {crop} must be a multiple of {multiple} and at most "
                                 f"synthesis.patch_size_px {self.synthesis.patch_size_px}")


def generator_condition(
    sample: Sample, config: TrainGeneratorConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[Seed], list[Seed]]:
    """The training condition of one sample: ``(observation, seed_map, mc_seeds, decoys)``,
    by :func:`mcgenref.models.generator.draw_condition` with this config's condition settings."""
    return draw_condition(sample, config.condition_config(), rng, config.contract())


def mc_owner_map(record: dict[str, Any], shape: tuple[int, int], spacing_mm: tuple[float, float],
                 halo_mm: float) -> np.ndarray:
    """int32 ``[H, W]``: which MC of a synthesis record owns each pixel.

    ``i + 1`` for the visible MC ``record["mcs"][i]``, ``-(i + 1)`` for an invisible one, 0 for
    none. An MC owns the pixels whose centres lie within ``size_mm / 2 + halo_mm`` of its
    centre (in mm, per axis spacing); where discs overlap, the MC nearer relative to its
    radius.
    """
    h, w = int(shape[0]), int(shape[1])
    sr, sc = float(spacing_mm[0]), float(spacing_mm[1])
    owner = np.zeros((h, w), dtype=np.int32)
    best = np.full((h, w), np.inf)
    for i, mc in enumerate(record["mcs"]):
        radius = 0.5 * float(mc["size_mm"]) + halo_mm
        row, col = float(mc["y_px"]), float(mc["x_px"])
        r0, r1 = max(int(np.floor(row - radius / sr)), 0), min(int(np.ceil(row + radius / sr)) + 1, h)
        c0, c1 = max(int(np.floor(col - radius / sc)), 0), min(int(np.ceil(col + radius / sc)) + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        rel = np.sqrt(((rr - row) * sr) ** 2 + ((cc - col) * sc) ** 2) / radius
        take = (rel <= 1.0) & (rel < best[r0:r1, c0:c1])
        best[r0:r1, c0:c1][take] = rel[take]
        owner[r0:r1, c0:c1][take] = (i + 1) if mc["visible"] else -(i + 1)
    return owner


@dataclass(frozen=True)
class MinedSeeds:
    """The seeds mined in one sample, labelled (:func:`label_mined_seeds`).

    Attributes:
        seeds: the kept seeds, strongest first: on a visible MC or on no MC.
        on_mc: per kept seed, whether it lies on a visible MC.
        seeded_mcs: the owner ids (:func:`mc_owner_map`, > 0) of the visible MCs with a seed.
        dropped: seeds dropped because they lay on an invisible MC.
    """

    seeds: list[Seed]
    on_mc: list[bool]
    seeded_mcs: frozenset[int]
    dropped: int


def label_mined_seeds(seeds: list[Seed], owner: np.ndarray) -> MinedSeeds:
    """Label seeds by the MC owning their (rounded) pixel: visible MC -> an MC seed, no MC ->
    a false candidate, invisible MC -> dropped (module docstring)."""
    h, w = owner.shape
    kept, on_mc, seeded, dropped = [], [], set(), 0
    for seed in seeds:
        r = min(max(int(round(seed.row)), 0), h - 1)
        c = min(max(int(round(seed.col)), 0), w - 1)
        o = int(owner[r, c])
        if o < 0:
            dropped += 1
            continue
        kept.append(seed)
        on_mc.append(o > 0)
        if o > 0:
            seeded.add(o)
    return MinedSeeds(kept, on_mc, frozenset(seeded), dropped)


def mine_crops(
    image: np.ndarray, observation: np.ndarray, owner: np.ndarray, logits: np.ndarray,
    spacing_mm: tuple[float, float], config: TrainGeneratorConfig, rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], MinedSeeds]:
    """The training crops of one sample with mined seeds (module docstring).

    Args:
        image: ``x_1``, float32 ``[H, W]`` (the patch with its MCs at full contrast).
        observation: ``y``, float32 ``[H, W]``, what the segmentor saw.
        owner: :func:`mc_owner_map` of the sample.
        logits: the frozen segmentor's logits on ``observation``, ``[H, W]``.
        spacing_mm: the sample's (row, col) spacing.
        config: ``mined`` (rule, crop size and count), ``residual_scale``.
        rng: draws the crop centres (which seeds; random places when there is none).

    Returns:
        ``({"residual", "background", "seed_map", "loss_mask"}, labels)``, each array float32
        ``[crops_per_sample, 1, crop_px, crop_px]``: the target residual (the restoration
        over the seeded visible MCs, 0 elsewhere), the observation, the seed map of every kept
        seed, and 0 over invisible MCs' pixels, 1 elsewhere.
    """
    m = config.mined
    h, w = observation.shape
    mined = label_mined_seeds(seeds_from_logits(logits, spacing_mm, m.seeds), owner)
    contract = config.contract()
    seed_map = contract.seed_map(mined.seeds, (h, w), spacing_mm, m.seeds)
    restore = np.isin(owner, np.fromiter(mined.seeded_mcs, dtype=np.int32, count=len(mined.seeded_mcs)))
    residual = np.where(restore, contract.residual(image, observation), 0.0).astype(np.float32)
    loss_mask = (owner >= 0).astype(np.float32)
    size = m.crop_px
    if mined.seeds:
        picks = rng.integers(0, len(mined.seeds), m.crops_per_sample)
        centres = [(mined.seeds[i].row, mined.seeds[i].col) for i in picks]
    else:
        centres = list(zip(rng.uniform(0, h - 1, m.crops_per_sample),
                           rng.uniform(0, w - 1, m.crops_per_sample), strict=True))
    out: dict[str, list[np.ndarray]] = {"residual": [], "background": [], "seed_map": [], "loss_mask": []}
    for row, col in centres:
        r0 = int(min(max(round(row) - size // 2, 0), h - size))
        c0 = int(min(max(round(col) - size // 2, 0), w - size))
        window = (slice(r0, r0 + size), slice(c0, c0 + size))
        for key, array in (("residual", residual), ("background", observation),
                           ("seed_map", seed_map), ("loss_mask", loss_mask)):
            out[key].append(np.asarray(array[window], dtype=np.float32)[None])
    return {k: np.stack(v) for k, v in out.items()}, mined


class GeneratorTask(Task):
    """The generator: rectified-flow loss of the velocity net conditioned on seeds + observation
    (seeds drawn from the synthesis, or mined from a frozen segmentor: ``seed_source``)."""

    config_cls = TrainGeneratorConfig
    metric = "val_loss"
    metric_label = "val loss"
    n_totals = 2  # sum of per-sample losses, number of samples

    def __init__(self, config: TrainGeneratorConfig) -> None:
        super().__init__(config)
        self._segmentor: tuple[torch.device, nn.Module, Any] | None = None  # loaded when first mined

    def build(self) -> nn.Module:
        return build_generator(self.config.model)

    def item(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([int(sample.record["seed"]), 0xC0DE])
        image = np.asarray(sample.image, dtype=np.float32)
        if self.config.seed_source == "mined":
            return self._mined_item(sample, image, rng)
        observation, seed_map, _, _ = generator_condition(sample, self.config, rng)
        return {
            "residual": torch.from_numpy(self.config.contract().residual(image, observation))[None],
            "background": torch.from_numpy(observation)[None],
            "seed_map": torch.from_numpy(seed_map)[None],
        }

    def _mined_item(self, sample: Sample, image: np.ndarray, rng: np.random.Generator
                    ) -> dict[str, torch.Tensor]:
        """The whole patch: ``x_1``, the observation (MC signal times a gain, as
        :func:`~mcgenref.models.generator.draw_condition` draws it), the MC owner map and the
        spacing; the seeds are mined per step (:meth:`mined_batch`)."""
        if sample.background is None:
            raise ValueError("the sample has no background (made by an old synthesis version?)")
        background = np.asarray(sample.background, dtype=np.float32)
        gain = float(rng.uniform(*self.config.observation_gain))
        observation = (background + gain * (image - background)).astype(np.float32)
        spacing = (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1]))
        owner = mc_owner_map(sample.record, image.shape, spacing, self.config.mined.mc_halo_mm)
        return {
            "image": torch.from_numpy(image)[None],
            "observation": torch.from_numpy(observation)[None],
            "mc_owner": torch.from_numpy(owner)[None],
            "spacing_mm": torch.tensor(spacing, dtype=torch.float64),
        }

    def mining_segmentor(self, device: torch.device) -> nn.Module:
        """The frozen segmentor (``mined.segmentor``) on ``device``, loaded once, in eval mode
        and without gradients."""
        if self._segmentor is None or self._segmentor[0] != device:
            from mcgenref.models.checkpoint import load_segmentor

            model, contract, _ = load_segmentor(self.config.mined.segmentor_path(), device)
            self._segmentor = (device, model.requires_grad_(False), contract)
        return self._segmentor[1]

    @torch.no_grad()
    def mined_batch(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                    autocast: Autocast, segmentor: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The crops of a batch of whole patches (:meth:`item` with ``"mined"``): one
        segmentor forward for the batch, then :func:`mine_crops` per sample (crop centres
        drawn from ``generator``). Returns ``residual``, ``background``, ``seed_map``,
        ``loss_mask`` [B * crops_per_sample, 1, crop, crop] on the batch's device.
        ``segmentor``: stands in for ``mined.segmentor`` (a test's fake with known logits)."""
        observation = batch["observation"]
        spacings = batch["spacing_mm"].cpu().numpy()
        if segmentor is None:
            segmentor = self.mining_segmentor(observation.device)
            trained = self._segmentor[2].pixel_spacing_mm if self._segmentor else None
            if trained is not None and not np.allclose(spacings, np.asarray(trained), rtol=0.02):
                raise ConfigError(f"the mining segmentor was trained at {trained} mm; the training "
                                  f"patches are at {sorted({tuple(v) for v in spacings.tolist()})} mm")
        with autocast():
            logits = segmentor(observation).float()
        logits = logits[:, 0].cpu().numpy()
        images = batch["image"][:, 0].cpu().numpy()
        observations = observation[:, 0].cpu().numpy()
        owners = batch["mc_owner"][:, 0].cpu().numpy()
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        parts = [mine_crops(images[i], observations[i], owners[i], logits[i],
                            (float(spacings[i][0]), float(spacings[i][1])), self.config, rng)[0]
                 for i in range(len(images))]
        return {key: torch.from_numpy(np.concatenate([p[key] for p in parts])).to(observation.device)
                for key in parts[0]}

    def _loss(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator,
              autocast: Autocast, dropout: float) -> torch.Tensor:
        if self.config.seed_source == "mined":
            batch = self.mined_batch(batch, generator, autocast)
        cond = self.config.contract().condition(batch["background"], batch["seed_map"])
        weight = 1.0 + self.config.seed_loss_weight * batch["seed_map"]  # before any drop
        if "loss_mask" in batch:  # mined: invisible MCs' pixels count neither way
            weight = weight * batch["loss_mask"]
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
        n = batch["observation" if self.config.seed_source == "mined" else "residual"].shape[0]
        loss = self._loss(model, batch, generator, autocast, 0.0)
        return torch.stack([loss.double() * n, torch.tensor(float(n), dtype=torch.float64)])

    def metric_value(self, totals: torch.Tensor) -> float:
        return float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")

    def extra(self) -> dict[str, Any]:
        c = self.config
        condition: dict[str, Any] = {
            "seed_source": c.seed_source,
            "observation_gain": list(c.observation_gain),
            "seed_strength": GeneratorContract.seed_strength,
            "seed_loss_weight": c.seed_loss_weight,
        }
        seeds = c.seeds
        if c.seed_source == "mined":
            from mcgenref.models.checkpoint import MODEL_KIND, read_model_meta

            m = c.mined
            path = m.segmentor_path()
            seeds = m.seeds
            condition["mined"] = {
                "segmentor": str(path),
                "segmentor_sha256": read_model_meta(path, MODEL_KIND)["weights"]["sha256"],
                "rule": "mcgenref.flow.seeds.seeds_from_logits on the segmentor's logits of the observation",
                "min_logit": seeds.min_logit, "max_per_tile": seeds.max_per_tile,
                "tile_px": seeds.tile_px, "nms_radius_mm": seeds.nms_radius_mm,
                "crop_px": m.crop_px, "crops_per_sample": m.crops_per_sample,
                "mc_halo_mm": m.mc_halo_mm,
                "labels": "seed on a visible MC: restoration target; on no MC: residual 0; on an "
                          "invisible MC: dropped, its pixels weight 0",
            }
        else:
            condition.update({
                "decoy_rate": c.decoy_rate,
                "decoy_size_mm": list(c.decoy_size_mm),
                "hard_decoy_fraction": c.hard_decoy_fraction,
            })
        return {
            **c.contract().to_extra(),
            "condition": condition,
            "seeds": {
                "blob_sigma_scale": seeds.blob_sigma_scale,
                "min_sigma_mm": seeds.min_sigma_mm,
            },
        }
