"""The base segmentor: a U-Net-family network from MONAI that outputs MC logits.

Tensor contract (every architecture):

- input ``x``: float32 ``[B, 1, H, W]``, *normalised* intensity (0 ~ 1st, 1 ~ 99th
  percentile inside the breast; see ``docs/architecture.md``). ``H`` and ``W`` must each be
  a multiple of :func:`size_multiple` (the product of the strides, ``2 ** depth`` by
  default), otherwise the skip connections do not line up; they need not be equal or a
  power of two (48 x 80 works with depth 3).
- output: float32 ``[B, 1, H, W]`` **logits** (unbounded; no sigmoid inside the network).
  ``sigmoid(logits)`` is the per-pixel MC probability; ``logits > 0`` is the mask at 0.5.

Logits rather than probabilities because the loss is computed from them in float32 (stable
under mixed precision) and because later stages (posterior refinement) need the score before
saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["SegmentorConfig", "build_segmentor", "size_multiple"]

Architecture = Literal["attention_unet", "basic_unet", "unet"]


@dataclass(frozen=True)
class SegmentorConfig:
    """Which network and how wide.

    Attributes:
        arch: ``"attention_unet"`` (default; MONAI ``AttentionUnet``: attention gates on the
            skips let the decoder ignore the background texture that dominates a patch),
            ``"unet"`` (MONAI ``UNet`` with residual units) or ``"basic_unet"`` (MONAI
            ``BasicUNet``: fixed depth 4, so ``channels`` needs 5 values and ``strides``
            must be all 2).
        channels: feature channels per resolution level, finest first. The default
            (16, 32, 64, 128) is ~0.5 M parameters: trains on a CPU, and MCs (a few pixels
            wide) need resolution more than width.
        strides: downsampling factor between consecutive levels (``len(channels) - 1``
            values); ``None`` means 2 everywhere. Their product is the input size multiple.
        dropout: dropout probability inside the blocks (0 disables it).
        num_res_units: residual units per block, ``"unet"`` only.
        in_channels, out_channels: 1 and 1 (one grey channel in, one MC logit out).
        initial_probability: the last layer's bias starts at ``logit(initial_probability)``
            so that the untrained network already predicts "no MC" almost everywhere (the
            prior-probability initialisation of Lin et al., 2017, focal loss). MC pixels are
            ~0.1 % of a patch; from the default 0.5, the first hundreds of steps would only
            push ~10^5 background pixels per batch towards 0. ``None`` keeps MONAI's init.
    """

    arch: Architecture = "attention_unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] | None = None
    dropout: float = 0.0
    num_res_units: int = 2
    in_channels: int = 1
    out_channels: int = 1
    initial_probability: float | None = 0.01

    def __post_init__(self) -> None:
        if self.initial_probability is not None and not 0.0 < self.initial_probability < 1.0:
            raise ValueError("initial_probability must be in (0, 1) (or null)")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels needs at least 2 positive values, got {self.channels}")
        if self.strides is not None:
            if len(self.strides) != len(self.channels) - 1:
                raise ValueError(
                    f"strides needs len(channels) - 1 = {len(self.channels) - 1} values, "
                    f"got {self.strides}"
                )
            if any(s < 1 for s in self.strides):
                raise ValueError(f"strides must be positive, got {self.strides}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_res_units < 0:
            raise ValueError("num_res_units must be >= 0")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        if self.arch == "basic_unet":
            if len(self.channels) != 5:
                raise ValueError(
                    "basic_unet has a fixed depth of 4: channels needs 5 values, "
                    f"got {self.channels}"
                )
            if self.strides is not None and any(s != 2 for s in self.strides):
                raise ValueError("basic_unet downsamples by 2 at every level: strides must be 2")

    @property
    def resolved_strides(self) -> tuple[int, ...]:
        return self.strides if self.strides is not None else (2,) * (len(self.channels) - 1)


def size_multiple(config: SegmentorConfig) -> int:
    """Input height and width must be multiples of this (product of the strides)."""
    return math.prod(config.resolved_strides)


def build_segmentor(config: SegmentorConfig) -> nn.Module:
    """A freshly initialised network (weights from the global torch RNG; seed it first).

    ``model(x)`` maps ``[B, in_channels, H, W]`` to logits ``[B, out_channels, H, W]`` with
    ``H``, ``W`` multiples of :func:`size_multiple` (see the module docstring).
    """
    network = _build_network(config)
    if config.initial_probability is not None:
        # in all three MONAI networks the last convolution registered is the output layer
        last = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
        if last.bias is None or last.out_channels != config.out_channels:
            raise RuntimeError(f"cannot find the output layer of {config.arch}")
        p = config.initial_probability
        with torch.no_grad():
            last.bias.fill_(math.log(p / (1.0 - p)))
    return network


def _build_network(config: SegmentorConfig) -> nn.Module:
    from monai.networks.nets import AttentionUnet, BasicUNet, UNet

    strides = config.resolved_strides
    if config.arch == "attention_unet":
        return AttentionUnet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=strides,
            dropout=config.dropout,
        )
    elif config.arch == "unet":
        return UNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=strides,
            num_res_units=config.num_res_units,
            dropout=config.dropout,
        )
    elif config.arch == "basic_unet":
        # BasicUNet's 6th feature is the width of the last decoder block.
        return BasicUNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            features=(*config.channels, config.channels[0]),
            dropout=config.dropout,
        )
    else:
        raise ValueError(f"unknown segmentor architecture {config.arch!r}")
