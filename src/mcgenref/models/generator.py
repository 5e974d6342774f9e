"""The seed-conditioned rectified-flow generator (METHOD section 4): its velocity network and
its data convention (:class:`GeneratorContract`), the one place that says what the generator
models and how a sample becomes an image.

Data convention (:class:`GeneratorContract`; why: :mod:`mcgenref.training.generator`). The
flow's data is the **residual** ``r = residual_scale * (x - y)`` of an image ``x`` over its
observation ``y`` (zero where the observation is already right); a sample ``r`` becomes the
**projection** ``y + r / residual_scale``. The condition is the seed map (every seed drawn at
strength 1) and the observation ``y``. ``residual_scale`` is stored in the generator's
``model.json`` (``extra.residual_scale``) and read from there
(:func:`mcgenref.models.checkpoint.load_generator`). :func:`draw_condition` draws the
training-style condition of a synthetic sample (a fainter observation, the MCs' seeds and
decoys, some on the background's MC-like spots), which training and the sample-quality
check share.

Tensor contract (time convention: :mod:`mcgenref.flow.rectified`, ``t = 0`` noise, ``t = 1``
data):

- ``x_t``: float32 ``[B, 1, H, W]``, the state on the straight path (at ``t = 1`` the
  residual ``r``, in residual units: normalised intensity times ``residual_scale``);
- ``t``: float ``[B]`` in [0, 1] (a 0-d tensor is broadcast to the batch);
- ``cond``: ``{"seed_map": [B, 1, H, W], "background": [B, 1, H, W]}``: the seed map of
  :func:`mcgenref.flow.seeds.render_seed_map` (in [0, 1]; all zeros = "no seed", the
  unconditional input of classifier-free guidance) and the observation ``y`` (normalised
  intensity), the image the residual is added to (:meth:`GeneratorContract.condition`);
- network input: ``concat([x_t, seed_map, background], dim=1)``, always
  :attr:`GeneratorConfig.in_context_channels` = 3 channels; output: the velocity
  ``dx_t/dt``, ``[B, 1, H, W]`` (:attr:`GeneratorConfig.out_channels` = 1).

So ``net(x_t, t, cond)`` is a :class:`mcgenref.flow.rectified.VelocityFn` with ``cond`` the
dict, and goes straight into ``rectified_flow_loss`` / ``euler_sample``.

``H`` and ``W`` must be multiples of ``2 ** (len(channels) - 1)``
(:attr:`GeneratorConfig.size_multiple`), so that the skips line up; they need not be equal
(32 x 48 works with the default). Otherwise ``forward`` raises ``ValueError``.

The network is a compact U-Net in plain torch (MONAI's U-Nets have no time input): per level
one residual block (GroupNorm, SiLU, 3x3 conv) whose middle is modulated by the time
(sinusoidal embedding -> MLP -> per-block scale and shift, FiLM); strided-conv down,
nearest-upsample + conv up, concatenated skips. GroupNorm, not BatchNorm, so a sample never
depends on the rest of its batch (guidance stacks conditional and unconditional inputs in
one batch). No device is chosen here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mcgenref.flow.rectified import euler_sample, partial_start
from mcgenref.flow.seeds import Seed, SeedConfig, render_seed_map, seeds_from_records
from mcgenref.spots import find_spot_candidates

if TYPE_CHECKING:
    from mcgenref.runtime import Autocast
    from mcgenref.synthesis.sample import Sample

__all__ = [
    "ConditionConfig",
    "GeneratorConfig",
    "GeneratorContract",
    "SeedConditionedVelocityNet",
    "build_generator",
    "draw_condition",
    "drop_condition",
    "guided_velocity",
]

Condition = dict[str, Tensor]


@dataclass(frozen=True)
class GeneratorConfig:
    """How wide the velocity network is, and how it is trained to be guided.

    Attributes:
        channels: feature channels per resolution level, finest first; each further level
            halves the size. The default (32, 64, 128) trains on a CPU: seeds and MCs are a
            few pixels wide, so resolution matters more than depth.
        time_embedding_dim: width of the sinusoidal time embedding (the MLP after it is 4x
            wider); even.
        condition_dropout: probability, per training sample, of zeroing the seed map
            (:func:`drop_condition`), so that one network also learns the unconditional
            velocity that classifier-free guidance needs. Only the seed map is dropped: the
            background is the observation, present in every use, never a guided condition.
        norm_groups: GroupNorm groups; must divide every entry of ``channels``.
        in_context_channels: (fixed, not a field) the input is
            ``concat([x_t, seed_map, background])``: 3 channels.
        out_channels: (fixed, not a field) the velocity: 1 channel.
    """

    in_context_channels: ClassVar[int] = 3
    out_channels: ClassVar[int] = 1

    channels: tuple[int, ...] = (32, 64, 128)
    time_embedding_dim: int = 64
    condition_dropout: float = 0.1
    norm_groups: int = 8

    def __post_init__(self) -> None:
        if len(self.channels) < 1 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels needs at least 1 positive value, got {self.channels}")
        if self.norm_groups < 1 or any(c % self.norm_groups for c in self.channels):
            raise ValueError(
                f"norm_groups ({self.norm_groups}) must divide every channel count {self.channels}"
            )
        if self.time_embedding_dim < 2 or self.time_embedding_dim % 2:
            raise ValueError(
                f"time_embedding_dim must be even and >= 2, got {self.time_embedding_dim}"
            )
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2 ** (len(channels) - 1)``)."""
        return 2 ** (len(self.channels) - 1)


