"""The per-image record that travels with every pixel array."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

SpacingSource = Literal["ImagerPixelSpacing", "PixelSpacing", "user", "default"]

#: Pixel spacing assumed, with a warning, for files that record none (PNG/TIFF/PGM, or DICOM
#: without a spacing tag) when the user gives none either. 0.1 mm is the middle of the
#: 50-200 um range of mammography detectors and digitisers; pass --pixel-spacing for your data
#: (mini-MIAS: 0.2 mm; most FFDM: 0.07-0.1 mm).
DEFAULT_PIXEL_SPACING_MM = 0.1

#: Spacings outside this range are refused as absurd for mammography (mm per pixel).
MIN_PIXEL_SPACING_MM = 0.01
MAX_PIXEL_SPACING_MM = 1.0


@dataclass(frozen=True)
class ImageMeta:
    """What we know about an image besides its pixels.

    ``pixel_spacing_mm`` is (row spacing, column spacing): the physical distance between the
    centres of adjacent rows, then adjacent columns, as in DICOM's PixelSpacing order.
    """

    source_path: str
    format: Literal["dicom", "png", "tiff", "pgm"]
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    spacing_source: SpacingSource
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    inverted: bool = False  # MONOCHROME1 inverted so that dense tissue is bright
    modality_lut_applied: bool = False
    voi_lut_applied: bool = False
    presentation_intent: str | None = None  # "FOR PRESENTATION" / "FOR PROCESSING"
    modality: str | None = None
    laterality: str | None = None  # "L" / "R"
    view: str | None = None  # "CC", "MLO", ...
    magnification_factor: float | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        d["warnings"] = list(self.warnings)
        return d
