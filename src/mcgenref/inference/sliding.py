"""Gaussian-blended sliding-window inference restricted to the breast.

Windows are laid on a regular grid (MONAI's ``dense_patch_slices``) over the image and only
those needed to cover the breast are run (:func:`select_windows`), in batches on the device
(under autocast on CUDA); the outputs are weighted by a Gaussian importance map (MONAI's
``compute_importance_map``) and accumulated on the CPU. The difference from plain
``monai.inferers.sliding_window_inference`` is exactly that: no window that holds only air,
labels or film border is ever computed, nor one whose breast pixels other windows already see
with enough context around them, and the full-size accumulation buffers stay in host memory.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.utils import BlendMode

from mcgenref.runtime import Autocast


#: Default of ``context_px`` (:func:`select_windows`): a quarter of the 64 px overlap of 256 px
#: windows at overlap 0.25, 3.2 mm of tissue around every pixel on the 0.2 mm grid.
CONTEXT_PX = 16

Window = tuple[slice, slice]


@dataclass(frozen=True)
class WindowPlan:
    """The windows :func:`select_windows` keeps (grid order) out of ``n_total`` on the grid."""

    windows: list[Window]
    n_total: int
    n_touching: int  # windows of the grid with at least one region pixel


def _core(window: Window, shape: tuple[int, int], context_px: int) -> Window:
    """The part of ``window`` at least ``context_px`` from its sides, except the sides on the
    image's edge (there is no context beyond the edge to be had, by any window)."""
    core = []
    for s, n in zip(window, shape):
        lo = s.start + (context_px if s.start > 0 else 0)
        hi = s.stop - (context_px if s.stop < n else 0)
        core.append(slice(lo, max(lo, hi)))
    return core[0], core[1]


def select_windows(region: np.ndarray, window_px: int, overlap: float = 0.25,
                   context_px: int = CONTEXT_PX) -> WindowPlan:
    """The windows of the regular grid that are run: every ``region`` pixel stays inside at
    least one of them and, where the grid gives it that, at least ``context_px`` from that
    window's sides (sides on the image's edge do not count: no window has context beyond it).

    The grid is MONAI's ``dense_patch_slices`` (the last window of each row or column moved
    back to end at the image's edge); its windows overlap by ``overlap * window_px`` pixels, so
    every pixel has ``context_px`` of context in some window when ``context_px`` is at most
    half the overlap (16 <= 32 at the defaults). Windows without a region pixel are dropped;
    then, from the fewest region pixels up, every window that the others make redundant: each
    of its region pixels lies in another kept window, and each of those within its core
    (:func:`_core`) in another kept window's core. On a full-field mammogram that removes the
    tail windows (which repeat most of their neighbour) and windows that only graze the breast
    edge: 40 -> 31 of the 48 windows of ``benchmarks/segment_speed.py``'s image. A kept window's
    output is the same as before; a pixel a dropped window covered keeps the blend of the others.

    Args:
        region: bool [H, W] with H, W >= ``window_px`` (pad first).
        context_px: 0 keeps only the guarantee that every region pixel is inside a window.
    """
    h, w = region.shape
    if not 0 <= 2 * context_px <= window_px:
        raise ValueError("context_px must be between 0 and window_px / 2")
    interval = max(1, int(round(window_px * (1.0 - overlap))))
    grid = dense_patch_slices((h, w), (window_px, window_px), (interval, interval))
    touching: list[Window] = [(s[0], s[1]) for s in grid if region[s].any()]
    cores = [_core(s, (h, w), context_px) for s in touching]
    in_windows = np.zeros((h, w), dtype=np.int16)  # kept windows holding each pixel
    in_cores = np.zeros((h, w), dtype=np.int16)  # kept cores holding each pixel
    for s, c in zip(touching, cores):
        in_windows[s] += 1
        in_cores[c] += 1
    keep = [True] * len(touching)
    share = [int(np.count_nonzero(region[s])) for s in touching]
    for i in sorted(range(len(touching)), key=lambda k: share[k]):  # stable: grid order on ties
        s, c = touching[i], cores[i]
        if (in_windows[s][region[s]] >= 2).all() and (in_cores[c][region[c]] >= 2).all():
            in_windows[s] -= 1
            in_cores[c] -= 1
            keep[i] = False
    windows = [s for s, k in zip(touching, keep) if k]
    return WindowPlan(windows, len(grid), len(touching))


@functools.lru_cache(maxsize=8)
def _importance(window_px: int) -> np.ndarray:
    """MONAI's Gaussian importance map of a window (read-only; made once: 40 ms a call)."""
    weight = compute_importance_map((window_px, window_px), mode=BlendMode.GAUSSIAN,
                                    sigma_scale=0.125, device="cpu").numpy().astype(np.float32)
    weight.setflags(write=False)
    return weight


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
    context_px: int = CONTEXT_PX,
    windows: list[Window] | None = None,
    plan: WindowPlan | None = None,
) -> SlidingWindowResult:
    """Blend ``predict`` over the windows :func:`select_windows` picks for ``region``.

    Args:
        image: float32 [H, W], already on the model's grid and intensity scale.
        region: bool [H, W]; windows without any True pixel are skipped.
        predict: maps float32 [B, 1, w, w] on ``device`` to logits [B, 1, w, w].
        window_px: window side; the image is padded (edge values) when smaller.
        autocast: the mixed precision ``predict`` runs in (``None``: fp32).
        context_px: see :func:`select_windows`.
        windows: run exactly these (on the padded image) instead of :func:`select_windows`'s
            (benchmarks compare window choices with it).
        plan: :func:`select_windows`'s plan for ``region`` (at least one window in size) at
            these settings, when the caller made it already.
    """
    h, w = image.shape
    ph, pw = max(h, window_px), max(w, window_px)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, ph - h), (0, pw - w)), mode="edge")
        region = np.pad(region, ((0, ph - h), (0, pw - w)), mode="constant")
    window = (window_px, window_px)
    if plan is None or (ph, pw) != (h, w):
        plan = select_windows(region, window_px, overlap, context_px)
    slices, total = (plan.windows if windows is None else list(windows)), plan.n_total
    importance = _importance(window_px)
    num = np.zeros((ph, pw), dtype=np.float32)
    den = np.zeros((ph, pw), dtype=np.float32)
    device = torch.device(device)
    source = np.ascontiguousarray(image, dtype=np.float32)
    network_s = 0.0
    with torch.inference_mode():
        for b0 in range(0, len(slices), batch_size):
            batch_slices = slices[b0 : b0 + batch_size]
            # stacked by numpy: torch.stack of the window views went through torch's thread
            # pool, 24 ms a batch of two on a loaded 2-core machine instead of well under 1
            batch = torch.from_numpy(np.stack([source[s] for s in batch_slices])[:, None])
            t0 = time.perf_counter()
            batch = batch.to(device, non_blocking=True)
            with autocast() if autocast is not None else nullcontext():
                out = predict(batch)
            out = out.float().cpu().numpy()[:, 0]
            network_s += time.perf_counter() - t0
            for s, logits in zip(batch_slices, out):
                num[s] += logits * importance
                den[s] += importance
    # in place (the accumulator becomes the result); every weight is > 0 (MONAI's Gaussian
    # map is at least 1e-3), so den > 0 wherever a window reached
    reached = den > 0
    logits = num
    np.divide(num, den, out=logits, where=reached)
    np.copyto(logits, np.float32(-np.inf), where=~reached)
    return SlidingWindowResult(
        logits=logits[:h, :w], n_windows=len(slices), n_windows_total=total, network_s=network_s
    )