def sinusoidal_time_embedding(t: Tensor, dim: int) -> Tensor:
    """``[B]`` -> ``[B, dim]``: sin and cos of ``1000 t`` at geometric frequencies 1 .. 1e-4.

    ``t`` lives in [0, 1]; the factor 1000 spreads it over the range the transformer
    frequencies resolve (as with the integer steps of diffusion models).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = 1000.0 * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM by the time, GN-SiLU-conv, plus a (1x1) skip."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1.0 + scale)  # norm2(h) (1 + scale) + shift
        h = self.conv2(F.silu(h))
        # one fused op and an in-place add instead of three passes over the feature map:
        # ~10 % off a forward of TT-GPR's 64 px windows on the CPU (docs/tt_gpr.md, "Cost");
        # autograd allows both (a convolution's backward does not need its output)
        return h.add_(self.skip(x))


class SeedConditionedVelocityNet(nn.Module):
    """``v_theta(x_t, t, cond)``: the time-conditioned U-Net of the module docstring."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ch, groups, tdim = config.channels, config.norm_groups, config.time_embedding_dim
        hidden = 4 * tdim
        self.time_mlp = nn.Sequential(nn.Linear(tdim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.stem = nn.Conv2d(config.in_context_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            _ResBlock(ch[max(i - 1, 0)], c, hidden, groups) for i, c in enumerate(ch)
        )
        self.downsamples = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1])
        self.middle = _ResBlock(ch[-1], ch[-1], hidden, groups)
        # decoder, coarsest first: upsample level i+1 to level i, concat the skip, one block
        self.upsamples = nn.ModuleList(
            nn.Conv2d(ch[i + 1], ch[i], 3, padding=1) for i in reversed(range(len(ch) - 1))
        )
        self.up_blocks = nn.ModuleList(
            _ResBlock(2 * ch[i], ch[i], hidden, groups) for i in reversed(range(len(ch) - 1))
        )
        self.out_norm = nn.GroupNorm(groups, ch[0])
        self.out_conv = nn.Conv2d(ch[0], config.out_channels, 3, padding=1)
        # zero velocity at init: the first samples are the start state unchanged and the
        # first loss is E|x_1 - x_0|^2 whatever the random features, instead of a random
        # field of arbitrary scale that the early steps must first undo (a stable start)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """``[B, 1, H, W]``, ``[B]``, ``{"seed_map", "background"}`` -> ``[B, 1, H, W]``."""
        t = self._check(x_t, t, cond)
        temb = self.time_mlp(
            sinusoidal_time_embedding(t, self.config.time_embedding_dim).to(x_t.dtype)
        )
        h = self.stem(torch.cat([x_t, cond["seed_map"], cond["background"]], dim=1))
        skips: list[Tensor] = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, temb)
            if i < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[i](h)
        h = self.middle(h, temb)
        for upsample, block in zip(self.upsamples, self.up_blocks, strict=True):
            h = upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.out_conv(F.silu(self.out_norm(h)))

    def _check(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must be [B, 1, H, W], got {tuple(x_t.shape)}")
        b, _, h, w = x_t.shape
        m = self.config.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"height and width must be multiples of {m} (2 ** (len(channels) - 1)), "
                f"got {h} x {w}"
            )
        if not isinstance(cond, dict) or {"seed_map", "background"} - set(cond):
            raise ValueError("cond must be a dict with 'seed_map' and 'background'")
        for key in ("seed_map", "background"):
            if tuple(cond[key].shape) != tuple(x_t.shape):
                raise ValueError(
                    f"cond[{key!r}] must be {tuple(x_t.shape)}, got {tuple(cond[key].shape)}"
                )
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must be [B] = [{b}], got {tuple(t.shape)}")
        return t


def build_generator(config: GeneratorConfig) -> SeedConditionedVelocityNet:
    """A freshly initialised velocity network (weights from the global torch RNG; seed it
    first), whose output is exactly 0 everywhere until trained (zero last convolution)."""
    return SeedConditionedVelocityNet(config)


