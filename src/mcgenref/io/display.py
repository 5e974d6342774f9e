"""8-bit display windows for previews and overlays (never for data: outputs stay lossless)."""

from __future__ import annotations

import numpy as np

#: Rows mapped at a time: the float64 arithmetic stays in cache (a full-field image's float64
#: temporaries were 3 x 108 MB, and mapping them cost twice the arithmetic).
_ROWS_AT_A_TIME = 32


def display_uint8(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """8-bit display of an image: 0.5-99.5th percentiles (inside ``region`` if given)."""
    values = image[region] if region is not None and region.any() else image
    lo, hi = np.percentile(values, [0.5, 99.5])
    scale = max(float(hi - lo), 1e-6)
    image = np.asarray(image)
    if image.ndim < 2:
        return np.clip((image - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    out = np.empty(image.shape, dtype=np.uint8)
    for r0 in range(0, image.shape[0], _ROWS_AT_A_TIME):
        rows = slice(r0, r0 + _ROWS_AT_A_TIME)
        # the same float64 arithmetic as on the whole image, row block by row block
        out[rows] = np.clip((image[rows] - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    return out
