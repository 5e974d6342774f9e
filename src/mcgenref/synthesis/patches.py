"""Negative backgrounds: patches from inside the breast of normal mammograms.

Each negative image is read once (:func:`mcgenref.io.read_image`), its breast region found
(:func:`mcgenref.io.segment_breast`, pectoral muscle excluded by default), its intensity
normalised inside the breast (:class:`mcgenref.io.Normalization`: 1st/99th percentile ->
0/1), optionally resampled to a canonical pixel spacing, and cropped to the breast's bounding
box. Patches are then cut where at least ``min_breast_fraction`` of the patch lies inside the
breast, so that no patch shows air, labels or the film border.

Memory: each prepared image is kept as float32 (cropped to the breast) plus its list of valid
patch corners (int32 pairs, about as large as the image): about 4 MB per mini-MIAS image at
0.2 mm, 0.6 GB for the 152 normals. For large FFDM collections pass fewer images or a coarser
``target_spacing_mm``.

Preparation is deterministic, so a patch is identified by ``(source path, row, col)`` on the
prepared grid, which is what a sample record stores (see :mod:`mcgenref.synthesis.sample`).

Hard negatives (:class:`HardNegativePatchSampler`): patches of the same prepared images cut
around given centres, the places where a segmentor found false candidates on a normal
mammogram (``recipes/mine_hard_negatives.py`` mines them; :func:`read_hard_negatives` reads its
file). Each such patch holds its centre at least ``centre_margin_px`` inside the patch, so
the network sees the tissue around the false candidate, and otherwise obeys the same rule
(>= ``min_breast_fraction`` breast).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import InputError, McGenRefWarning
from mcgenref.io.resample import resample


@dataclass(frozen=True)
class PatchSamplerConfig:
    """How negative patches are cut.

    Attributes:
        target_spacing_mm: resample every negative to this square pixel spacing (mm) before
            cutting patches; ``None`` keeps each image's own spacing (sizes in the synthesis
            are in mm either way, so both are physically consistent). Resampling lets one
            model see one pixel size; keeping the native spacing lets it see many.
        min_breast_fraction: a patch is used only if at least this fraction of its pixels is
            inside the breast. 0.95 keeps the skin line and air out of almost every patch
            while still reaching the periphery of small breasts.
        exclude_pectoral: treat the pectoral muscle (MLO views) as outside the breast. The
            muscle is not where MCs occur and its bright uniform texture differs from the
            fibroglandular background the segmentor must learn.
        low_percentile, high_percentile: the intensity normalisation inside the breast.
    """

    target_spacing_mm: float | None = None
    min_breast_fraction: float = 0.95
    exclude_pectoral: bool = True
    low_percentile: float = 1.0
    high_percentile: float = 99.0

    def __post_init__(self) -> None:
        if self.target_spacing_mm is not None and not 0.01 <= self.target_spacing_mm <= 1.0:
            raise ValueError("target_spacing_mm must be between 0.01 and 1.0 mm")
        if not 0.0 < self.min_breast_fraction <= 1.0:
            raise ValueError("min_breast_fraction must be in (0, 1]")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError("need 0 <= low_percentile < high_percentile <= 100")


@dataclass(frozen=True)
class PreparedNegative:
    """One negative image on the working grid (normalised, resampled, cropped)."""

    source_path: str
    image: np.ndarray  # float32 [row, col], normalised inside the breast
    breast: np.ndarray  # bool, same shape
    spacing_mm: tuple[float, float]  # (row, col) of the working grid
    crop_origin: tuple[int, int]  # (row, col) of the crop on the resampled grid
    scale: tuple[float, float]  # working pixels per original pixel (row, col)
    normalization: dict[str, float]
    valid_origins: np.ndarray  # int32 (N, 2): top-left corners of usable patches


def prepare_negative(
    path: str | Path,
    patch_size_px: int,
    config: PatchSamplerConfig,
    pixel_spacing_mm: float | tuple[float, float] | None = None,
) -> PreparedNegative:
    """Read one normal mammogram and put it on the working grid (see module docstring)."""
    from mcgenref.io import fit_normalization, read_image, segment_breast

    image, meta = read_image(path, fallback_spacing_mm=pixel_spacing_mm)
    region = segment_breast(image, meta)
    # segment_breast leaves the pectoral muscle out of ``breast``; put it back if asked to
    breast = region.breast if config.exclude_pectoral else region.breast | region.pectoral
    if not breast.any():
        raise InputError(f"{path}: no breast region found")
    norm = fit_normalization(image, breast, config.low_percentile, config.high_percentile)
    work = norm.apply(image).astype(np.float32)
    spacing = (float(meta.pixel_spacing_mm[0]), float(meta.pixel_spacing_mm[1]))
    zoom = (1.0, 1.0)
    if config.target_spacing_mm is not None:
        zoom = (spacing[0] / config.target_spacing_mm, spacing[1] / config.target_spacing_mm)
        work = resample(work, zoom, order=1).astype(np.float32)
        breast = resample(breast.astype(np.float32), zoom, order=0) > 0.5
        spacing = (config.target_spacing_mm, config.target_spacing_mm)
    rows, cols = np.nonzero(breast)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    work, breast = work[r0:r1, c0:c1], breast[r0:r1, c0:c1]
    origins = _valid_origins(breast, patch_size_px, config.min_breast_fraction)
    return PreparedNegative(
        source_path=str(Path(path).resolve()),
        image=np.ascontiguousarray(work),
        breast=np.ascontiguousarray(breast),
        spacing_mm=spacing,
        crop_origin=(int(r0), int(c0)),
        scale=zoom,
        normalization={"low": float(norm.low), "high": float(norm.high)},
        valid_origins=origins,
    )


def _valid_origins(breast: np.ndarray, size: int, min_fraction: float) -> np.ndarray:
    """Top-left corners of all size x size windows with enough breast inside."""
    h, w = breast.shape
    if h < size or w < size:
        return np.zeros((0, 2), dtype=np.int32)
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(breast, axis=0, dtype=np.int64), axis=1)
    counts = (
        integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    ok = counts >= int(np.ceil(min_fraction * size * size))
    return np.argwhere(ok).astype(np.int32)


class NegativePatchSampler:
    """Draws background patches from the breasts of normal mammograms.

    Args:
        paths: the negative images (files; expand folders with :func:`mcgenref.io.list_images`).
        patch_size_px: patch side on the working grid.
        config: see :class:`PatchSamplerConfig`.
        pixel_spacing_mm: spacing of the negatives where the files record none, one value
            or (row, col); a spacing a file records is used as it is (so PNGs without one and
            DICOMs with one can be mixed).

    Images with no usable patch (breast smaller than a patch) are skipped with a warning;
    if none is usable, :class:`InputError`.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        patch_size_px: int,
        config: PatchSamplerConfig | None = None,
        pixel_spacing_mm: float | tuple[float, float] | None = None,
    ) -> None:
        self.config = config or PatchSamplerConfig()
        self.patch_size_px = int(patch_size_px)
        self.pixel_spacing_mm = pixel_spacing_mm
        self.negatives: list[PreparedNegative] = []
        self._by_path: dict[str, PreparedNegative] = {}
        skipped = []
        for path in paths:
            neg = prepare_negative(path, self.patch_size_px, self.config, pixel_spacing_mm)
            if len(neg.valid_origins) == 0:
                skipped.append(str(path))
                continue
            self.negatives.append(neg)
            self._by_path[neg.source_path] = neg
        if skipped:
            warnings.warn(
                f"{len(skipped)} negative(s) have no breast area large enough for a "
                f"{self.patch_size_px}-pixel patch and are skipped: {', '.join(skipped[:3])}"
                + (" ..." if len(skipped) > 3 else ""),
                McGenRefWarning,
                stacklevel=2,
            )
        if not self.negatives:
            raise InputError(
                f"no negative image has a breast region large enough for a "
                f"{self.patch_size_px}-pixel patch"
            )

    def __len__(self) -> int:
        return len(self.negatives)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A random patch: (image float32, breast bool, source record)."""
        neg = self.negatives[int(rng.integers(len(self.negatives)))]
        row, col = (int(v) for v in neg.valid_origins[int(rng.integers(len(neg.valid_origins)))])
        image, breast = self.cut(neg, row, col)
        return image, breast, self.source_record(neg, row, col)

    def cut(self, neg: PreparedNegative, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.patch_size_px
        return neg.image[row : row + s, col : col + s].copy(), neg.breast[row : row + s, col : col + s].copy()

    def source_record(self, neg: PreparedNegative, row: int, col: int) -> dict[str, Any]:
        """Where a patch came from, on the working grid and on the original image grid."""
        orig_row = (row + neg.crop_origin[0]) / neg.scale[0]
        orig_col = (col + neg.crop_origin[1]) / neg.scale[1]
        return {
            "kind": "negative",
            "path": neg.source_path,
            "row": row,
            "col": col,
            "original_row": round(orig_row, 3),
            "original_col": round(orig_col, 3),
            "spacing_mm": list(neg.spacing_mm),
            "normalization": dict(neg.normalization),
        }

    def patch_from_record(self, source: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The patch a source record names (the image must be one of this sampler's)."""
        neg = self._by_path.get(source["path"])
        if neg is None:
            neg = prepare_negative(
                source["path"], self.patch_size_px, self.config, self.pixel_spacing_mm
            )
            self._by_path[neg.source_path] = neg
        return self.cut(neg, int(source["row"]), int(source["col"]))

    def describe(self) -> dict[str, Any]:
        return {
            "patch_size_px": self.patch_size_px,
            "config": dataclasses.asdict(self.config),
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "negatives": [n.source_path for n in self.negatives],
        }


