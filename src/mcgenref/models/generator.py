"""The seed-conditioned velocity network of the rectified-flow generator (METHOD section 4).

Tensor contract (time convention: :mod:`mcgenref.flow.rectified`, ``t = 0`` noise, ``t = 1``
data):

- ``x_t``: float32 ``[B, 1, H, W]``, the state on the straight path (normalised intensity
  at ``t = 1``);
- ``t``: float ``[B]`` in [0, 1] (a 0-d tensor is broadcast to the batch);
- ``cond``: ``{"seed_map": [B, 1, H, W], "background": [B, 1, H, W]}``: the seed map of
  :func:`mcgenref.flow.seeds.render_seed_map` (in [0, 1]; all zeros = "no seed", the
  unconditional input of classifier-free guidance) and the observed image (normalised
  intensity), which keeps the real background in every projection;
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
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "GeneratorConfig",
    "SeedConditionedVelocityNet",
    "build_generator",
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
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


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
