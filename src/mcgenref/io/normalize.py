"""Intensity normalisation fitted inside the breast.

Every image, whatever its source (8-bit film PNG, 12-bit FFDM, 16-bit DICOM), is mapped to
``v = (x - low) / (high - low)`` with ``low`` / ``high`` the 1st / 99th percentiles of the
pixels inside the breast mask. Percentiles rather than min/max make the mapping robust to the
few extreme pixels (markers, calcifications themselves, the skin edge), and fitting inside the
breast makes it independent of how much air the image holds. Values are not clipped: MCs are
brighter than the 99th percentile and must stay so.

Images of more than :data:`MAX_FIT_PIXELS` pixels (full-field digital mammograms: 13.6 Mpx at
70 um) are fitted on a regular sub-grid (every k-th row and column) of at most that many
pixels: extracting the breast pixels of the whole image cost more than the rest of the
normalisation, and the percentiles of a 2 Mpx sample of a smooth intensity distribution
differ from the whole image's by a negligible amount (benchmarks/segment_speed.py records the
effect on the outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mcgenref.errors import InputError

#: Images with more pixels are fitted on a regular sub-grid of at most this many (see above).
MAX_FIT_PIXELS = 2_000_000


@dataclass(frozen=True)
class Normalization:
    """Affine map ``v = (x - low) / (high - low)`` and its inverse (``high > low``)."""

    low: float
    high: float
    low_percentile: float = 1.0
    high_percentile: float = 99.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"Normalization needs finite low < high, got {self.low}, {self.high}")

    def apply(self, x: np.ndarray, in_place: bool = False) -> np.ndarray:
        """Raw intensities (any shape) -> normalised ``float32`` of the same shape.

        ``in_place``: a writable float32 ``x`` is overwritten and returned (for a caller done
        with the raw values: a full-field image is 54 MB in float32, and fresh memory costs
        its page faults); other arrays get a new one all the same.
        """
        scale = np.float32(1.0 / (self.high - self.low))
        reuse = (in_place and isinstance(x, np.ndarray) and x.dtype == np.float32
                 and x.flags.writeable)
        # one float32 result scaled in place: no full-size temporaries, and the same float32
        # arithmetic as (float32(x) - low) * scale
        v = np.subtract(x, np.float32(self.low), dtype=np.float32, out=x if reuse else None)
        v *= scale
        return v

    def invert(self, v: np.ndarray) -> np.ndarray:
        """Normalised values -> raw intensities (``float32``), the inverse of :meth:`apply`."""
        return (
            np.asarray(v, dtype=np.float32) * np.float32(self.high - self.low)
            + np.float32(self.low)
        ).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": float(self.low),
            "high": float(self.high),
            "low_percentile": float(self.low_percentile),
            "high_percentile": float(self.high_percentile),
        }


def fit_normalization(
    image: np.ndarray,
    mask: np.ndarray,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
) -> Normalization:
    """Fit :class:`Normalization` to the pixels of ``image`` where ``mask`` is True.

    Args:
        image: 2-D float array (dense tissue bright).
        mask: boolean array of the same shape (usually ``BreastRegion.breast``).
        low_percentile, high_percentile: 0 <= low < high <= 100.

    Raises:
        InputError: the mask is empty, or the breast is constant (high <= low).
        ValueError: inconsistent shapes or percentiles (programming errors).
    """
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got {low_percentile}, {high_percentile}")
    step = max(1, int(np.ceil(np.sqrt(image.size / MAX_FIT_PIXELS)))) if image.ndim == 2 else 1
    if step > 1:
        image, mask = image[::step, ::step], mask[::step, ::step]
    values = image[mask]
    if not np.isfinite(values).all():
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError("cannot normalise: the breast mask is empty")
    low, high = (float(v) for v in np.percentile(values, [low_percentile, high_percentile]))
    if not high > low:
        raise InputError(
            "cannot normalise: the image is constant inside the breast "
            f"({low_percentile:g}th and {high_percentile:g}th percentiles are both {low:g})"
        )
    return Normalization(low, high, float(low_percentile), float(high_percentile))
