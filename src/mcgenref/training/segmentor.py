"""Training the base segmentor on synthetic MCs made on the fly.

The loop (data by step, AdamW with warm-up and cosine decay, EMA, validation, checkpoints,
exact resume, DDP) is :func:`mcgenref.training.loop.run_training`; this module is the
segmentor's :class:`~mcgenref.training.loop.Task`: an attention U-Net trained with the Focal
Tversky loss on (image, exact mask) pairs, validated by the Dice at probability 0.5. Train it
with ``run_training("segmentor", out_dir, negatives, config)``; see
:mod:`mcgenref.training.loop` for the run folder it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mcgenref.models.segmentor import SegmentorConfig, build_segmentor, size_multiple
from mcgenref.synthesis.sample import Sample
from mcgenref.training.loop import (
    Autocast,
    LoopConfig,
    Task,
    lr_at,
    resolve_device,
)

__all__ = [
    "TrainSegmentorConfig",
    "dice_counts",
    "focal_tversky_loss",
    "lr_at",
    "resolve_device",
]


@dataclass(frozen=True)
class TrainSegmentorConfig(LoopConfig):
    """Everything ``mcgenref train-segmentor`` needs besides its inputs (the --config format).

    The shared fields (data, schedule, EMA, validation, workers, seed, AMP) are documented in
    :class:`~mcgenref.training.loop.LoopConfig`.

    Attributes:
        model: the network.
        tversky_alpha: weight of false positives (MONAI's convention, ``TverskyLoss``).
        tversky_beta: weight of false negatives; ``beta > alpha`` weights recall, because a
            missed MC costs more than a false one the refinement stage can still remove.
        tversky_gamma: the focal exponent: loss ``= (1 - TI) ** tversky_gamma``. This is
            ``1 / gamma`` of Abraham & Khan (2019), whose recommended 4/3 gives 0.75.
        (``grad_clip_norm``: the Focal Tversky gradient grows as the loss nears 0, exponent
        < 1; clipping bounds it.)
    """

    model: SegmentorConfig = field(default_factory=SegmentorConfig)
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7
    tversky_gamma: float = 0.75

    def network_size_multiple(self) -> int:
        return size_multiple(self.model)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tversky_alpha < 0 or self.tversky_beta < 0 or self.tversky_alpha + self.tversky_beta <= 0:
            raise ValueError("tversky_alpha and tversky_beta must be >= 0, not both 0")
        if not self.tversky_gamma > 0:
            raise ValueError("tversky_gamma must be > 0")


# --------------------------------------------------------------------------- loss and metric


def focal_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Focal Tversky loss (Abraham & Khan, ISBI 2019), pooled over the whole batch.

    ``TI = (TP + s) / (TP + alpha * FP + beta * FN + s)`` with soft counts from
    ``p = sigmoid(logits)``, and loss ``= (1 - TI) ** gamma``, in [0, 1]: 0 for a perfect
    prediction, ~1 when every MC pixel is missed. As in MONAI's ``TverskyLoss``, **alpha
    weights false positives and beta false negatives** (Abraham & Khan write it the other way
    round). Counts are pooled over the batch because many patches hold few or no MC pixels,
    where a per-image ratio is noise.

    Args:
        logits: ``[B, 1, H, W]`` (any float dtype; computed in float32).
        target: same shape, in {0, 1}.
    """
    p = torch.sigmoid(logits.float())
    t = target.float()
    tp = (p * t).sum()
    fp = (p * (1.0 - t)).sum()
    fn = ((1.0 - p) * t).sum()
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    # clamp: (1 - TI) can round to a hair below 0, and x ** gamma's gradient is infinite at 0
    return (1.0 - tversky).clamp_min(1e-6) ** gamma


@torch.no_grad()
def dice_counts(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[TP, FP, FN]`` (float64) of the mask ``logits > 0`` (probability 0.5) vs ``target``."""
    pred = logits > 0
    true = target > 0.5
    return torch.stack([
        (pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()
    ]).double()


def _dice(counts: torch.Tensor) -> float:
    tp, fp, fn = (float(v) for v in counts)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


class SegmentorTask(Task):
    """The segmentor: logits from the image, Focal Tversky against the exact mask."""

    config_cls = TrainSegmentorConfig
    metric = "val_dice"
    metric_label = "val Dice"
    n_totals = 3  # TP, FP, FN

    def build(self) -> nn.Module:
        return build_segmentor(self.config.model)

    def item(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32))[None],
            "mask": torch.from_numpy(sample.mask.astype(np.float32))[None],
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        c = self.config
        with autocast():
            logits = model(batch["image"])
        return focal_tversky_loss(logits, batch["mask"], c.tversky_alpha, c.tversky_beta, c.tversky_gamma)

    def validation_totals(self, model: nn.Module, batch: dict[str, torch.Tensor],
                          generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        with autocast():
            logits = model(batch["image"])
        return dice_counts(logits.float(), batch["mask"])

    def metric_value(self, totals: torch.Tensor) -> float:
        return _dice(totals)

    def extra(self) -> dict[str, Any]:
        return {"threshold_logit": 0.0}