def drop_condition(cond: Condition, generator: torch.Generator | None, p: float) -> Condition:
    """A copy of ``cond`` whose seed map is zeroed per sample, independently, with probability p.

    The background is kept (see :attr:`GeneratorConfig.condition_dropout`). One uniform per
    sample is drawn from ``generator`` on its own device (``None``: torch's global RNG, not
    replayable), so a seed gives the same drops on any device. ``p = 0`` draws nothing.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    seed_map = cond["seed_map"]
    if p == 0.0:
        return dict(cond)
    draw_on = generator.device if generator is not None else seed_map.device
    keep = torch.rand(seed_map.shape[0], generator=generator, device=draw_on) >= p
    keep = keep.to(device=seed_map.device, dtype=seed_map.dtype)
    return {**cond, "seed_map": seed_map * keep.reshape(-1, *([1] * (seed_map.ndim - 1)))}


def guided_velocity(
    net: nn.Module, x_t: Tensor, t: Tensor, cond: Condition, scale: float
) -> Tensor:
    """Classifier-free guidance: ``v_uncond + scale (v_cond - v_uncond)``.

    ``v_uncond`` is the velocity with the seed map zeroed (the background kept). ``scale = 1``
    is the plain conditional velocity (one network call); ``0`` the unconditional; ``> 1``
    pushes the sample towards the seeds. Otherwise both are computed in one batch of
    ``2 B``. As a :class:`~mcgenref.flow.rectified.VelocityFn`:
    ``lambda x, t, c: guided_velocity(net, x, t, c, scale)``.
    """
    if scale == 1.0:
        return net(x_t, t, cond)
    b = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device)
    t = t.expand(b) if t.ndim == 0 else t
    both = {
        "seed_map": torch.cat([cond["seed_map"], torch.zeros_like(cond["seed_map"])]),
        "background": torch.cat([cond["background"], cond["background"]]),
    }
    v_cond, v_uncond = net(torch.cat([x_t, x_t]), torch.cat([t, t]), both).split(b)
    return v_uncond + scale * (v_cond - v_uncond)


# --------------------------------------------------------------------------- data convention

Array = TypeVar("Array", np.ndarray, Tensor)


@dataclass(frozen=True)
class GeneratorContract:
    """What a trained generator models and how its samples become images (module docstring).

    Stored in the generator's ``model.json`` (:meth:`to_extra`, under ``extra``) and read from
    there by :func:`mcgenref.models.checkpoint.load_generator`; training, TT-GPR and the
    sample-quality check all go through one instance, so none of them restates the convention.

    Attributes:
        residual_scale: the flow's data is ``residual_scale * (x - observation)``. 10 puts the
            missing MC contrast (~0.02-0.05 in normalised intensity) at ~0.2-0.5, against
            unit noise. (The default here is the only one: the training config takes it.)
        seed_strength: (fixed, not a field) every seed of the condition is drawn at this
            strength: at test time a seed's probability says how sure the segmentor was,
            which is what is being questioned, so the generator must judge from the pixels.
    """

    seed_strength: ClassVar[float] = 1.0

    residual_scale: float = 10.0

    def __post_init__(self) -> None:
        if not self.residual_scale > 0:
            raise ValueError(f"residual_scale must be > 0, got {self.residual_scale}")

    def residual(self, image: Array, observation: Array) -> Array:
        """The flow's data: ``residual_scale * (image - observation)``."""
        return self.residual_scale * (image - observation)

    def project(self, observation: Array, residual: Array) -> Array:
        """The image a residual stands for: ``observation + residual / residual_scale``
        (the inverse of :meth:`residual`)."""
        return observation + residual / self.residual_scale

    def condition(self, observation: Tensor, seed_map: Tensor) -> Condition:
        """The network's ``cond``: ``{"seed_map": seed_map, "background": observation}``."""
        return {"seed_map": seed_map, "background": observation}

    def seed_map(self, seeds: Sequence[Seed], shape: tuple[int, int],
                 spacing_mm: tuple[float, float], config: SeedConfig) -> np.ndarray:
        """float32 ``[H, W]``: ``seeds`` drawn at :attr:`seed_strength` (their own strength,
        e.g. a candidate's probability, is ignored)."""
        drawn = [replace(s, strength=self.seed_strength) for s in seeds]
        return render_seed_map(drawn, shape, spacing_mm, config)

    @torch.no_grad()
    def sample_projection(
        self, net: nn.Module, observation: Tensor, seed_map: Tensor, noise: Tensor,
        t_start: float, steps: int, guidance: float = 1.0,
        autocast: Autocast | None = None,
    ) -> Tensor:
        """Projections of ``observation`` [N, 1, H, W] under ``seed_map`` [N, 1, H, W].

        The observation's own residual is 0, so the sampler starts at ``t_start`` from
        ``(1 - t_start) noise`` (the SDEdit start of a zero residual), integrates to 1 in
        ``steps`` Euler steps (``guidance``: classifier-free guidance scale;
        ``autocast``: the precision the network runs in, ``None``: fp32), and the
        sample is :meth:`project`-ed. ``noise``: [N, 1, H, W] standard normal.
        """
        cond = self.condition(observation, seed_map)
        start = partial_start(torch.zeros_like(observation), noise, t_start)

        def velocity(x: Tensor, t: Tensor, cond: Condition) -> Tensor:
            with autocast() if autocast is not None else nullcontext():
                return guided_velocity(net, x, t, cond, guidance).float()

        return self.project(observation, euler_sample(velocity, start, steps, t_start, 1.0, cond))

    def to_extra(self) -> dict[str, Any]:
        """The ``model.json`` ``extra`` entries that record this contract."""
        return {
            "time_convention": "t = 0 noise, t = 1 data (mcgenref.flow.rectified)",
            "data": "residual_scale * (image - observation); projection = observation + "
                    "sample / residual_scale",
            "residual_scale": self.residual_scale,
        }


