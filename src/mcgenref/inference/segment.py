"""Full-field MC segmentation of real mammograms, and the files it writes.

For one image (:meth:`Segmenter.segment`):

1. read it (:func:`mcgenref.io.read_image`; spacing from the file, the user, or the default);
2. find the breast (:func:`mcgenref.io.segment_breast`; the pectoral muscle excluded) and
   normalise intensity inside it exactly as the training negatives were; with ``roi`` (a crop
   taken inside the breast) the whole crop is the region and :func:`fit_roi_normalization`
   the intensity rule;
3. ``model``: resample to the model's pixel spacing (from its ``model.json``), run
   Gaussian-blended sliding windows over the breast only (:mod:`.sliding`), and bring the
   probability map back to the input's grid; ``classical``: the DoG detector
   (:mod:`.classical`) at the input's own spacing;
   with ``refine``, test-time generative posterior refinement of the logits around the
   candidates (:mod:`.refine`, TT-GPR), with the shipped or a given generator;
4. threshold, measure MCs, group clusters (:mod:`.postprocess`).

:func:`write_outputs` writes (names and encodings from :mod:`mcgenref.io.predictions`)
``<stem>_prob.png`` (uint16, p x 65535), ``<stem>_mask.png``
(0/255), ``<stem>_calcifications.csv``, ``<stem>_clusters.json``, ``<stem>_overlay.png``,
``<stem>_breast.png``, with ``refine`` ``<stem>_uncertainty.png`` (TT-GPR's uncertainty, uint16,
2 x the standard deviation of the surrogate probabilities x 65535: 0 where the projections
agree or no candidate was refined, 65535 at the largest possible disagreement), for DICOM
inputs ``<stem>_seg.dcm`` (a DICOM SEG of the mask that references the source:
:mod:`mcgenref.io.dicom_seg`; unless ``write_seg`` is off) and, last, ``<stem>_meta.json`` (its
presence marks the image as done; the record is a
:class:`~mcgenref.io.predictions.PredictionMeta`). Each cluster in ``<stem>_clusters.json`` carries
descriptive geometry (:mod:`.descriptors`: extent, area, density, distribution class,
morphology spread; descriptive, not diagnostic). Every file is written atomically. No patient
identifier is copied into any of them except ``<stem>_seg.dcm``, which as a DICOM object derived from the
source must carry the source's patient and study modules. A SEG that cannot be built is an
error for that image (InputError), like any other output it needs: no meta, so it is redone.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import mcgenref
from mcgenref.config import to_dict
from mcgenref.errors import ConfigError, InputError, McGenRefWarning
from mcgenref.clusters import ClusterRule
from mcgenref.detections import PeakRule
from mcgenref.inference.classical import ClassicalConfig, classical_score
from mcgenref.inference.descriptors import DESCRIPTOR_RULE, describe_clusters
from mcgenref.inference.postprocess import (
    CSV_COLUMNS,
    Detections,
    find_calcifications,
    overlay_palette,
    render_overlay_indexed,
)
from mcgenref.inference.refine import RefineConfig, Refiner
from mcgenref.inference.sliding import CONTEXT_PX, select_windows, sliding_window_logits
from mcgenref.io import fit_normalization, read_image, segment_breast
from mcgenref.io.breast import morph_rows, row_half_widths
from mcgenref.io.atomic import (
    remove_stale,
    write_bytes_atomic,
    write_json_atomic,
    write_png_atomic,
)
from mcgenref.io.meta import ImageMeta
from mcgenref.io.normalize import Normalization
from mcgenref.io.predictions import (
    BREAST_SUFFIX,
    CALCIFICATIONS_SUFFIX,
    CLUSTERS_SUFFIX,
    MASK_SUFFIX,
    OVERLAY_SUFFIX,
    PROB_SUFFIX,
    SEG_SUFFIX,
    UNCERTAINTY_SUFFIX,
    ImageRecord,
    PredictionMeta,
    csv_bytes,
    encode_mask,
    encode_prob,
    is_complete,
    output_path,
    palette_png_bytes,
    read_meta,
    write_meta,
)
from mcgenref.io.resample import axis_operator, resample, separable_blocks, zoom_factors
from mcgenref.runtime import Autocast, resolve_device

if TYPE_CHECKING:
    from mcgenref.models.checkpoint import SegmentorContract

#: SegmentConfig fields that choose which files are written, not what they contain: left out of
#: the settings compared on reruns (a run without the SEG is not "other settings").
OUTPUT_ONLY_FIELDS = ("write_seg",)


def fill_outside(image: np.ndarray, region: np.ndarray,
                 within: tuple[slice, slice] | None = None) -> np.ndarray:
    """``image`` with every pixel outside ``region`` set to its nearest pixel inside.

    Why: the skin line against air is the strongest edge in a mammogram, and both detectors
    respond to edges (the network never saw air in training; a DoG rings along the edge).
    Extending the breast outwards removes the edge, so no detection is made on the border
    and the film or detector edge; results outside the region are discarded anyway.

    ``within``: only the pixels of this box are filled (the rest keep ``image``'s values), the
    same values as filling the whole image when every ``region`` pixel lies in the box (the
    nearest region pixel of a pixel in the box is then in the box). The network reads only
    its windows, so their bounding box is all it needs filled.
    """
    if region.all():
        return image
    from scipy import ndimage

    if within is not None:
        out = np.array(image, copy=True)
        out[within] = fill_outside(image[within], region[within])
        return out
    h, w = region.shape
    outside = ~region
    if w % 64 == 0:
        # a row of a power-of-two multiple of 256 bytes maps the column pass of the feature
        # transform onto a few cache sets: 1.7x slower at 1024 columns. Columns of outside
        # pixels added on the right change no one's nearest region pixel (there is none there)
        outside = np.pad(outside, ((0, 0), (0, 8)), constant_values=True)
    nearest = ndimage.distance_transform_edt(outside, return_distances=False, return_indices=True)
    nearest = nearest[:, :, :w]
    # one flat gather (rows * width + cols) instead of a 2-D fancy index: 3x faster
    flat = nearest[0] if image.size <= np.iinfo(nearest.dtype).max else nearest[0].astype(np.int64)
    flat = flat * w
    flat += nearest[1]
    return np.take(np.ascontiguousarray(image).ravel(), flat)


#: How ROI mode maps a crop's intensities (recorded in ``<stem>_meta.json``).
ROI_NORMALIZATION_RULE = "roi: v = 0.5 + (x - median of the crop) / (2^bits_stored - 1)"


def fit_roi_normalization(raw: np.ndarray, meta: ImageMeta) -> Normalization:
    """The intensity map of ROI mode (``segment --roi``): :data:`ROI_NORMALIZATION_RULE`.

    The file's bit-depth scale (the full range of its pixel values maps to a span of 1) with
    the crop's median moved to mid-grey. Why: a 60 px crop's own 1st/99th percentiles stretch
    its noise to the span a whole breast has (ROI AUC 0.39 on the MAGIC-5 development cases
    against 0.78 for this rule; the candidates and their numbers are in docs/segment.md), and
    a fixed scale without the median shift (0.75) passes the crop's absolute brightness,
    which differs between sites and films, to the network. One statistic of a whole crop, the
    median, is robust to the few MC pixels. Pixels beyond the span are not clipped.
    """
    full_scale = float(2 ** int(meta.bits_stored or 8) - 1)
    values = np.asarray(raw, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InputError(f"{meta.source_path}: the crop has no finite pixel")
    median = float(np.median(values))
    return Normalization(median - 0.5 * full_scale, median + 0.5 * full_scale)


def roi_normalization_record(norm: Normalization) -> dict[str, Any]:
    """``<stem>_meta.json``'s ``normalization`` in ROI mode: the rule and its ``low``/``high``."""
    return {"rule": ROI_NORMALIZATION_RULE, "low": float(norm.low), "high": float(norm.high)}


def roi_padding(shape: tuple[int, int], window_px: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` that bring ``shape`` up to at least one window,
    the crop centred (so its four borders get the same mirrored context)."""
    pads = []
    for n in shape:
        extra = max(0, int(window_px) - int(n))
        pads.append((extra // 2, extra - extra // 2))
    return pads[0], pads[1]


def reflect_pad(image: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """``image`` mirrored outwards by ``pad`` (repeatedly when the pad exceeds the image; edge
    values along an axis of one pixel, which has nothing to mirror)."""
    mode = "reflect" if min(image.shape) > 1 else "edge"
    return np.pad(image, pad, mode=mode)


def to_input_grid(model_map: np.ndarray, region: np.ndarray, high: float) -> np.ndarray:
    """A map on the model's grid brought back (linear) onto the input's grid ``region.shape``,
    clipped to ``[0, high]`` and 0 outside ``region`` (no bleeding across the breast edge).

    Only the region's bounding box is resampled: on a full-field image the breast covers about
    half of it, and everything outside the region is 0 anyway. The box is made a block of rows
    at a time (:func:`mcgenref.io.resample.separable_blocks`), each clipped and masked while it
    is in cache: the output is the only full-size array written.
    """
    out = np.zeros(region.shape, dtype=np.float32)
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return out
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    model_map = model_map.astype(np.float32, copy=False)
    lo, hi = np.float32(0.0), np.float32(high)
    if model_map.shape == region.shape:  # the same grid: nothing to resample
        np.copyto(out[box], np.clip(model_map[box], lo, hi), where=region[box])
        return out
    a_rows = axis_operator(model_map.shape[0], region.shape[0], out=box[0])
    a_cols = axis_operator(model_map.shape[1], region.shape[1], out=box[1])
    out_box, region_box = out[box], region[box]
    for r, block in separable_blocks(model_map, a_rows, a_cols):
        np.clip(block, lo, hi, out=block)
        np.copyto(out_box[r], block, where=region_box[r])
    return out


def inside_skin_margin(region: np.ndarray, spacing_mm: tuple[float, float],
                       margin_mm: float, in_place: bool = False) -> np.ndarray:
    """``region`` without the pixels closer than ``margin_mm`` to its edge, where the edge on
    the image border (the chest wall, cut by the detector) does not count. ``in_place``: a
    C-ordered ``region`` is overwritten and returned (else a new mask)."""
    if margin_mm <= 0 or not region.any():
        return region
    from scipy import ndimage

    # on a grid of ~0.5 mm: the margin needs no finer precision, and full-field DICOMs are big
    k = max(1, int(0.5 / max(spacing_mm)))
    coarse = region[::k, ::k]
    padded = np.pad(coarse, 1, mode="edge")  # the region continues beyond the image border
    step = (spacing_mm[0] * k, spacing_mm[1] * k)
    rows = _margin_disk_rows(step, margin_mm)
    if rows is not None and not padded.all():
        # distance > margin <=> no pixel outside within the margin: an erosion by the disk of
        # the offsets the distance transform would put within it (border: the region goes on)
        keep = morph_rows(padded, rows, erode=True, border=True)[1:-1, 1:-1]
    else:
        keep = ndimage.distance_transform_edt(padded, sampling=step)[1:-1, 1:-1] > margin_mm
    out = region if in_place and region.flags.c_contiguous and region.flags.writeable else None
    return _and_blocks(region, keep, k, out)


def _margin_disk_rows(step: tuple[float, float], margin_mm: float) -> dict[int, int] | None:
    """The offsets (in pixels of ``step`` mm) whose distance, computed as
    ``ndimage.distance_transform_edt`` computes it, is at most ``margin_mm``, as
    :func:`mcgenref.io.breast.row_half_widths`; ``None`` when an offset lies within rounding
    of the margin and its distance is not exact (equidistant offsets could then fall on both
    sides, and the transform is used instead)."""
    from fractions import Fraction

    reach = [int(margin_mm // s) + 1 for s in step]
    dy, dx = np.ogrid[-reach[0]: reach[0] + 1, -reach[1]: reach[1] + 1]
    d2 = (dy.astype(np.float64) * step[0]) ** 2 + (dx.astype(np.float64) * step[1]) ** 2
    dist = np.sqrt(d2)
    for i, j in zip(*np.nonzero(np.abs(dist - margin_mm) <= 1e-9 * max(margin_mm, 1.0))):
        exact = (int(dy[i, 0]) * Fraction(step[0])) ** 2 + (int(dx[0, j]) * Fraction(step[1])) ** 2
        if Fraction(float(d2[i, j])) != exact or Fraction(float(dist[i, j])) ** 2 != exact:
            return None
    return row_half_widths(dist <= margin_mm)


def _and_blocks(mask: np.ndarray, keep: np.ndarray, k: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """``mask`` & ``keep`` repeated ``k`` x ``k`` (cut to ``mask``'s shape), into ``out`` (a
    C-ordered bool array of that shape, ``mask`` itself allowed; ``None``: a new one), without
    the full-size repeated copy: ``keep`` is repeated along the columns only, then broadcast
    over each block of ``k`` rows (a ``[rows / k, k, cols]`` view, long rows in the inner loop)."""
    h, w = mask.shape
    cols = np.repeat(keep, k, axis=1)[:, :w]
    if out is None:
        out = np.empty((h, w), dtype=bool)  # C order: the reshape below is a view of it
    whole = h - h % k
    np.logical_and(mask[:whole].reshape(whole // k, k, w), cols[: whole // k, None, :],
                   out=out[:whole].reshape(whole // k, k, w))
    if whole < h:
        np.logical_and(mask[whole:], cols[whole // k], out=out[whole:])
    return out


def default_model_path() -> Path:
    """The segmentor shipped inside the package (``mcgenref/weights/segmentor``)."""
    return Path(str(resources.files("mcgenref") / "weights" / "segmentor"))


def default_generator_path() -> Path:
    """The generator shipped inside the package (``mcgenref/weights/generator``)."""
    return Path(str(resources.files("mcgenref") / "weights" / "generator"))


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of ``mcgenref segment``.

    Attributes:
        method: ``model`` (the trained segmentor) or ``classical`` (the label-free DoG baseline).
        threshold: probability threshold for the MC mask; ``None`` takes the operating point
            recorded with the model (``model.json`` ``operating_point.threshold``; a model never
            calibrated: its trainer's ``extra.threshold_logit``), or
            ``classical_threshold`` for the classical method.
        classical_threshold: threshold of the classical score (0.5 means CNR = ``cnr_half``);
            ``None`` takes the classical operating point recorded with the shipped model
            (chosen on the same development data by the same rule).
        window_px: sliding-window side on the model's grid; 256 is the training patch size.
        overlap: fraction of overlap between windows; 0.25 with Gaussian blending removes
            seams at a third of the cost of 0.5.
        window_context_px: windows of the grid are skipped where the others already hold every
            searched pixel at least this many pixels (model grid) from their sides
            (:func:`mcgenref.inference.sliding.select_windows`); at most half the overlap in
            pixels for the guarantee to hold everywhere. 16 px is 3.2 mm on the 0.2 mm grid.
        batch_size: windows per forward pass; ``None``: 8 on CUDA, 2 on CPU (on the 2-core
            build machine, 48 windows of the default model took 1.43 / 1.28 / 1.72 / 2.67 s
            at batch 1 / 2 / 4 / 8: large CPU batches only thrash the caches).
        exclude_pectoral: do not search the pectoral muscle (MLO views).
        skin_margin_mm: search only this far inside the breast mask's skin edge (the mask
            itself already ends ~2 mm inside the skin). The breast periphery, where tissue
            thins and intensity falls steeply to the skin line, is where both detectors put
            most false clusters on film (measured on mini-MIAS normals), and the training
            patches (>= 95 % breast) rarely show it. Edges on the image border (the chest
            wall) are not skin and are not eroded. 0 disables it. 2 mm: the smallest margin
            within one false cluster per 20 calibration normals of 5 mm with the hard-negative
            model (docs/hard_negatives.md, "Skin margin by measurement"); it was 5 mm.
        cluster_rule: how MCs are grouped (see mcgenref.clusters).
        peak_rule: what one detected MC is: a peak of the probability map, with non-maximum
            suppression within ``radius_mm`` (see mcgenref.detections).
        classical: the classical detector's scales.
        refine: run TT-GPR (:mod:`mcgenref.inference.refine`) on the model's logits; model
            method only.
        tt_gpr: TT-GPR's settings (its terms, windows, projections, rounds, seed).
        write_seg: write ``<stem>_seg.dcm`` for DICOM inputs. It changes which files are
            written, not the results, so it is not among the settings compared on reruns.
        roi: the input is a crop taken inside the breast (``segment --roi``): no breast mask
            and no skin margin (the searched region is every pixel; ``exclude_pectoral`` and
            ``skin_margin_mm`` do not apply), intensity by :func:`fit_roi_normalization`
            (a crop's own percentiles stretch its noise), and a crop smaller than a network
            window is reflect-padded to one window on the model's grid, not refused.
    """

    method: Literal["model", "classical"] = "model"
    threshold: float | None = None
    classical_threshold: float | None = None
    window_px: int = 256
    overlap: float = 0.25
    window_context_px: int = CONTEXT_PX
    batch_size: int | None = None
    exclude_pectoral: bool = True
    skin_margin_mm: float = 2.0
    cluster_rule: ClusterRule = field(default_factory=ClusterRule)
    peak_rule: PeakRule = field(default_factory=PeakRule)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    refine: bool = False
    tt_gpr: RefineConfig = field(default_factory=RefineConfig)
    write_seg: bool = True
    roi: bool = False

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must be strictly between 0 and 1")
        if not 0.0 <= self.overlap < 0.95:
            raise ValueError("overlap must be in [0, 0.95)")
        if not 0.0 <= self.skin_margin_mm <= 50.0:
            raise ValueError("skin_margin_mm must be between 0 and 50")
        if self.window_px < 32 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("window_px must be >= 32 and batch_size >= 1")
        if not 0 <= 2 * self.window_context_px <= self.window_px:
            raise ValueError("window_context_px must be between 0 and window_px / 2")
        if self.refine and self.method != "model":
            raise ValueError("refine (TT-GPR) needs the model method")


@dataclass(frozen=True)
class SegmentationResult:
    """Everything about one segmented image, on the input's own pixel grid."""

    stem: str
    image: np.ndarray  # float32, normalised inside the breast (dense bright)
    region: np.ndarray  # bool, the searched breast region
    prob: np.ndarray  # float32 in [0, 1]
    detections: Detections
    meta: PredictionMeta  # the <stem>_meta.json record
    source_path: Path | None = None  # the DICOM input (for its SEG); None for other formats
    uncertainty: np.ndarray | None = None  # float32 [0, 0.5], TT-GPR's surrogate spread
    chest_wall_left: bool | None = None  # the breast mask's side (the SEG's PatientOrientation)


@dataclass(frozen=True)
class PreparedImage:
    """One image read and normalised (:meth:`Segmenter.prepare`), ready for detection."""

    path: Path
    stem: str
    image: np.ndarray  # float32, normalised inside the breast (dense bright), input grid
    region: np.ndarray  # bool, the searched breast region
    spacing: tuple[float, float]  # (row, col) mm
    image_meta: ImageMeta  # what the file records (format, spacing source, view...)
    normalization: dict[str, Any]
    timings: dict[str, float]
    chest_wall_left: bool | None = None  # the breast mask's side (a DICOM SEG's orientation)


class Segmenter:
    """Loads the model once and segments any number of images.

    Args:
        config: see :class:`SegmentConfig`.
        model_path: a model folder (``model.json`` + ``model.safetensors``); ``None`` = the
            shipped default. Ignored for ``method="classical"``.
        generator_path: the generator folder TT-GPR uses (``config.refine``); ``None`` = the
            shipped default.
        device: ``auto``, ``cpu`` or ``cuda``; autocast (bf16, else fp16) is used on CUDA.
        pixel_spacing_mm: overrides the files' spacing (one value or (row, col)); files that
            record none get :data:`mcgenref.io.meta.DEFAULT_PIXEL_SPACING_MM` with a warning.
    """

    def __init__(
        self,
        config: SegmentConfig | None = None,
        model_path: str | Path | None = None,
        device: str = "auto",
        pixel_spacing_mm: float | tuple[float, float] | None = None,
        generator_path: str | Path | None = None,
    ) -> None:
        self.config = config or SegmentConfig()
        self.pixel_spacing_mm = pixel_spacing_mm
        self.model = None
        self.model_meta: dict[str, Any] = {}
        self.contract: SegmentorContract | None = None
        self.model_info: dict[str, Any] = {"name": "classical-dog", "sha256": None}
        self.model_spacing: tuple[float, float] | None = None
        self.percentiles = (1.0, 99.0)  # the classical method's normalisation
        # the classical method needs no device: "--device cuda" must not fail on a CPU box
        self.device = resolve_device(device if self.config.method == "model" else "cpu")
        if self.config.method == "model":
            from mcgenref.models.checkpoint import load_segmentor

            path = Path(model_path) if model_path is not None else default_model_path()
            self.model, self.contract, self.model_meta = load_segmentor(path, self.device)
            self.model_info = {"name": self.contract.name, "path": str(path),
                               "sha256": self.contract.sha256}
            self._read_contract(path)
        self.threshold = self._threshold()
        self.batch_size = self.config.batch_size or (8 if self.device.type == "cuda" else 2)
        self.autocast = Autocast.for_device(self.device)  # fp32 on CPU
        self.refiner: Refiner | None = None
        self.generator_info: dict[str, Any] | None = None
        if self.config.refine:
            self._load_generator(Path(generator_path) if generator_path else default_generator_path())

    def _load_generator(self, path: Path) -> None:
        from mcgenref.models.checkpoint import (
            input_size_multiple,
            load_generator,
            trained_pixel_spacing_mm,
        )

        generator, contract, meta = load_generator(path, self.device)
        multiple = input_size_multiple(meta)
        if self.config.tt_gpr.window_px % multiple:
            raise ConfigError(f"tt_gpr.window_px must be a multiple of {multiple} for this generator")
        spacing = trained_pixel_spacing_mm(meta)
        if spacing and self.model_spacing and spacing != self.model_spacing:
            warnings.warn(
                f"{path}: the generator was trained at {list(spacing)} mm and the segmentor at "
                f"{list(self.model_spacing)} mm", McGenRefWarning, stacklevel=3,
            )
        assert self.model is not None
        self.refiner = Refiner(self.model, generator, self.config.tt_gpr, self.device,
                               self.autocast, contract=contract)
        self.generator_info = {
            "name": meta.get("name", Path(meta["path"]).name),
            "path": str(path),
            "sha256": meta["weights"]["sha256"],
        }

    def _read_contract(self, path: Path) -> None:
        """The conventions the model was trained with (its :class:`SegmentorContract`)."""
        assert self.contract is not None
        self.model_spacing = self.contract.pixel_spacing_mm
        self.percentiles = self.contract.intensity_percentiles
        if self.model_spacing is None:
            warnings.warn(
                f"{path}: the model records no single training pixel spacing; images are "
                "segmented at their own spacing", McGenRefWarning, stacklevel=3,
            )
        multiple = self.contract.size_multiple
        if self.config.window_px % multiple:
            raise ConfigError(f"window_px must be a multiple of {multiple} for this model")

    def _threshold(self) -> float:
        """The explicit threshold, else the operating point chosen for the method."""
        if self.config.threshold is not None:
            return float(self.config.threshold)
        if self.config.method == "model":
            assert self.contract is not None
            return self.contract.operating_point.threshold
        if self.config.classical_threshold is not None:
            return float(self.config.classical_threshold)
        # the classical operating point is chosen with the shipped model's (model card)
        from mcgenref.models.checkpoint import read_model_meta, segmentor_contract

        shipped = segmentor_contract(read_model_meta(default_model_path()))
        if shipped.operating_point.classical_threshold is None:
            raise InputError(f"{default_model_path()}: the shipped model records no "
                             "'operating_point.classical_threshold'")
        return shipped.operating_point.classical_threshold

    def settings(self) -> dict[str, Any]:
        """What determines the outputs (besides the input file): compared on reruns."""
        return {
            "software_version": mcgenref.__version__,
            "method": self.config.method,
            "model_sha256": self.model_info["sha256"],
            "generator_sha256": self.generator_info["sha256"] if self.generator_info else None,
            "threshold": self.threshold,
            "pixel_spacing_override_mm": (
                None if self.pixel_spacing_mm is None else list(np.broadcast_to(
                    np.asarray(self.pixel_spacing_mm, dtype=float), (2,)).tolist())
            ),
            "config": {k: v for k, v in to_dict(self.config).items()
                       if k not in OUTPUT_ONLY_FIELDS},
        }

    def _model_prob(
        self, image: np.ndarray, region: np.ndarray, spacing: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        target = self.model_spacing or spacing
        zoom = zoom_factors(spacing, target)
        work = resample(image, zoom, order=1).astype(np.float32, copy=False)
        work_region = resample(region.view(np.uint8), zoom, order=0) > 0
        win = self.config.window_px
        plan = None
        if self.refiner is None and min(work.shape) >= win and work_region.any():
            # the windows first: only their bounding box is filled (TT-GPR reads elsewhere)
            plan = select_windows(work_region, win, self.config.overlap,
                                  self.config.window_context_px)
            box = tuple(slice(min(s[a].start for s in plan.windows),
                              max(s[a].stop for s in plan.windows)) for a in (0, 1))
            work = fill_outside(work, work_region, within=(box[0], box[1]))
        else:
            work = fill_outside(work, work_region)
        assert self.model is not None
        pad = roi_padding(work.shape, win) if self.config.roi else ((0, 0), (0, 0))
        if any(any(p) for p in pad):
            # a crop smaller than a window: mirrored tissue around it, not a flat edge
            work = reflect_pad(work, pad)
            work_region = np.pad(work_region, pad, mode="constant")
        result = sliding_window_logits(
            work, work_region, self.model, win, self.config.overlap,
            self.batch_size, self.device, self.autocast, self.config.window_context_px,
            plan=plan,
        )
        logits = result.logits
        model_uncertainty: np.ndarray | None = None
        refine_info: dict[str, Any] = {}
        if self.refiner is not None:
            # before the padding is cut off: a crop smaller than a refinement window is refined
            # in its mirrored context, as it was segmented (on the bare crop no window fits);
            # the padding is outside ``work_region``, so it gets no seed and is not changed
            refined = self.refiner.refine(work, work_region, logits, target)
            logits, refine_info = refined.logits, refined.info
            model_uncertainty = refined.uncertainty
        if any(any(p) for p in pad):
            (top, bottom), (left, right) = pad

            def unpad(a: np.ndarray) -> np.ndarray:
                return a[top: a.shape[0] - bottom, left: a.shape[1] - right]

            logits, work, work_region = unpad(logits), unpad(work), unpad(work_region)
            if model_uncertainty is not None:
                model_uncertainty = unpad(model_uncertainty)
        uncertainty = (None if model_uncertainty is None
                       else to_input_grid(model_uncertainty, region, 0.5))
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, np.float32(-60.0), np.float32(60.0))))
        prob = to_input_grid(prob, region, 1.0)
        info = {
            "model_pixel_spacing_mm": list(target),
            "model_grid_shape": list(work.shape),
            "windows": result.n_windows,
            "windows_total": result.n_windows_total,
            "network_s": round(result.network_s, 4),
        }
        if self.config.roi:
            info["roi_padding_px"] = [list(p) for p in pad]
        if self.refiner is not None:
            info["tt_gpr"] = {"generator": self.generator_info, **refine_info}
        return prob, uncertainty, info

    def segment(self, path: str | Path, stem: str | None = None) -> SegmentationResult:
        """Segment one image file (see the module docstring): :meth:`prepare` + :meth:`detect`."""
        return self.detect(self.prepare(path, stem))

    def prepare(self, path: str | Path, stem: str | None = None) -> PreparedImage:
        """Steps 1-2 (read, breast region, intensity normalisation): no model, no device.

        With ``config.roi`` the region is the whole crop and the intensity rule is
        :func:`fit_roi_normalization`.

        Safe to run in another thread while :meth:`detect` runs the previous image, which is
        how :mod:`mcgenref.inference.batch` keeps the device busy.
        """
        path = Path(path)
        t0 = time.perf_counter()
        raw, meta = read_image(path, pixel_spacing_mm=self.pixel_spacing_mm)
        return self.prepare_read(path, raw, meta, stem, read_s=time.perf_counter() - t0,
                                 reuse_raw=True)

    def prepare_read(self, path: Path, raw: np.ndarray, meta: ImageMeta, stem: str | None = None,
                     read_s: float = 0.0, reuse_raw: bool = False) -> PreparedImage:
        """Step 2 of :meth:`prepare` on an image already read (``raw, meta`` of
        :func:`mcgenref.io.read_image`, which took ``read_s`` seconds): how
        :class:`mcgenref.inference.model_choice.ModelSelector` reads a file once, then picks
        the model by the spacing read.

        ``reuse_raw``: the caller is done with ``raw``, which then becomes the normalised
        image (no second full-size array; a 70 um full field is 54 MB in float32).
        """
        timings: dict[str, float] = {"read_s": read_s}
        t1 = time.perf_counter()
        spacing = (float(meta.pixel_spacing_mm[0]), float(meta.pixel_spacing_mm[1]))
        if self.config.roi:
            # a crop inside the breast: every pixel is searched, no skin to keep away from, and
            # no chest wall to orient a SEG by (chest_wall_left None: no derived orientation)
            region = np.ones(raw.shape, dtype=bool)
            norm = fit_roi_normalization(raw, meta)
            image = norm.apply(raw, in_place=reuse_raw)
            timings["preprocess_s"] = time.perf_counter() - t1
            return PreparedImage(
                path=path, stem=stem or path.stem, image=image, region=region, spacing=spacing,
                image_meta=meta, normalization=roi_normalization_record(norm), timings=timings,
            )
        breast = segment_breast(raw, meta)
        # segment_breast leaves the pectoral muscle out of ``breast``; put it back if asked to
        region = breast.breast if self.config.exclude_pectoral else breast.breast | breast.pectoral
        if not region.any():
            raise InputError(f"{path}: no breast region found")
        norm = fit_normalization(raw, region, *self.percentiles)
        # the region is this call's own array (segment_breast's mask or a union made here)
        region = inside_skin_margin(region, spacing, self.config.skin_margin_mm, in_place=True)
        if not region.any():
            raise InputError(f"{path}: no breast region left inside the skin margin")
        image = norm.apply(raw, in_place=reuse_raw)
        timings["preprocess_s"] = time.perf_counter() - t1
        return PreparedImage(
            path=path, stem=stem or path.stem, image=image, region=region, spacing=spacing,
            image_meta=meta, normalization=norm.to_dict(), timings=timings,
            chest_wall_left=bool(breast.chest_wall_left),
        )

    def detect(self, prepared: PreparedImage) -> SegmentationResult:
        """Steps 3-4 on a :meth:`prepare`-d image: probability map, MCs, clusters, record."""
        path, image, region, spacing = prepared.path, prepared.image, prepared.region, prepared.spacing
        meta = prepared.image_meta
        timings = dict(prepared.timings)
        t2 = time.perf_counter()
        extra: dict[str, Any] = {}
        uncertainty = None
        if self.config.method == "model":
            prob, uncertainty, extra = self._model_prob(image, region, spacing)
        else:
            score = classical_score(fill_outside(image, region), spacing, self.config.classical)
            prob = np.where(region, score, 0.0)
            prob = prob.astype(np.float32)
        timings["detect_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        detections = find_calcifications(prob, region, spacing, self.threshold, self.config.cluster_rule,
                                         self.config.peak_rule)
        timings["postprocess_s"] = time.perf_counter() - t3
        record = PredictionMeta(
            software=f"mcgenref {mcgenref.__version__}",
            input=path.name,
            method=self.config.method,
            model=self.model_info,
            refine=self.config.refine,
            generator=self.generator_info,
            settings=self.settings(),
            write_seg=self.config.write_seg,
            pixel_spacing_mm=spacing,
            pixel_spacing_source=meta.spacing_source,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            threshold=self.threshold,
            normalization=prepared.normalization,
            image=ImageRecord(
                format=meta.format,
                photometric_interpretation=meta.photometric_interpretation,
                bits_stored=meta.bits_stored,
                inverted=meta.inverted,
                presentation_intent=meta.presentation_intent,
                laterality=meta.laterality,
                view=meta.view,
                warnings=tuple(meta.warnings),
            ),
            breast_area_mm2=round(float(region.sum()) * spacing[0] * spacing[1], 1),
            n_calcifications=len(detections.mcs),
            n_clusters=len(detections.clusters),
            detector=extra,
            timings={k: round(v, 4) for k, v in timings.items()},
        )
        return SegmentationResult(
            stem=prepared.stem, image=image, region=region, prob=prob,
            detections=detections, meta=record,
            source_path=path if meta.format == "dicom" else None,
            uncertainty=uncertainty,
            chest_wall_left=prepared.chest_wall_left,
        )


def _by_rows(encode: Callable[[np.ndarray], np.ndarray], values: np.ndarray,
             rows: int = 64) -> np.ndarray:
    """``encode(values)`` for an elementwise ``encode``, a block of ``rows`` rows at a time: its
    temporaries stay in cache (a full-field map's are 54 MB each, and fresh memory costs)."""
    out: np.ndarray | None = None
    for r0 in range(0, values.shape[0], rows):
        block = encode(values[r0 : r0 + rows])
        if out is None:
            out = np.empty(values.shape, dtype=block.dtype)
        out[r0 : r0 + rows] = block
    return encode(values) if out is None else out


def write_outputs(result: SegmentationResult, out_dir: Path,
                  write_seg: bool | None = None) -> dict[str, float]:
    """Write one image's files atomically, ``<stem>_meta.json`` last; returns timings.

    ``write_seg``: write ``<stem>_seg.dcm`` for a DICOM input; ``None``: as the Segmenter's
    ``SegmentConfig.write_seg`` (recorded in ``result.meta.write_seg``).
    """
    meta = result.meta
    if write_seg is None:
        write_seg = meta.write_seg
    t0 = time.perf_counter()
    stem = result.stem
    spacing = meta.pixel_spacing_mm
    assert spacing is not None and meta.settings is not None

    def path(suffix: str) -> Path:
        return output_path(out_dir, stem, suffix)

    # full-field maps are large: fast zlib level (lossless all the same)
    write_png_atomic(path(PROB_SUFFIX), _by_rows(encode_prob, result.prob), compress_level=1)
    write_png_atomic(path(MASK_SUFFIX), _by_rows(encode_mask, result.detections.mask),
                     compress_level=1)
    write_bytes_atomic(path(CALCIFICATIONS_SUFFIX), csv_bytes(result.detections.mcs, CSV_COLUMNS))
    det = result.detections
    described = describe_clusters(det.mcs, det.clusters, det.labels, spacing)  # type: ignore[arg-type]
    write_json_atomic(path(CLUSTERS_SUFFIX), {
        "rule": {
            **meta.settings["config"]["cluster_rule"],
            "description": ClusterRule.DESCRIPTION,
        },
        "descriptor_rule": DESCRIPTOR_RULE,
        "pixel_spacing_mm": list(spacing),
        "clusters": [dict(cl, descriptors=d) for cl, d in zip(det.clusters, described)],
    })
    overlay = render_overlay_indexed(result.image, result.region, result.detections, spacing)
    write_bytes_atomic(path(OVERLAY_SUFFIX), palette_png_bytes(overlay, overlay_palette()))
    write_png_atomic(path(BREAST_SUFFIX), _by_rows(encode_mask, result.region), compress_level=1)
    if result.uncertainty is not None:
        # 2 x the spread: the largest possible standard deviation of probabilities is 0.5
        write_png_atomic(path(UNCERTAINTY_SUFFIX),
                         _by_rows(lambda u: encode_prob(2.0 * u), result.uncertainty),
                         compress_level=1)
    if write_seg and meta.image.format == "dicom":
        from mcgenref.io.dicom_seg import seg_bytes

        if result.source_path is None:
            raise InputError(f"{stem}: the DICOM source path is needed to write its SEG")
        model = meta.model or {}
        algorithm = {
            "name": model["name"],
            "version": mcgenref.__version__,
            "model_sha256": model.get("sha256"),
            "method": meta.method,
            "threshold": meta.threshold,
        }
        write_bytes_atomic(path(SEG_SUFFIX),
                           seg_bytes(result.source_path, result.detections.mask, algorithm,
                                     laterality=meta.image.laterality, view=meta.image.view,
                                     chest_wall_left=result.chest_wall_left))
    else:
        remove_stale(path(SEG_SUFFIX))  # a SEG of an earlier mask would mislead
    timings = dict(meta.timings, write_s=round(time.perf_counter() - t0, 4))
    write_meta(out_dir, stem, dataclasses.replace(meta, timings=timings))
    return {"write_s": time.perf_counter() - t0}


def is_done(out_dir: Path, stem: str, settings: dict[str, Any],
            write_seg: bool = True) -> bool | None:
    """True: finished with these settings; False: finished with others; None: not finished
    (no record, an unreadable one, or a file missing: the image is simply redone).

    ``write_seg``: whether a DICOM input's ``<stem>_seg.dcm`` is required.
    """
    try:
        previous = read_meta(out_dir, stem)
    except InputError:
        return None
    if previous.settings != json.loads(json.dumps(settings)):
        return False
    return True if is_complete(out_dir, stem, previous, write_seg) else None
