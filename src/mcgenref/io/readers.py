"""Reading mammograms: DICOM, PNG, PGM and TIFF into one ``(float32 image, ImageMeta)`` pair.

Contract of :func:`read_image`
------------------------------
The image is a 2-D ``float32`` array ``[row, col]`` of finite values, not constant, at least
32x32 and at most 20000 pixels per side, with **dense tissue bright**. It is *not* normalised:
the models see :class:`mcgenref.io.normalize.Normalization` applied inside the breast, fitted
per image, so only the monotone direction (dense = bright) and linearity class of the values
matter, not their scale.

Intensity decisions (DICOM)
---------------------------
* **Modality LUT** (RescaleSlope/Intercept or a Modality LUT Sequence) is always applied: it
  maps stored values to the device's meaningful unit. ``modality_lut_applied`` is True when the
  file defines such a transform (an absent one is the identity).
* **VOI LUT / windowing is NOT applied** (``voi_lut_applied`` is always False). Windows are a
  display choice that differs between vendors, workstations and even images of one exam and
  often clips the dense tissue where calcifications are; our own robust normalisation inside
  the breast plays that role, identically for training (PNG/film) and inference (DICOM).
* **MONOCHROME1** is inverted (``x -> lo + hi - x`` over the range the stored bits can hold,
  after the modality LUT; for unsigned data without rescale this is ``(2**BitsStored-1) - x``),
  so that the same object reads the same whatever the photometric interpretation;
  ``inverted=True``.
* **FOR PROCESSING** (raw detector data, ``PresentationIntentType``): the values are roughly
  linear in exposure, so they are converted to the log (attenuation) domain with
  ``log(hi) - log(max(x, 1))`` where ``hi`` is the largest value the stored bits can hold
  (i.e. ``-log(max(x,1))`` shifted to be >= 0): dense tissue (less exposure) becomes bright as
  in a presentation image, the air becomes ~0. The photometric interpretation is then not used
  for inversion (the log conversion already defines the direction) and a warning says so:
  vendor processing is not reproduced, so such images look flatter than presentation ones.
* **Spacing**: ImagerPixelSpacing (detector plane) first, then PixelSpacing, in (row, col)
  order exactly as stored; no correction for the magnification factor is made (a warning is
  given for magnification views). A user value overrides the file (warning when they differ by
  more than 1 %); with neither, ``DEFAULT_PIXEL_SPACING_MM`` is assumed with a warning.

Refused (InputError, one line): missing/unreadable/corrupt/truncated files, folders, no pixel
data, modality other than MG (absent Modality: accepted with a warning), multi-frame images and
breast tomosynthesis, colour (SamplesPerPixel != 1 or non-MONOCHROME), BitsStored outside 1..16,
images under 32x32 or claiming more than 20000 pixels per side (checked before decoding),
constant images. PNG/PGM/TIFF: grayscale 8/16-bit only (TIFF also finite float); RGB/RGBA/LA,
palette and 1-bit images are refused rather than guessed into gray.

Laterality and view for files without tags (PNG/TIFF, or DICOM lacking ViewPosition /
Laterality) are taken from file-name tokens when unambiguous (``0_L-MLO.png``,
``P_00173_LCC.dcm``): used only to choose the pectoral-muscle search and the chest-wall side
tie-break in :mod:`mcgenref.io.breast`.

Every warning is stored in ``ImageMeta.warnings`` and also emitted with
``warnings.warn(msg, McGenRefWarning)``. A warning of a library we call (pydicom, Pillow,
tifffile) is left as it is, inside :func:`mcgenref.io.library_warnings.attributed_to` the file,
so that the command line prints it as one ``warning: FILE: LIBRARY: ...`` line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import ConfigError, InputError, McGenRefWarning
from mcgenref.io.library_warnings import attributed_to
from mcgenref.io.meta import DEFAULT_PIXEL_SPACING_MM, ImageMeta, SpacingSource
from mcgenref.io.spacing import validate_spacing

#: File suffixes read by :func:`read_image` and picked up by :func:`list_images` in folders.
#: Files without these suffixes are read as DICOM when given explicitly and they carry the
#: ``DICM`` marker at byte offset 128.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".png", ".tif", ".tiff", ".pgm")

#: Smallest and largest accepted image sides, in pixels.
MIN_SIDE_PX = 32
MAX_SIDE_PX = 20000

#: Relative difference between a user spacing and the file's above which we warn.
SPACING_DISAGREEMENT = 0.01

#: Magnification factor above which a view is treated as a magnification view (contact
#: views have ~1.0-1.15 recorded by some vendors; 1.05 follows the brief of the project).
MAGNIFICATION_WARN_FACTOR = 1.05

_TOMO_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage (For Presentation)",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage (For Processing)",
}
# Breast Projection X-Ray objects are single 2-D projections (of a tomo acquisition) and are
# accepted; only the reconstructed tomosynthesis volume is refused.
_REFUSED_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.13.1.3"}

_VIEW_TOKENS = {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 300 else s[:297] + "..."


def _warn(ws: list[str], msg: str) -> None:
    ws.append(msg)
    warnings.warn(msg, McGenRefWarning, stacklevel=3)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _names_from_filename(path: Path) -> tuple[str | None, str | None]:
    """(laterality, view) from unambiguous tokens of the file name, else None."""
    tokens = [t.upper() for t in re.split(r"[^A-Za-z0-9]+", path.stem) if t]
    lat: set[str] = set()
    view: set[str] = set()
    for t in tokens:
        if t in ("L", "LEFT"):
            lat.add("L")
        elif t in ("R", "RIGHT"):
            lat.add("R")
        elif t in _VIEW_TOKENS:
            view.add(t)
        elif len(t) >= 3 and t[0] in "LR" and t[1:] in _VIEW_TOKENS:  # LCC, RMLO
            lat.add(t[0])
            view.add(t[1:])
    return (lat.pop() if len(lat) == 1 else None, view.pop() if len(view) == 1 else None)


def _check_size(path: Path, rows: int, cols: int) -> None:
    if rows > MAX_SIDE_PX or cols > MAX_SIDE_PX:
        raise InputError(
            f"{path}: image of {rows}x{cols} pixels exceeds the limit of {MAX_SIDE_PX} per side"
        )
    if rows < MIN_SIDE_PX or cols < MIN_SIDE_PX:
        raise InputError(
            f"{path}: image of {rows}x{cols} pixels is too small (at least "
            f"{MIN_SIDE_PX}x{MIN_SIDE_PX} needed)"
        )


def _finish_pixels(path: Path, arr: np.ndarray, finite: bool = False) -> np.ndarray:
    """float32, finite, non-constant, or InputError; ``finite``: the caller knows the values
    are (integers), so the full-image check is skipped."""
    finite = finite or np.issubdtype(np.asarray(arr).dtype, np.integer)
    img = np.asarray(arr, dtype=np.float32)
    if img.ndim != 2:
        raise InputError(f"{path}: expected a 2-D grayscale image, got shape {img.shape}")
    if not finite and not np.isfinite(img).all():
        raise InputError(f"{path}: image contains NaN or infinite values")
    if float(img.max()) == float(img.min()):
        raise InputError(f"{path}: image is empty (constant)")
    return np.ascontiguousarray(img)


def _resolve_spacing(
    path: Path,
    file_spacing: tuple[float, float] | None,
    file_source: SpacingSource | None,
    user: float | tuple[float, float] | None,
    ws: list[str],
    fallback: float | tuple[float, float] | None = None,
) -> tuple[tuple[float, float], SpacingSource]:
    if user is not None:
        spacing = validate_spacing(user)
        if file_spacing is not None:
            rel = max(abs(u - f) / f for u, f in zip(spacing, file_spacing, strict=True))
            if rel > SPACING_DISAGREEMENT:
                _warn(
                    ws,
                    f"{path.name}: pixel spacing {spacing[0]:g},{spacing[1]:g} mm given by the "
                    f"user overrides {file_source} {file_spacing[0]:g},{file_spacing[1]:g} mm "
                    "stored in the file",
                )
        return spacing, "user"
    if file_spacing is not None and file_source is not None:
        return file_spacing, file_source
    if fallback is not None:
        return validate_spacing(fallback), "user"
    _warn(
        ws,
        f"{path.name}: no pixel spacing recorded; assuming {DEFAULT_PIXEL_SPACING_MM:g} mm "
        "(pass the real spacing, e.g. --pixel-spacing 0.2 for mini-MIAS)",
    )
    d = float(DEFAULT_PIXEL_SPACING_MM)
    return (d, d), "default"


def _bits_estimate(arr: np.ndarray) -> int | None:
    if arr.dtype == np.uint8:
        return 8
    if arr.dtype == np.uint16:
        vmax = int(arr.max())
        for b in (10, 12, 14, 16):
            if vmax < (1 << b):
                return b
        return 16
    return None


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def _dicom_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dicom_spacing(
    path: Path, ds: Any, ws: list[str]
) -> tuple[tuple[float, float] | None, SpacingSource | None]:
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        raw = ds.get(keyword)
        if raw is None or raw == "" or (hasattr(raw, "__len__") and len(raw) == 0):
            continue
        try:
            values = [float(v) for v in (raw if hasattr(raw, "__iter__") else [raw])]
            if len(values) == 1:
                values = values * 2
            spacing = validate_spacing(values)
        except (ConfigError, TypeError, ValueError):
            _warn(ws, f"{path.name}: ignoring invalid {keyword} {_one_line(raw)!r}")
            continue
        return spacing, keyword  # type: ignore[return-value]
    return None, None


def _is_magnification(ds: Any, view: str | None, factor: float | None) -> str | None:
    if factor is not None and factor > MAGNIFICATION_WARN_FACTOR:
        return f"EstimatedRadiographicMagnificationFactor {factor:g}"
    if view and "MAG" in view.upper():
        return f"ViewPosition {view!r}"
    try:
        for item in ds.get("ViewCodeSequence") or []:
            for mod in item.get("ViewModifierCodeSequence") or []:
                meaning = str(mod.get("CodeMeaning", "")).lower()
                code = str(mod.get("CodeValue", "")).upper()
                if "magnif" in meaning or code in ("R-102D6", "399163004"):
                    return f"view modifier {mod.get('CodeMeaning', code)!r}"
    except (TypeError, AttributeError):
        return None
    return None


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _read_dicom(
    path: Path, user_spacing: float | tuple[float, float] | None,
    fallback: float | tuple[float, float] | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    ws: list[str] = []
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            # no preamble / file meta: many old files are raw datasets; try harder, the checks
            # below refuse whatever is not an image
            ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InputError(f"cannot read {path} as DICOM: {_one_line(exc)}") from None

    def has(keyword: str) -> bool:
        try:
            return keyword in ds
        except Exception:
            return False

    if not has("PixelData"):
        if has("FloatPixelData") or has("DoubleFloatPixelData"):
            raise InputError(f"{path}: float pixel data is not supported for mammograms")
        raise InputError(f"{path}: not a DICOM image (no pixel data)")
    try:
        modality = str(ds.get("Modality", "") or "").strip().upper() or None
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if sop_class in _REFUSED_SOP_CLASSES:
            raise InputError(
                f"{path}: {_TOMO_SOP_CLASSES[sop_class]} (tomosynthesis volume) is not supported; "
                "use 2-D mammograms or synthetic 2-D views"
            )
        if modality is None:
            _warn(ws, f"{path.name}: no Modality tag; assuming a mammogram (MG)")
        elif modality != "MG":
            raise InputError(f"{path}: modality {modality} is not a mammogram (MG expected)")
        frames = ds.get("NumberOfFrames", 1)
        n_frames = int(frames) if frames not in (None, "") else 1
        if n_frames > 1:
            raise InputError(
                f"{path}: multi-frame image ({n_frames} frames) is not supported; "
                "a 2-D mammogram is expected"
            )
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() or None
        if spp != 1 or (photometric is not None and photometric not in ("MONOCHROME1", "MONOCHROME2")):
            raise InputError(
                f"{path}: colour image ({photometric or '?'}, {spp} samples per pixel); "
                "a grayscale mammogram is expected"
            )
        if photometric is None:
            photometric = "MONOCHROME2"
            _warn(ws, f"{path.name}: no PhotometricInterpretation; assuming MONOCHROME2")
        if "Rows" not in ds or "Columns" not in ds:
            raise InputError(f"{path}: DICOM image without Rows/Columns")
        rows, cols = int(ds.Rows), int(ds.Columns)
        _check_size(path, rows, cols)
        if "BitsStored" not in ds or ds.BitsStored in (None, ""):
            ds.BitsStored = int(ds.get("BitsAllocated", 16) or 16)
        bits_stored = int(ds.BitsStored)
        if not 1 <= bits_stored <= 16:
            raise InputError(
                f"{path}: BitsStored {bits_stored} is not supported (1..16 expected)"
            )
        intent = str(ds.get("PresentationIntentType", "") or "").strip().upper() or None
        laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
        laterality = laterality.strip().upper() or None
        view = str(ds.get("ViewPosition", "") or "").strip().upper() or None
        factor = _dicom_float(ds.get("EstimatedRadiographicMagnificationFactor"))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: invalid DICOM header: {_one_line(exc)}") from None

    try:
        stored = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", None) or str(ts or "unknown transfer syntax")
        raise InputError(
            f"cannot decode the pixel data of {path} ({ts_name}): {_one_line(exc)}"
        ) from None
    if stored.shape != (rows, cols):
        raise InputError(f"{path}: decoded pixel data has shape {stored.shape}, expected {(rows, cols)}")

    has_modality_lut = any(
        k in ds for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")
    )
    # stored integers of at most 16 bits are exact in float32, and so is the MONOCHROME1
    # inversion below: float64 only where a LUT or the log of FOR PROCESSING needs it (a
    # full-field image's float64 copy cost as much as decoding it)
    exact32 = not has_modality_lut and intent != "FOR PROCESSING"
    try:
        values = np.asarray(apply_modality_lut(stored, ds),
                            dtype=np.float32 if exact32 else np.float64)
        lo_hi = np.asarray(
            apply_modality_lut(np.array(_stored_range(ds), dtype=np.int64), ds), dtype=np.float64
        )
    except Exception as exc:
        raise InputError(f"{path}: cannot apply the modality LUT: {_one_line(exc)}") from None
    lo, hi = float(lo_hi.min()), float(lo_hi.max())

    inverted = False
    if intent == "FOR PROCESSING":
        top = max(hi, float(values.max()), 1.0)
        values = np.log(top) - np.log(np.maximum(values, 1.0))
        _warn(
            ws,
            f"{path.name}: FOR PROCESSING (raw) image converted to the log domain "
            "(log(max) - log(x)) so that dense tissue is bright; vendor processing is not "
            "reproduced",
        )
    elif photometric == "MONOCHROME1":
        values = (lo + hi) - values
        inverted = True

    img = _finish_pixels(path, values, finite=exact32)

    if laterality not in ("L", "R"):
        laterality = None
    name_lat, name_view = _names_from_filename(path)
    laterality = laterality or name_lat
    view = view or name_view

    mag = _is_magnification(ds, view, factor)
    if mag is not None:
        _warn(
            ws,
            f"{path.name}: magnification view ({mag}); calcification sizes in pixels differ "
            "from contact views and the pixel spacing is not corrected",
        )
    spacing, source = _resolve_spacing(path, *_dicom_spacing(path, ds, ws), user_spacing, ws,
                                       fallback)
    meta = ImageMeta(
        source_path=str(path),
        format="dicom",
        rows=rows,
        columns=cols,
        pixel_spacing_mm=spacing,
        spacing_source=source,
        photometric_interpretation=photometric,
        bits_stored=bits_stored,
        inverted=inverted,
        modality_lut_applied=has_modality_lut,
        voi_lut_applied=False,
        presentation_intent=intent,
        modality=modality,
        laterality=laterality,
        view=view,
        magnification_factor=factor,
        warnings=tuple(ws),
    )
    return img, meta


# --------------------------------------------------------------------------------------------
# PNG / PGM (Pillow) and TIFF (tifffile)
# --------------------------------------------------------------------------------------------

_PIL_REFUSED = {
    "1": "1-bit (black and white) image",
    "P": "palette image",
    "PA": "palette image with alpha",
    "RGB": "RGB colour image",
    "RGBA": "RGBA colour image",
    "RGBX": "RGB colour image",
    "CMYK": "CMYK colour image",
    "YCbCr": "colour image",
    "LAB": "colour image",
    "HSV": "colour image",
    "LA": "grayscale image with alpha channel",
    "La": "grayscale image with alpha channel",
}


def _read_pillow(path: Path, fmt: str) -> tuple[np.ndarray, int | None]:
    from PIL import Image, UnidentifiedImageError

    expected = {"png": ("PNG",), "pgm": ("PPM",)}[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format not in expected:
                    raise InputError(
                        f"{path}: file content is {im.format or 'unknown'}, not {fmt.upper()}"
                    )
                cols, rows = im.size
                _check_size(path, rows, cols)
                mode = im.mode
                if mode in _PIL_REFUSED:
                    raise InputError(
                        f"{path}: {_PIL_REFUSED[mode]} not supported; convert it to 8- or "
                        "16-bit grayscale"
                    )
                if mode not in ("L", "I;16", "I;16B", "I;16L", "I;16N", "I"):
                    raise InputError(
                        f"{path}: unsupported image mode {mode!r}; 8- or 16-bit grayscale expected"
                    )
                im.load()
                arr = np.asarray(im)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read {path} as {fmt.upper()}: {_one_line(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(
            f"cannot read {path} (corrupt or truncated {fmt.upper()}?): {_one_line(exc)}"
        ) from None
    if mode == "L":
        arr = arr.astype(np.uint8, copy=False)
    else:
        if arr.dtype.kind not in "ui":
            raise InputError(f"{path}: unsupported pixel type {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise InputError(f"{path}: pixel values outside the 16-bit range")
        arr = arr.astype(np.uint16)
    return arr, _bits_estimate(arr)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's logger: on corrupt input tifffile logs each bad tag to stderr
    (lines that are not ``error:``/``warning:``); what matters reaches us as an exception."""
    log = logging.getLogger(name)
    previous = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(previous)