@dataclass(frozen=True)
class ConditionConfig:
    """How a training-style condition is drawn for a synthetic sample (:func:`draw_condition`).

    Attributes:
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
            MC-like spots, the segmentor's typical false candidates; 0 = all decoys at
            uniform random places.
        seeds: how seeds are drawn into the seed map (the same config TT-GPR uses).
    """

    observation_gain: tuple[float, float] = (0.3, 1.0)
    decoy_rate: float = 15.0
    decoy_size_mm: tuple[float, float] = (0.15, 0.6)
    hard_decoy_fraction: float = 0.5
    seeds: SeedConfig = field(default_factory=SeedConfig)

    def __post_init__(self) -> None:
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


def _mc_like_spots(background: np.ndarray, spacing: tuple[float, float], mc_seeds: list[Seed],
                   max_spots: int = 16, min_distance_mm: float = 1.0) -> np.ndarray:
    """``[n, 2]`` the background's strongest MC-like spots (DoG maxima of
    :func:`mcgenref.spots.find_spot_candidates`, with a positive response), at least
    ``min_distance_mm`` from every MC."""
    spots = find_spot_candidates(background, spacing, np.ones(background.shape, dtype=bool),
                                 threshold=1e-6, max_candidates=max_spots + len(mc_seeds))
    if mc_seeds and len(spots):
        mcs = np.array([[s.row, s.col] for s in mc_seeds]) * np.asarray(spacing)
        d = np.linalg.norm(spots[:, None, :] * np.asarray(spacing) - mcs[None], axis=2).min(axis=1)
        spots = spots[d >= min_distance_mm]
    return spots[:max_spots].astype(float)


def draw_condition(
    sample: Sample, config: ConditionConfig, rng: np.random.Generator,
    contract: GeneratorContract | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Seed], list[Seed]]:
    """The training-style condition of one synthetic sample: ``(observation, seed_map,
    mc_seeds, decoys)`` (float32 ``[H, W]``, float32 ``[H, W]``, seeds).

    - the observation ``y = background + g * (x_1 - background)``: every MC's signal scaled
      by a gain ``g`` from ``config.observation_gain`` (at test time ``y`` is the real image
      window, whose faint MCs are the ones the segmentor half-saw);
    - the seed map of all the sample's MCs (visible or not: each is in ``x_1``) plus
      ``Poisson(decoy_rate)`` decoys at random places, a ``hard_decoy_fraction`` of them
      (on average) moved to the background's MC-like spots (:mod:`mcgenref.spots`), drawn
      by ``contract`` (default:
      :class:`GeneratorContract`'s; only the seed strength matters here).

    Draws, from ``rng`` and in this order, the gain, the number of decoys, their (row, col,
    size) and, with ``hard_decoy_fraction`` > 0, which of them move and to which spots.
    """
    contract = contract or GeneratorContract()
    if sample.background is None:
        raise ValueError("the sample has no background (made by an old synthesis version?)")
    image = np.asarray(sample.image, dtype=np.float32)
    background = np.asarray(sample.background, dtype=np.float32)
    gain = float(rng.uniform(*config.observation_gain))
    observation = (background + gain * (image - background)).astype(np.float32)
    spacing = (float(sample.record["spacing_mm"][0]), float(sample.record["spacing_mm"][1]))
    strength = contract.seed_strength
    mc_seeds = [replace(s, strength=strength)
                for s in seeds_from_records(sample.record["mcs"], only_visible=False)]
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
    decoys = [Seed(float(r), float(c), float(s), strength)
              for r, c, s in zip(rows, cols, sizes, strict=True)]
    seed_map = contract.seed_map(mc_seeds + decoys, (h, w), spacing, config.seeds)
    return observation, seed_map, mc_seeds, decoys
