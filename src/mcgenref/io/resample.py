"""Resampling between pixel grids (physical units: spacing in mm, (row, col))."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def zoom_factors(spacing_mm: tuple[float, float], target_mm: tuple[float, float]) -> tuple[float, float]:
    """Output pixels per input pixel along (row, col) to go from ``spacing_mm`` to ``target_mm``."""
    return (float(spacing_mm[0]) / float(target_mm[0]), float(spacing_mm[1]) / float(target_mm[1]))


def resample(image: np.ndarray, zoom: tuple[float, float], order: int = 1) -> np.ndarray:
    """Resample a 2-D array by ``zoom`` (output/input pixels per axis).

    Linear interpolation (``order=1``) for images; ``order=0`` for masks. Downsampling is
    anti-aliased first (Gaussian, sigma = 0.5 * (1/zoom - 1) input pixels), so that a small
    bright MC is averaged into the coarser pixel rather than hit or missed by a sample point.
    """
    if tuple(zoom) == (1.0, 1.0):
        return image
    if order > 0 and min(zoom) < 1.0:
        sigma = [0.5 * (1.0 / z - 1.0) if z < 1.0 else 0.0 for z in zoom]
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    return ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)


def resample_to_shape(image: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample to an exact ``shape`` (used to bring maps back onto the input's grid)."""
    if image.shape == tuple(shape):
        return image
    zoom = (shape[0] / image.shape[0], shape[1] / image.shape[1])
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds the output size; pad/crop the last row/col
        fixed = np.empty(shape, dtype=out.dtype)
        r, c = min(shape[0], out.shape[0]), min(shape[1], out.shape[1])
        fixed[:r, :c] = out[:r, :c]
        fixed[r:, :c] = out[r - 1 : r, :c]
        fixed[:, c:] = fixed[:, c - 1 : c]
        out = fixed
    return out