def _read_tiff(path: Path) -> tuple[np.ndarray, int | None, bool]:
    import tifffile

    try:
        with _quiet_logger("tifffile"), tifffile.TiffFile(path) as tf:
            pages = tf.pages
            if len(pages) == 0:
                raise InputError(f"{path}: TIFF file without images")
            if len(pages) > 1:
                raise InputError(
                    f"{path}: multi-page TIFF ({len(pages)} pages) is not supported; "
                    "one 2-D grayscale image per file expected"
                )
            page = pages.first
            shape = tuple(int(s) for s in page.shape)
            spp = int(page.samplesperpixel)
            photometric = int(page.photometric)
            if photometric == 3:
                raise InputError(f"{path}: palette image not supported; convert it to grayscale")
            if spp != 1 or len(shape) != 2:
                raise InputError(
                    f"{path}: {spp}-channel image of shape {shape} not supported; "
                    "a 2-D grayscale image is expected"
                )
            _check_size(path, shape[0], shape[1])
            if int(page.bitspersample) == 1:
                raise InputError(f"{path}: 1-bit (black and white) image not supported")
            arr = page.asarray()
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise InputError(f"cannot read {path} as TIFF: {_one_line(exc)}") from None
    if arr.dtype == np.bool_:
        raise InputError(f"{path}: 1-bit (black and white) image not supported")
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InputError(
            f"{path}: unsupported TIFF sample type {arr.dtype}; 8/16-bit grayscale or float expected"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{path}: image contains NaN or infinite values")
    miniswhite = photometric == 0
    return arr, _bits_estimate(arr), miniswhite


def _read_raster(
    path: Path, fmt: str, user_spacing: float | tuple[float, float] | None,
    fallback: float | tuple[float, float] | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    ws: list[str] = []
    inverted = False
    photometric = "MONOCHROME2"
    if fmt == "tiff":
        arr, bits, miniswhite = _read_tiff(path)
        values = arr.astype(np.float64)
        if miniswhite:
            # like DICOM MONOCHROME1: the smallest value is white; invert over the type's range
            if arr.dtype.kind == "u":
                top = float(np.iinfo(arr.dtype).max)
            else:
                top = float(values.max()) + float(values.min())
            values = top - values
            inverted = True
            photometric = "MONOCHROME1"
    else:
        arr, bits = _read_pillow(path, fmt)
        values = arr
    img = _finish_pixels(path, values)
    spacing, source = _resolve_spacing(path, None, None, user_spacing, ws, fallback)
    laterality, view = _names_from_filename(path)
    meta = ImageMeta(
        source_path=str(path),
        format=fmt,  # type: ignore[arg-type]
        rows=int(img.shape[0]),
        columns=int(img.shape[1]),
        pixel_spacing_mm=spacing,
        spacing_source=source,
        photometric_interpretation=photometric,
        bits_stored=bits,
        inverted=inverted,
        laterality=laterality,
        view=view,
        warnings=tuple(ws),
    )
    return img, meta


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return "dicom"
    if suffix == ".png":
        return "png"
    if suffix == ".pgm":
        return "pgm"
    if suffix in (".tif", ".tiff"):
        return "tiff"
    return None


def read_image(
    path: str | Path, pixel_spacing_mm: float | tuple[float, float] | None = None,
    *, fallback_spacing_mm: float | tuple[float, float] | None = None,
) -> tuple[np.ndarray, ImageMeta]:
    """Read one mammogram.

    Args:
        path: a ``.dcm/.dicom/.png/.pgm/.tif/.tiff`` file, or any file with the DICOM ``DICM``
            marker at offset 128.
        pixel_spacing_mm: ``(row, col)`` or one value in mm; overrides the file's spacing
            (needed for PNG/TIFF/PGM and DICOM without spacing; warned when it disagrees).
        fallback_spacing_mm: used only where the file records no spacing (no warning then),
            e.g. a list of negatives mixing spacing-less PNGs with DICOMs that record theirs;
            ignored when ``pixel_spacing_mm`` is given.

    Returns:
        ``(image, meta)``: ``image`` is ``float32`` of shape ``(meta.rows, meta.columns)``,
        finite, dense tissue bright, not normalised (see the module docstring for the exact
        intensity conversions); ``meta`` records what was read, assumed and converted.

    Raises:
        InputError: unreadable, corrupt or unsupported input (one-line message naming the file).
        ConfigError: an invalid ``pixel_spacing_mm``.
    """
    path = Path(path)
    for given in (pixel_spacing_mm, fallback_spacing_mm):
        if given is not None:
            validate_spacing(given)  # fail on the argument before touching the file
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied")
    fmt = _format_of(path)
    if fmt is None:
        if _has_dicom_preamble(path):
            fmt = "dicom"
        else:
            raise InputError(
                f"{path}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)} "
                "or a DICOM file)"
            )
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with attributed_to(path):  # a library's warning names this file (library_warnings)
        if fmt == "dicom":
            return _read_dicom(path, pixel_spacing_mm, fallback_spacing_mm)
        return _read_raster(path, fmt, pixel_spacing_mm, fallback_spacing_mm)


def _usable_file(path: Path, explicit: bool) -> bool:
    if path.suffix.lower() in SUPPORTED_SUFFIXES:
        return True
    return explicit and path.suffix == "" and _has_dicom_preamble(path)


def list_images(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders contribute their files with a :data:`SUPPORTED_SUFFIXES` suffix (case-insensitive),
    skipping hidden entries (name starting with ``.``); sub-folders only when ``recursive``
    (symbolic links are followed, but each real folder is visited once, so link loops end).
    Files given explicitly must have a supported suffix, or no suffix and a DICOM preamble.
    Duplicates (same real file) are kept once, at their first spelling. Sorted by path text.

    Raises:
        InputError: a path does not exist, an explicit file is unsupported, or nothing usable
        was found.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[str, Path] = {}

    def add(p: Path) -> None:
        key = os.path.realpath(p)
        found.setdefault(key, p)

    visited: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            raise InputError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
        ident = (st.st_dev, st.st_ino)
        if ident in visited:
            return
        visited.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            p = folder / entry.name
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if recursive:
                    walk(p)
            elif is_file and _usable_file(p, explicit=False):
                add(p)

    if len(paths) == 0:
        raise InputError("no input images given")
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            walk(p)
        elif p.is_file():
            if not _usable_file(p, explicit=True):
                raise InputError(
                    f"{p}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)} "
                    "or a DICOM file)"
                )
            add(p)
        elif p.exists():
            raise InputError(f"{p} is not a regular file or folder")
        else:
            raise InputError(f"no such file or folder: {p}")
    if not found:
        where = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        raise InputError(
            f"no images found in {where} (looked for {', '.join(SUPPORTED_SUFFIXES)}"
            f"{'' if recursive else '; sub-folders not searched'})"
        )
    return sorted(found.values(), key=lambda q: str(q))
