"""Reading and writing images and the files around them (imports no stage above it).

Modules: :mod:`.readers` (DICOM / PNG / PGM / TIFF -> float32 image + :class:`ImageMeta`),
:mod:`.meta` (the per-image record), :mod:`.spacing` (pixel spacing text and checks),
:mod:`.breast` (breast and pectoral masks), :mod:`.normalize` (intensity normalisation inside
the breast), :mod:`.resample` (between pixel grids), :mod:`.display` (8-bit windows for
previews), :mod:`.atomic` (atomic writes), :mod:`.predictions` (the prediction-folder format:
names, encodings, done-marker, reading a folder back), :mod:`.dicom_seg` (the DICOM SEG of a
mask), :mod:`.dicom_write` (a minimal DICOM MG from pixels).
"""

from mcgenref.io.breast import BreastRegion, segment_breast
from mcgenref.io.meta import DEFAULT_PIXEL_SPACING_MM, ImageMeta
from mcgenref.io.normalize import Normalization, fit_normalization
from mcgenref.io.readers import SUPPORTED_SUFFIXES, list_images, read_image
from mcgenref.io.spacing import parse_pixel_spacing, validate_spacing

__all__ = [
    "DEFAULT_PIXEL_SPACING_MM",
    "SUPPORTED_SUFFIXES",
    "BreastRegion",
    "ImageMeta",
    "Normalization",
    "fit_normalization",
    "list_images",
    "parse_pixel_spacing",
    "read_image",
    "segment_breast",
    "validate_spacing",
]
