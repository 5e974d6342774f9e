"""The prediction folder: what ``mcgenref segment`` writes, and reading it back.

This module is the one owner of the format that segment, batch, evaluate and the report share.
Per image ``<stem>`` (a job's prefix may add sub-folders) the folder holds:

=====================================  ======================================================
``<stem>_prob.png``                    probability map, uint16 = round(clip(p, 0, 1) x 65535)
                                       (:func:`encode_prob`; uint8 = p x 255 is also read)
``<stem>_mask.png``                    the MC mask, uint8 0/255
``<stem>_calcifications.csv``          one row per MC (:func:`csv_bytes`)
``<stem>_clusters.json``               the clusters and the grouping ``"rule"`` used
``<stem>_overlay.png``                 picture for people (palette PNG; read it as RGB)
``<stem>_breast.png``                  the searched region, uint8 0/255
``<stem>_uncertainty.png``             refined runs only: 2 x the TT-GPR spread, as the prob
``<stem>_seg.dcm``                     DICOM inputs only: a DICOM SEG of the mask
``<stem>_meta.json``                   the record (:class:`PredictionMeta`), written **last**:
                                       its presence is the done-marker
=====================================  ======================================================

Reading back (:func:`prediction_stems`, :func:`read_prediction`) accepts folders made by other
tools with fewer files: only ``<stem>_meta.json`` with ``pixel_spacing_mm`` is required, the
mask may be absent when the probability map is there (then ``prob >= threshold``), the breast
may be absent (then the whole image); each fallback is noted.

This module depends on nothing above ``io`` (the cluster rule stays a plain dict here).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mcgenref.errors import InputError

PROB_SUFFIX = "_prob.png"
MASK_SUFFIX = "_mask.png"
CALCIFICATIONS_SUFFIX = "_calcifications.csv"
CLUSTERS_SUFFIX = "_clusters.json"
OVERLAY_SUFFIX = "_overlay.png"
BREAST_SUFFIX = "_breast.png"
META_SUFFIX = "_meta.json"
SEG_SUFFIX = "_seg.dcm"
UNCERTAINTY_SUFFIX = "_uncertainty.png"

#: The files every finished image has (``META_SUFFIX`` last: it is written last).
OUTPUT_SUFFIXES = (
    PROB_SUFFIX, MASK_SUFFIX, CALCIFICATIONS_SUFFIX, CLUSTERS_SUFFIX, OVERLAY_SUFFIX,
    BREAST_SUFFIX, META_SUFFIX,
)
#: Files that DICOM inputs have besides :data:`OUTPUT_SUFFIXES`.
DICOM_OUTPUT_SUFFIXES = (SEG_SUFFIX,)
#: Files that refined runs (``--refine``) have besides :data:`OUTPUT_SUFFIXES`.
REFINE_OUTPUT_SUFFIXES = (UNCERTAINTY_SUFFIX,)
#: Every name an output of ``segment`` can end with (not taken for inputs on reruns).
ALL_OUTPUT_SUFFIXES = OUTPUT_SUFFIXES + DICOM_OUTPUT_SUFFIXES + REFINE_OUTPUT_SUFFIXES

#: Full scale of the 16-bit maps (probability, uncertainty).
PROB_FULL_SCALE = 65535.0


def output_path(folder: str | Path, stem: str, suffix: str) -> Path:
    """``folder/<stem><suffix>``."""
    return Path(folder) / f"{stem}{suffix}"


# --------------------------------------------------------------------------- encodings


def encode_prob(p: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as uint16: ``round(clip(p, 0, 1) x 65535)`` (lossless to 1/65535)."""
    return np.round(np.clip(p, 0.0, 1.0) * PROB_FULL_SCALE).astype(np.uint16)


