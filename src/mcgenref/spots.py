"""The one difference-of-Gaussians (DoG) spot detector, all scales in millimetres.

Ground layer: the classical baseline (:mod:`mcgenref.inference.classical`), the realism
features (:mod:`mcgenref.evaluation.realism`, ``benchmarks/realism.py``) and the generator's
hard decoys (:func:`mcgenref.models.generator.draw_condition`) all use it.

- :func:`sigma_px`: a Gaussian's standard deviation in mm -> pixels along (row, col), the one
  conversion every filter here uses.
- :func:`dog_response`: ``G(sigma_mm) * x - G(background_sigma_mm) * x`` (``G(s)``: a Gaussian
  of standard deviation ``s``), a band-pass matched to bright specks of about ``sigma_mm``;
  float32, same shape. Gaussian filters reflect at the image border.
- :func:`find_spot_candidates`: local maxima of the response at least ``min_distance_mm``
  apart inside a region, above ``threshold``, strongest first. A deliberately simple,
  label-free detector: it finds MCs and, just as happily, noise and texture peaks.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from mcgenref.errors import InputError

__all__ = ["dog_response", "find_spot_candidates", "sigma_px", "spacing_pair"]


def spacing_pair(spacing_mm: float | ArrayLike) -> tuple[float, float]:
    """``(row, col)`` spacing in mm from one number or a pair.

    Raises:
        InputError: a pair with a value that is not positive.
    """
    if np.isscalar(spacing_mm):
        s = float(spacing_mm)  # type: ignore[arg-type]
        return s, s
    sr, sc = (float(v) for v in spacing_mm)  # type: ignore[union-attr]
    if sr <= 0 or sc <= 0:
        raise InputError(f"pixel spacing must be positive, got {spacing_mm}")
    return sr, sc


def sigma_px(sigma_mm: float, spacing_mm: tuple[float, float], floor_px: float = 0.0) -> tuple[float, float]:
    """``sigma_mm`` in pixels along (row, col), at least ``floor_px``."""
    return max(floor_px, sigma_mm / spacing_mm[0]), max(floor_px, sigma_mm / spacing_mm[1])


def dog_response(image: ArrayLike, spacing_mm: float | ArrayLike, sigma_mm: float = 0.15,
                 background_sigma_mm: float = 0.6, min_sigma_px: float = 0.0) -> np.ndarray:
    """``G(sigma_mm) * image - G(background_sigma_mm) * image`` (float32, same shape).

    ``min_sigma_px``: the inner Gaussian is at least this wide in pixels, so that a scale
    below the pixel size does not amplify pixel noise (the outer one is never clamped).
    """
    sp = spacing_pair(spacing_mm)
    x = np.asarray(image, dtype=np.float32)
    fine = ndimage.gaussian_filter(x, sigma_px(sigma_mm, sp, min_sigma_px), mode="reflect")
    coarse = ndimage.gaussian_filter(x, sigma_px(background_sigma_mm, sp), mode="reflect")
    return fine - coarse


def find_spot_candidates(image_norm: ArrayLike, spacing_mm: float | ArrayLike, region: ArrayLike, *,
                         sigma_mm: float = 0.15, background_sigma_mm: float = 0.6,
                         min_distance_mm: float = 0.5, threshold: float = 0.0,
                         max_candidates: int | None = None,
                         return_scores: bool = False):
    """Local maxima of :func:`dog_response` inside ``region``; strongest first.

    Args:
        image_norm: 2-D normalised image.
        spacing_mm: (row, col) pixel spacing in mm (or one number).
        region: boolean mask of where a candidate may sit (same shape).
        sigma_mm, background_sigma_mm: the two Gaussian scales of the DoG, in mm.
        min_distance_mm: maxima closer than this (a square window of this half-width) are
            merged.
        threshold: minimum DoG response (normalised-intensity units).
        max_candidates: keep at most this many (the strongest); ``None`` keeps all.
        return_scores: also return the DoG responses of the kept maxima.

    Returns:
        ``(n, 2)`` int64 array of (row, col), by decreasing response (ties: row-major order),
        and with ``return_scores`` the ``(n,)`` float64 responses.

    Raises:
        InputError: not a 2-D image, or a region of another shape.
    """
    img = np.asarray(image_norm, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {img.shape}")
    region = np.asarray(region, dtype=bool)
    if region.shape != img.shape:
        raise InputError(f"region shape {region.shape} != image shape {img.shape}")
    sp = spacing_pair(spacing_mm)
    resp = dog_response(img, sp, sigma_mm, background_sigma_mm)
    half = (max(1, int(round(min_distance_mm / sp[0]))), max(1, int(round(min_distance_mm / sp[1]))))
    size = (2 * half[0] + 1, 2 * half[1] + 1)
    local_max = ndimage.maximum_filter(resp, size=size, mode="nearest")
    peaks = (resp == local_max) & region & (resp > threshold)
    rows, cols = np.nonzero(peaks)
    scores = resp[rows, cols]
    order = np.argsort(-scores, kind="stable")
    if max_candidates is not None:
        order = order[: int(max_candidates)]
    pos = np.stack([rows[order], cols[order]], axis=1).astype(np.int64)
    if return_scores:
        return pos, scores[order].astype(np.float64)
    return pos
