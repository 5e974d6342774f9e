"""8-bit display windows for previews and overlays (never for data: outputs stay lossless)."""

from __future__ import annotations

import numpy as np


def display_uint8(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """8-bit display of an image: 0.5-99.5th percentiles (inside ``region`` if given)."""
    values = image[region] if region is not None and region.any() else image
    lo, hi = np.percentile(values, [0.5, 99.5])
    return np.clip((image - lo) / max(float(hi - lo), 1e-6) * 255.0, 0, 255).astype(np.uint8)
