"""Rectified flow (METHOD section 4): the straight-path loss and Euler / Heun samplers.

Time convention (the only place it is stated; everything in :mod:`mcgenref.flow` follows it):

- ``t`` runs over ``[0, 1]``; ``x_0`` is **noise** (standard normal), ``x_1`` is **data**;
- the path is straight: ``x_t = (1 - t) x_0 + t x_1``, so ``dx_t/dt = x_1 - x_0`` (the target);
- sampling integrates ``dx_t/dt = v(x_t, t, cond)`` forward, from ``t = 0`` (noise) to
  ``t = 1`` (data);
- an SDEdit-style partial start keeps the observed image's content: at ``start_t`` in
  ``[0, 1)`` the state is ``x_{start_t} = (1 - start_t) noise + start_t x_observed``
  (:func:`partial_start`), and sampling runs from ``start_t`` to 1.

Tensors are ``[B, ...]`` (any trailing shape); ``t`` is ``[B]`` and is broadcast over the rest.
Nothing here picks a device: results live where the inputs live. Randomness comes only from
the ``torch.Generator`` passed in. The samplers do not switch off autograd, so a caller may
differentiate through them; wrap them in ``torch.no_grad()`` for plain sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

__all__ = [
    "RFLoss",
    "VelocityFn",
    "euler_sample",
    "heun_sample",
    "interpolate",
    "partial_start",
    "rectified_flow_loss",
    "sample_time",
]

TimeDistribution = Literal["uniform", "logit_normal"]


class VelocityFn(Protocol):
    """``v(x_t [B, ...], t [B], cond) -> dx_t/dt``, same shape as ``x_t``."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor: ...


@dataclass(frozen=True)
class RFLoss:
    """One loss evaluation: ``loss`` (scalar) and what it was computed from."""

    loss: Tensor  # mean over every element of (v - target)^2
    x_t: Tensor  # [B, ...] the point on the path fed to the network
    t: Tensor  # [B]
    target: Tensor  # [B, ...] x_1 - x_0


def _per_sample(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as ``[B, 1, ..., 1]`` (or a scalar) so that it broadcasts against ``x``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim == 1 else t


def interpolate(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    """``x_t = (1 - t) x_0 + t x_1``; exactly ``x0`` at ``t = 0`` and ``x1`` at ``t = 1``."""
    t = _per_sample(t, x0)
    return (1 - t) * x0 + t * x1


def partial_start(x_observed: Tensor, noise: Tensor, t_start: float) -> Tensor:
    """SDEdit start state ``(1 - t_start) noise + t_start x_observed``, ``t_start`` in [0, 1]."""
    if not 0.0 <= t_start <= 1.0:
        raise ValueError(f"t_start must lie in [0, 1], got {t_start}")
    return interpolate(noise, x_observed, t_start)


def sample_time(
    batch: int,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    distribution: TimeDistribution = "uniform",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``t`` of shape ``[batch]``: uniform on [0, 1) or logit-normal (sigmoid of N(0, 1)).

    Drawn on the generator's device, then moved to ``device``, so one seed gives the same
    ``t`` whatever device the model runs on. ``logit_normal`` spends more of the training on
    mid-path times, where the velocity is hardest to predict (Esser et al. 2024).
    """
    draw_on = generator.device if generator is not None else device
    if distribution == "uniform":
        t = torch.rand(batch, generator=generator, device=draw_on, dtype=dtype)
    elif distribution == "logit_normal":
        t = torch.sigmoid(torch.randn(batch, generator=generator, device=draw_on, dtype=dtype))
    else:
        raise ValueError(f"unknown time distribution {distribution!r} (uniform, logit_normal)")
    return t.to(device)


def rectified_flow_loss(
    velocity_fn: VelocityFn,
    x1: Tensor,
    cond: Any = None,
    generator: torch.Generator | None = None,
    time_distribution: TimeDistribution = "uniform",
    weight: Tensor | None = None,
) -> RFLoss:
    """Draw ``x_0 ~ N(0, I)`` and ``t``, then ``loss = mean (v(x_t, t, cond) - (x_1 - x_0))^2``.

    ``x_0`` is drawn first, then ``t``, both from ``generator`` (``None``: torch's global
    generator, not replayable). The mean runs over batch and elements (per-element MSE);
    with ``weight`` (non-negative, broadcastable to ``x1``) it is the weighted mean
    ``sum w (v - u)^2 / sum w``, so that rare pixels that matter (the MCs) are not drowned
    by the many that are easy.
    """
    draw_on = generator.device if generator is not None else x1.device
    x0 = torch.randn(x1.shape, generator=generator, device=draw_on, dtype=x1.dtype).to(x1.device)
    t = sample_time(x1.shape[0], generator, x1.device, time_distribution, x1.dtype)
    x_t = interpolate(x0, x1, t)
    target = x1 - x0
    error = (velocity_fn(x_t, t, cond) - target).pow(2)
    if weight is None:
        loss = error.mean()
    else:
        weight = weight.expand_as(error).to(error.dtype)
        loss = (weight * error).sum() / weight.sum().clamp_min(torch.finfo(error.dtype).tiny)
    return RFLoss(loss=loss, x_t=x_t, t=t, target=target)


def _time_grid(steps: int, t_start: float, t_end: float) -> list[float]:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= t_start <= t_end <= 1.0:
        raise ValueError(f"need 0 <= t_start <= t_end <= 1, got {t_start}, {t_end}")
    return [t_start + (t_end - t_start) * i / steps for i in range(steps)] + [t_end]


def euler_sample(
    velocity_fn: VelocityFn,
    x_start: Tensor,
    steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    cond: Any = None,
) -> Tensor:
    """Integrate ``dx_t/dt = v`` from ``t_start`` to ``t_end`` in ``steps`` equal Euler steps."""
    x = x_start
    for t, t_next in pairwise(_time_grid(steps, t_start, t_end)):
        x = x + (t_next - t) * velocity_fn(x, x.new_full((x.shape[0],), t), cond)
    return x


def heun_sample(
    velocity_fn: VelocityFn,
    x_start: Tensor,
    steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    cond: Any = None,
) -> Tensor:
    """Heun's predictor-corrector (2nd order) in ``steps`` equal steps (``2 steps`` calls of ``v``).

    A step that ends at ``t = 1`` is a plain Euler step: the corrector would evaluate ``v``
    at ``t = 1``, where the ideal field of a discrete data set, ``(x_1 - x_t) / (1 - t)``, is
    singular (one call fewer). An Euler step's local error is O(h^2): still 2nd order.
    """
    x = x_start
    for t, t_next in pairwise(_time_grid(steps, t_start, t_end)):
        dt = t_next - t
        dx_t = velocity_fn(x, x.new_full((x.shape[0],), t), cond)
        x_pred = x + dt * dx_t
        if t_next >= 1.0:
            x = x_pred
        else:
            dx_next = velocity_fn(x_pred, x.new_full((x.shape[0],), t_next), cond)
            x = x + 0.5 * dt * (dx_t + dx_next)
    return x
