"""Gaussian-blended sliding-window inference restricted to the breast.

Windows are laid on a regular grid (MONAI's ``dense_patch_slices``) over the image and only
those that contain breast pixels are run, in batches on the device (under autocast on CUDA);
the outputs are weighted by a Gaussian importance map (MONAI's ``compute_importance_map``) and
accumulated on the CPU. The difference from plain ``monai.inferers.sliding_window_inference``
is exactly that: no window that holds only air, labels or film border is ever computed, and the
full-size accumulation buffers stay in host memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.utils import BlendMode

from mcgenref.runtime import Autocast


@dataclass(frozen=True)
class SlidingWindowResult:
    """``logits``: float32 [H, W] (``-inf`` where no window reached); timings in seconds."""

    logits: np.ndarray
    n_windows: int
    n_windows_total: int
    network_s: float


def sliding_window_logits(
    image: np.ndarray,
    region: np.ndarray,
    predict: Callable[[torch.Tensor], torch.Tensor],
    window_px: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    autocast: Autocast | None = None,
) -> SlidingWindowResult:
    """Blend ``predict`` over windows that touch ``region``.

    Args:
        image: float32 [H, W], already on the model's grid and intensity scale.
        region: bool [H, W]; windows without any True pixel are skipped.
        predict: maps float32 [B, 1, w, w] on ``device`` to logits [B, 1, w, w].
        window_px: window side; the image is padded (edge values) when smaller.
        autocast: the mixed precision ``predict`` runs in (``None``: fp32).
    """
    h, w = image.shape
    ph, pw = max(h, window_px), max(w, window_px)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, ph - h), (0, pw - w)), mode="edge")
        region = np.pad(region, ((0, ph - h), (0, pw - w)), mode="constant")
    window = (window_px, window_px)
    interval = tuple(max(1, int(round(window_px * (1.0 - overlap)))) for _ in range(2))
    slices = dense_patch_slices((ph, pw), window, interval)
    total = len(slices)
    slices = [s for s in slices if region[s].any()]
    importance = compute_importance_map(
        window, mode=BlendMode.GAUSSIAN, sigma_scale=0.125, device="cpu"
    ).numpy().astype(np.float32)
    num = np.zeros((ph, pw), dtype=np.float32)
    den = np.zeros((ph, pw), dtype=np.float32)
    device = torch.device(device)
    source = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    network_s = 0.0
    with torch.inference_mode():
        for b0 in range(0, len(slices), batch_size):
            batch_slices = slices[b0 : b0 + batch_size]
            batch = torch.stack([source[s] for s in batch_slices])[:, None]
            t0 = time.perf_counter()
            batch = batch.to(device, non_blocking=True)
            with autocast() if autocast is not None else nullcontext():
                out = predict(batch)
            out = out.float().cpu().numpy()[:, 0]
            network_s += time.perf_counter() - t0
            for s, logits in zip(batch_slices, out):
                num[s] += logits * importance
                den[s] += importance
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.where(den > 0, num / np.maximum(den, 1e-12), -np.inf).astype(np.float32)
    return SlidingWindowResult(
        logits=logits[:h, :w], n_windows=len(slices), n_windows_total=total, network_s=network_s
    )