def decode_prob(raw: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from a uint16 map (/65535) or an 8-bit one (/255: other tools)."""
    scale = PROB_FULL_SCALE if raw.dtype == np.uint16 or raw.max(initial=0) > 255 else 255.0
    return raw.astype(np.float32) / np.float32(scale)


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """A bool mask as uint8 0/255."""
    return np.asarray(mask, dtype=bool).astype(np.uint8) * 255


def decode_mask(raw: np.ndarray) -> np.ndarray:
    """Nonzero = in the mask (any channel of a colour PNG)."""
    return raw.any(axis=2) if raw.ndim == 3 else raw != 0


def palette_png_bytes(indices: np.ndarray, palette: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless palette PNG of uint8 ``indices`` [H, W] into ``palette`` (uint8 [<= 256, 3]):
    decoded as RGB it is exactly ``palette[indices]``, at a third of an RGB PNG's cost."""
    if indices.dtype != np.uint8 or indices.ndim != 2:
        raise TypeError(f"palette_png_bytes: unsupported indices {indices.dtype} {indices.shape}")
    img = Image.fromarray(indices)  # mode L; a palette makes it P with the same indices
    img.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist(), rawmode="RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# --------------------------------------------------------------------------- CSV


def _cell(value: Any, float_digits: int | None) -> Any:
    if value is None:
        return ""
    if float_digits is not None:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            return f"{value:.{float_digits}g}" if math.isfinite(value) else ""
    return value


def csv_bytes(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
              float_digits: int | None = None) -> bytes:
    """The one CSV writer of the package: a header of ``columns``, one line per row.

    Missing keys and ``None`` are empty cells; keys not in ``columns`` are ignored. With
    ``float_digits``, floats are written with that many significant digits (NaN/inf empty) and
    bools as 0/1; without it values are written as Python prints them.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k), float_digits) for k in columns})
    return buf.getvalue().encode()


# --------------------------------------------------------------------------- the record


def _where(where: str, key: str) -> str:
    return f"{where}: {key!r}"


@dataclass(frozen=True)
class ImageRecord:
    """What the input file recorded (no patient identifier): the ``"image"`` of the record."""

    format: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    inverted: bool = False
    presentation_intent: str | None = None
    laterality: str | None = None
    view: str | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["warnings"] = list(self.warnings)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageRecord:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["warnings"] = tuple(str(w) for w in (kw.get("warnings") or ()))
        return cls(**kw)


@dataclass(frozen=True)
class PredictionMeta:
    """``<stem>_meta.json``: everything about one segmented image besides its pixels.

    Written by segment (:func:`write_meta`, last: the done-marker), read by batch (counts for
    skipped rows, ``settings`` compared on reruns), evaluate (spacing, size, threshold) and the
    report. :meth:`to_dict` gives the JSON object, keys in field order; :meth:`from_dict`
    reads one back. Every field but the spacing may be absent in a folder made by another
    tool (``None``); the model's, generator's and detector's details are kept as the dicts
    their owners write.

    ``model_choice``: which segmentor ``segment --model`` chose for this image and why
    (the dict :class:`mcgenref.inference.model_choice.ModelChoice` writes: ``asked``,
    ``model``, ``name``, ``path``, ``sha256``, ``pixel_spacing_mm``, ``reason``); ``None`` for
    the classical method, a bare Segmenter, and records written before the choice existed.
    ``pixel_spacing_mm``: (row, col) mm of the input grid; ``image_size``: (rows, cols);
    ``threshold``: the probability threshold of the mask; ``breast_area_mm2``: the searched
    region; ``settings``: what determines the outputs (compared on reruns); ``timings``:
    seconds per step (``write_s`` added by the writer).
    """

    pixel_spacing_mm: tuple[float, float] | None = None
    software: str | None = None
    input: str | None = None
    method: str | None = None
    model: dict[str, Any] | None = None
    model_choice: dict[str, Any] | None = None
    refine: bool = False
    generator: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    write_seg: bool = True
    pixel_spacing_source: str | None = None
    image_size: tuple[int, int] | None = None
    threshold: float | None = None
    normalization: dict[str, Any] | None = None
    image: ImageRecord = field(default_factory=ImageRecord)
    breast_area_mm2: float | None = None
    n_calcifications: int | None = None
    n_clusters: int | None = None
    detector: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    #: JSON key order of the record (as segment has always written it; ``model_choice`` new)
    _ORDER = ("software", "input", "method", "model", "model_choice", "refine", "generator",
              "settings", "write_seg", "pixel_spacing_mm", "pixel_spacing_source", "image_size",
              "threshold", "normalization", "image", "breast_area_mm2", "n_calcifications",
              "n_clusters", "detector", "timings")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (tuples as lists)."""
        out: dict[str, Any] = {}
        for k in self._ORDER:
            v = getattr(self, k)
            if k == "image":
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[k] = v
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "meta") -> PredictionMeta:
        """Read a record back; a malformed spacing, size or threshold is an InputError."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: not a JSON object")
        kw: dict[str, Any] = {k: d[k] for k in cls._ORDER if k in d and d[k] is not None}
        if "pixel_spacing_mm" in kw:
            try:
                sp = [float(v) for v in kw["pixel_spacing_mm"]]
                if len(sp) != 2 or not all(math.isfinite(v) and v > 0 for v in sp):
                    raise ValueError
            except (TypeError, ValueError):
                raise InputError(
                    f"{where}: 'pixel_spacing_mm' must be [row_mm, col_mm] > 0") from None
            kw["pixel_spacing_mm"] = (sp[0], sp[1])
        if "image_size" in kw:
            try:
                size = tuple(int(v) for v in kw["image_size"])
                if len(size) != 2:
                    raise ValueError
            except (TypeError, ValueError):
                raise InputError(f"{where}: 'image_size' must be [rows, cols]") from None
            kw["image_size"] = size
        if "threshold" in kw:
            try:
                kw["threshold"] = float(kw["threshold"])
            except (TypeError, ValueError):
                raise InputError(f"{_where(where, 'threshold')} is not a number") from None
        if "image" in kw:
            img = kw["image"]
            kw["image"] = ImageRecord.from_dict(img) if isinstance(img, dict) else ImageRecord()
        for k in ("model_choice", "detector", "timings"):
            if k in kw and not isinstance(kw[k], dict):
                raise InputError(f"{where}: {k!r} must be an object")
        return cls(**kw)


def write_meta(folder: str | Path, stem: str, meta: PredictionMeta) -> None:
    """Write ``<stem>_meta.json`` atomically: call it after every other file of the image."""
    from mcgenref.io.atomic import write_json_atomic

    write_json_atomic(output_path(folder, stem, META_SUFFIX), meta.to_dict())


def read_meta(folder: str | Path, stem: str) -> PredictionMeta:
    """The record of ``stem``; InputError when it is missing, unreadable or malformed."""
    path = output_path(folder, stem, META_SUFFIX)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    return PredictionMeta.from_dict(doc, where=str(path))


def is_complete(folder: str | Path, stem: str, meta: PredictionMeta,
                write_seg: bool = True) -> bool:
    """Whether every file that the record says was written is there.

    ``write_seg``: whether a DICOM input's ``<stem>_seg.dcm`` is required.
    """
    suffixes = OUTPUT_SUFFIXES
    if write_seg and meta.image.format == "dicom":
        suffixes = suffixes + DICOM_OUTPUT_SUFFIXES
    if meta.refine:
        suffixes = suffixes + REFINE_OUTPUT_SUFFIXES
    return all(output_path(folder, stem, s).is_file() for s in suffixes)


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class PredictionImage:
    """One image of a prediction folder, read back (arrays ``[row, col]``).

    ``threshold``: the record's (0.5 when it has none, noted); ``mask``: bool; ``breast``:
    bool; ``prob``: float32 in [0, 1] or ``None`` without ``<stem>_prob.png``; ``rule``: the
    ``"rule"`` object of ``<stem>_clusters.json`` (``None`` when absent or unreadable, noted).
    """

    stem: str
    spacing: tuple[float, float]
    threshold: float
    mask: np.ndarray
    breast: np.ndarray
    prob: np.ndarray | None
    rule: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def prediction_stems(folder: str | Path) -> list[str]:
    """Stems of a prediction folder: the ``<stem>`` of every ``<stem>_meta.json``."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"prediction folder {d} not found")
    stems = sorted(p.name[: -len(META_SUFFIX)] for p in d.iterdir()
                   if p.is_file() and p.name.endswith(META_SUFFIX))
    if not stems:
        raise InputError(f"no <stem>{META_SUFFIX} in {d}: not a 'mcgenref segment' output folder")
    return stems