# --------------------------------------------------------------------------- hard negatives


@dataclass(frozen=True)
class HardNegativeCentre:
    """A place on a normal mammogram to cut a background patch around.

    ``row``, ``col``: pixel position on the ORIGINAL image grid (origin top-left), as in the
    segmentor's ``<stem>_calcifications.csv``; the sampler maps it to its working grid.
    """

    path: str
    row: float
    col: float


def read_hard_negatives(path: str | Path) -> list[HardNegativeCentre]:
    """The centres of a hard-negative file: JSON with ``candidates``, a list of objects with
    ``image`` (the image file), ``row`` and ``col`` (original grid, px); other keys (scores,
    mm positions, provenance) are ignored here. Raises :class:`InputError` for a bad file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        centres = [
            HardNegativeCentre(str(Path(c["image"]).resolve()), float(c["row"]), float(c["col"]))
            for c in record["candidates"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a hard-negative file ({type(exc).__name__}: {exc})") from None
    return centres


class HardNegativePatchSampler:
    """Patches of a :class:`NegativePatchSampler`'s images cut around hard-negative centres.

    Args:
        base: the sampler whose prepared images (and patch size, config) are used.
        centres: where to cut (:func:`read_hard_negatives`); centres on images ``base`` does
            not hold, or with no valid patch around them, are left out (``n_dropped``).
        centre_margin_px: a centre lies at least this many pixels inside its patch (default
            a quarter of the patch side: the centre is in the patch's middle half, so the
            network sees the tissue around it on all sides, not a candidate on the border).

    :meth:`draw` picks a centre uniformly, then uniformly one of the valid patch corners that
    keep it ``centre_margin_px`` inside. It has the same interface as
    :meth:`NegativePatchSampler.draw`, so it can stand in for it in
    :func:`mcgenref.synthesis.sample.generate_sample` (synthetic MCs are still inserted as the
    synthesis config says: the empty fraction applies as configured). Its source records are
    the base sampler's (so :func:`~mcgenref.synthesis.sample.replay_sample` replays them with
    the base sampler) plus ``hard_negative``: the centre on the original grid.

    Raises:
        InputError: no centre is usable.
    """

    def __init__(self, base: NegativePatchSampler, centres: Sequence[HardNegativeCentre],
                 centre_margin_px: int | None = None) -> None:
        self.base = base
        self.patch_size_px = base.patch_size_px
        s = self.patch_size_px
        self.centre_margin_px = s // 4 if centre_margin_px is None else int(centre_margin_px)
        if not 0 <= self.centre_margin_px <= (s - 1) // 2:
            raise ValueError(f"centre_margin_px must be in [0, {(s - 1) // 2}]")
        self._valid: dict[str, np.ndarray] = {}
        # (negative, centre on the original grid, corner box r0, r1, c0, c1 (exclusive ends))
        self._centres: list[tuple[PreparedNegative, tuple[float, float], tuple[int, int, int, int]]] = []
        self.n_dropped = 0
        for centre in centres:
            neg = base._by_path.get(str(Path(centre.path).resolve()))
            box = None if neg is None else self._corner_box(neg, centre)
            if box is None:
                self.n_dropped += 1
                continue
            self._centres.append((neg, (centre.row, centre.col), box))
        if not self._centres:
            raise InputError(
                f"none of the {len(centres)} hard-negative centres has a valid "
                f"{s}-pixel patch around it on the sampler's images"
            )

    def __len__(self) -> int:
        return len(self._centres)

    def _valid_grid(self, neg: PreparedNegative) -> np.ndarray:
        """``grid[r, c]``: the patch with top-left corner (r, c) is valid."""
        grid = self._valid.get(neg.source_path)
        if grid is None:
            s = self.patch_size_px
            h, w = neg.image.shape
            grid = np.zeros((max(0, h - s + 1), max(0, w - s + 1)), dtype=bool)
            grid[neg.valid_origins[:, 0], neg.valid_origins[:, 1]] = True
            self._valid[neg.source_path] = grid
        return grid

    def _corner_box(self, neg: PreparedNegative, centre: HardNegativeCentre) -> tuple[int, int, int, int] | None:
        """The corners whose patch holds ``centre`` ``centre_margin_px`` inside, clipped to
        the valid ones' extent; ``None`` if none of them is valid."""
        s, m = self.patch_size_px, self.centre_margin_px
        # the original grid -> the working grid (the inverse of source_record's mapping)
        row = int(round(centre.row * neg.scale[0])) - neg.crop_origin[0]
        col = int(round(centre.col * neg.scale[1])) - neg.crop_origin[1]
        grid = self._valid_grid(neg)
        r0, r1 = max(0, row - (s - 1 - m)), min(grid.shape[0], row - m + 1)
        c0, c1 = max(0, col - (s - 1 - m)), min(grid.shape[1], col - m + 1)
        if r0 >= r1 or c0 >= c1 or not grid[r0:r1, c0:c1].any():
            return None
        return r0, r1, c0, c1

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A patch around a random centre: (image float32, breast bool, source record)."""
        neg, (orig_row, orig_col), (r0, r1, c0, c1) = self._centres[int(rng.integers(len(self._centres)))]
        corners = np.argwhere(self._valid_grid(neg)[r0:r1, c0:c1])
        dr, dc = corners[int(rng.integers(len(corners)))]
        row, col = r0 + int(dr), c0 + int(dc)
        image, breast = self.base.cut(neg, row, col)
        source = self.base.source_record(neg, row, col)
        source["hard_negative"] = {"original_row": orig_row, "original_col": orig_col}
        return image, breast, source

    def describe(self) -> dict[str, Any]:
        return {
            "centres": len(self._centres),
            "dropped": self.n_dropped,
            "images": len({n.source_path for n, _, _ in self._centres}),
            "centre_margin_px": self.centre_margin_px,
        }
