"""Reading mammograms, breast masks, intensity normalisation and atomic writing."""

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
