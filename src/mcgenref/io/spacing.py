"""Pixel spacing: parsing user text and validating values.

A pixel spacing is always ``(row_spacing, col_spacing)`` in mm per pixel (DICOM PixelSpacing
order): the distance between the centres of adjacent rows, then of adjacent columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mcgenref.errors import ConfigError
from mcgenref.io.meta import MAX_PIXEL_SPACING_MM, MIN_PIXEL_SPACING_MM

SpacingLike = float | int | Sequence[float]


def validate_spacing(spacing: SpacingLike) -> tuple[float, float]:
    """Return ``spacing`` as a ``(row, col)`` tuple of floats in mm, or raise ConfigError.

    A single number means square pixels. Zero, negative, NaN/inf and values outside
    ``[MIN_PIXEL_SPACING_MM, MAX_PIXEL_SPACING_MM]`` are refused: such values are typos
    (e.g. µm given as mm), and every size in the pipeline is derived from them.
    """
    if isinstance(spacing, bool):
        raise ConfigError(f"pixel spacing must be a number in mm, got {spacing!r}")
    if isinstance(spacing, (int, float)):
        values = [spacing, spacing]
    else:
        try:
            values = list(spacing)
        except TypeError:
            raise ConfigError(f"pixel spacing must be a number in mm, got {spacing!r}") from None
        if len(values) != 2:
            raise ConfigError(
                f"pixel spacing must be one value or two (row,col) values in mm, got {spacing!r}"
            )
    out: list[float] = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"pixel spacing must be a number in mm, got {v!r}") from None
        if not math.isfinite(f) or f <= 0:
            raise ConfigError(f"pixel spacing must be a positive finite number in mm, got {v!r}")
        if not (MIN_PIXEL_SPACING_MM <= f <= MAX_PIXEL_SPACING_MM):
            raise ConfigError(
                f"pixel spacing {f:g} mm is outside the plausible range for mammography "
                f"[{MIN_PIXEL_SPACING_MM:g}, {MAX_PIXEL_SPACING_MM:g}] mm (is it in mm?)"
            )
        out.append(f)
    return (out[0], out[1])


def parse_pixel_spacing(text: str) -> tuple[float, float]:
    """Parse ``"0.1"`` (square pixels) or ``"ROW,COL"`` (e.g. ``"0.1,0.08"``) in mm.

    Whitespace is ignored; a backslash is accepted as separator too (DICOM's ``0.1\\0.08``).
    Raises ConfigError with a one-line message on anything else.
    """
    if not isinstance(text, str):
        raise ConfigError(f"pixel spacing must be text like '0.1' or '0.1,0.08', got {text!r}")
    cleaned = text.strip().replace("\\", ",")
    parts = [p.strip() for p in cleaned.split(",")]
    if not cleaned or len(parts) not in (1, 2) or any(p == "" for p in parts):
        raise ConfigError(
            f"cannot parse pixel spacing {text!r}: expected '0.1' or 'ROW,COL' like '0.1,0.08' (mm)"
        )
    values: list[float] = []
    for p in parts:
        try:
            values.append(float(p))
        except ValueError:
            raise ConfigError(
                f"cannot parse pixel spacing {text!r}: {p!r} is not a number (mm)"
            ) from None
    if len(values) == 1:
        return validate_spacing(values[0])
    return validate_spacing(values)