def read_prediction(folder: str | Path, stem: str) -> PredictionImage:
    """Read one image's outputs (see the module docstring for the files and fallbacks)."""
    d = Path(folder)
    meta_path = output_path(d, stem, META_SUFFIX)
    meta = read_meta(d, stem)
    if meta.pixel_spacing_mm is None:
        raise InputError(f"{meta_path}: 'pixel_spacing_mm' must be [row_mm, col_mm] > 0")
    notes: list[str] = []
    threshold = meta.threshold if meta.threshold is not None else 0.5
    if meta.threshold is None:
        notes.append("meta has no threshold: 0.5 assumed")

    prob = None
    prob_path = output_path(d, stem, PROB_SUFFIX)
    if prob_path.is_file():
        raw = _read_png(prob_path)
        if raw.ndim != 2:
            raise InputError(f"{prob_path}: expected a single-channel PNG")
        prob = decode_prob(raw)
    mask_path = output_path(d, stem, MASK_SUFFIX)
    if mask_path.is_file():
        mask = decode_mask(_read_png(mask_path))
    elif prob is not None:
        mask = prob >= threshold
        notes.append("no _mask.png: mask = prob >= threshold")
    else:
        raise InputError(f"{stem}: neither {mask_path.name} nor {prob_path.name} in {d}")
    shape = mask.shape
    if meta.image_size is not None and meta.image_size != tuple(shape):
        raise InputError(f"{stem}: mask is {shape[0]}x{shape[1]} but meta image_size is "
                         f"{meta.image_size}")
    if prob is not None and prob.shape != shape:
        raise InputError(f"{stem}: prob map {prob.shape} and mask {shape} differ in shape")
    breast_path = output_path(d, stem, BREAST_SUFFIX)
    if breast_path.is_file():
        breast = decode_mask(_read_png(breast_path))
        if breast.shape != shape:
            raise InputError(f"{stem}: breast mask {breast.shape} and mask {shape} differ")
    else:
        breast = np.ones(shape, dtype=bool)
        notes.append("no _breast.png: the whole image is the region")
    rule = None
    cl_path = output_path(d, stem, CLUSTERS_SUFFIX)
    if cl_path.is_file():
        try:
            r = json.loads(cl_path.read_text()).get("rule")
            rule = r if isinstance(r, dict) else None
        except (OSError, ValueError, AttributeError):
            notes.append("clusters.json unreadable: default cluster rule")
    return PredictionImage(stem, meta.pixel_spacing_mm, threshold, mask, breast, prob, rule,
                           tuple(notes))
