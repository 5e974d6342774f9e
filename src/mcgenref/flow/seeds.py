"""Seeds: the sparse condition of the generator (METHOD sections 4 and 5, step 2).

A seed is one (possible) MC: a sub-pixel centre ``(row, col)`` in pixels, a size (largest
diameter, mm) and a ``strength`` in [0, 1] (1 for a known MC; the peak probability for a
candidate found in a segmentor's output). Seeds come either from synthesis records
(:func:`seeds_from_records`, training) or from a segmentor's output (TT-GPR, and a generator
trained on TT-GPR's conditions): :func:`find_seeds` applies the rule a :class:`SeedConfig`
names, either ``"probability"`` (:func:`seeds_from_probability`: maxima of ``sigmoid(z)``
above ``min_prob``) or ``"logit"`` (:func:`seeds_from_logits`: maxima of the logits ``z``
above ``min_logit``, at most ``max_per_tile`` per ``tile_px`` tile). :func:`render_seed_map`
turns seeds into the seed map fed to the generator.

Why a logit rule: a trained segmentor's probability is nearly binary, so the MCs it missed
sit at ``p < 0.05`` where a probability threshold never reaches, while in logit space they
still stand out from the background's maxima (docs/tt_gpr.md, seed coverage).

Everything that is a length in the world is in mm and converted per axis with
``spacing_mm = (row_spacing, col_spacing)``, so anisotropic pixels are handled right; centres
follow the project convention (``x`` = column, ``y`` = row, pixel centres at integers).
Pure numpy / scipy, deterministic, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import local_maxima

__all__ = [
    "TT_GPR_SEEDS",
    "Seed",
    "SeedConfig",
    "render_seed_map",
    "find_seeds",
    "seeds_from_logits",
    "seeds_from_probability",
    "seeds_from_records",
]

#: the seed rules :func:`find_seeds` knows
SEED_RULES = ("probability", "logit")

#: Blobs are cut at this many sigmas: exp(-4^2 / 2) = 3e-4 of the amplitude, below anything
#: the network can tell from zero, and the window stays small (local rendering).
_TRUNCATE_SIGMAS = 4.0


@dataclass(frozen=True)
class SeedConfig:
    """How seeds are found and drawn.

    Attributes:
        nms_radius_mm: candidates closer than this (centre to centre, mm) are one seed. 0.5 mm
            is about the size of a typical MC: two maxima nearer than that are one MC's
            texture, while the MCs of a cluster are usually further apart.
        min_prob: local maxima of the probability below this are not seeds. Low on purpose
            (0.3, under the 0.5 decision threshold): TT-GPR exists to recover MCs the
            segmentor half-saw, and the generator and surrogates decide later.
        blob_sigma_scale: a seed's blob has ``sigma = size_mm * blob_sigma_scale`` (mm). 0.5
            makes the blob's 1-sigma contour the MC's outline (diameter = 2 sigma = size).
        min_sigma_mm: lower bound of the blob sigma (mm), so that a tiny MC still covers a
            few pixels at the usual 0.05-0.1 mm spacing and the network can see it.
        size_range_mm: sizes estimated from a probability map are clipped to this range
            (mm); it spans the MCs the synthesis draws, and keeps a merged blob of several
            MCs or a one-pixel speck from giving an absurd seed.
        rule: how :func:`find_seeds` finds seeds in a segmentor's logits: ``"probability"``
            (maxima of ``sigmoid(z)`` >= ``min_prob``) or ``"logit"`` (maxima of ``z`` >=
            ``min_logit``, at most ``max_per_tile`` per tile).
        min_logit: the logit rule's threshold on a maximum's logit.
        max_per_tile: the logit rule keeps at most this many maxima (strongest first, after
            NMS) in each ``tile_px`` x ``tile_px`` tile of the image (tiles from the top-left
            corner): a bound on the cost per area where the segmentor is unsure everywhere.
            ``None``: no bound.
        tile_px: side of those tiles (pixels of the map), TT-GPR's window.
    """

    nms_radius_mm: float = 0.5
    min_prob: float = 0.3
    blob_sigma_scale: float = 0.5
    min_sigma_mm: float = 0.1
    size_range_mm: tuple[float, float] = (0.1, 1.0)
    rule: str = "probability"
    min_logit: float = -8.0
    max_per_tile: int | None = 8
    tile_px: int = 64

    def __post_init__(self) -> None:
        if not self.nms_radius_mm >= 0.0:
            raise ValueError(f"nms_radius_mm must be >= 0, got {self.nms_radius_mm}")
        if not 0.0 < self.min_prob <= 1.0:
            raise ValueError(f"min_prob must be in (0, 1], got {self.min_prob}")
        if not self.blob_sigma_scale > 0.0:
            raise ValueError(f"blob_sigma_scale must be > 0, got {self.blob_sigma_scale}")
        if not self.min_sigma_mm > 0.0:
            raise ValueError(f"min_sigma_mm must be > 0, got {self.min_sigma_mm}")
        low, high = self.size_range_mm
        if not 0.0 < low <= high:
            raise ValueError(
                f"size_range_mm must satisfy 0 < low <= high, got {self.size_range_mm}"
            )
        if self.rule not in SEED_RULES:
            raise ValueError(f"rule must be one of {list(SEED_RULES)}, got {self.rule!r}")
        if not math.isfinite(self.min_logit):
            raise ValueError(f"min_logit must be finite, got {self.min_logit}")
        if self.max_per_tile is not None and self.max_per_tile < 1:
            raise ValueError(f"max_per_tile must be >= 1 (or null), got {self.max_per_tile}")
        if self.tile_px < 1:
            raise ValueError(f"tile_px must be >= 1, got {self.tile_px}")


#: TT-GPR's seed rule (docs/tt_gpr.md, "Seeds where the misses are"): maxima of the logits
#: ``z >= -8``, at most 8 per 64 px tile. Defined here, below both users, because a generator
#: trained on mined seeds (:mod:`mcgenref.training.generator`, ``seed_source="mined"``) must
#: mine them with the rule TT-GPR seeds with (:mod:`mcgenref.inference.refine`).
TT_GPR_SEEDS = SeedConfig(rule="logit", min_logit=-8.0, max_per_tile=8, tile_px=64)


@dataclass(frozen=True)
class Seed:
    """One seed: centre in pixels (sub-pixel, ``row`` = y, ``col`` = x), size (mm), strength."""

    row: float
    col: float
    size_mm: float
    strength: float  # in [0, 1]: 1 for a known MC, the peak probability for a candidate

    def __post_init__(self) -> None:
        if not self.size_mm > 0.0:
            raise ValueError(f"size_mm must be > 0, got {self.size_mm}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float]:
    if len(spacing_mm) != 2 or not all(s > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be (row, col) > 0, got {spacing_mm}")
    return float(spacing_mm[0]), float(spacing_mm[1])


def seeds_from_records(mcs: list[dict[str, Any]], only_visible: bool = True) -> list[Seed]:
    """Seeds of the MCs of a synthesis record (``record["mcs"]``), in record order, strength 1.

    ``only_visible``: skip MCs below the visibility threshold (they are not in the mask
    either, so the generator is not taught to draw MCs the segmentor is told are absent).
    """
    return [
        Seed(row=float(m["y_px"]), col=float(m["x_px"]), size_mm=float(m["size_mm"]), strength=1.0)
        for m in mcs
        if m["visible"] or not only_visible
    ]


def seeds_from_probability(
    prob: np.ndarray,
    spacing_mm: Sequence[float],
    config: SeedConfig,
    region: np.ndarray | None = None,
) -> list[Seed]:
    """Seeds at the local maxima of an MC probability map.

    Args:
        prob: float ``[H, W]`` in [0, 1] (``sigmoid`` of the segmentor logits).
        spacing_mm: ``(row, col)`` pixel spacing in mm.
        config: thresholds and radii.
        region: optional bool ``[H, W]``; only maxima inside it become seeds (the candidate
            region being refined). Sizes still see the whole map.

    Returns:
        Seeds, strongest first; equal strengths in raster order of their peak.

    Steps:

    1. Maxima: plateaus of ``prob`` higher than all their 8-neighbours
       (:func:`skimage.morphology.local_maxima`); a plateau is one candidate at its centroid,
       which matters because a saturated sigmoid gives flat tops of exactly 1.0. A one-pixel
       maximum is refined per axis by the vertex of the parabola through it and its two
       neighbours (sub-pixel).
    2. ``peak >= min_prob``, then greedy non-maximum suppression: a candidate is dropped if
       its centre is closer than ``nms_radius_mm`` (Euclidean, in mm) to a stronger kept one.
    3. Size: the connected (8-) component of ``prob >= peak / 2`` holding the peak, inside a
       window of half-width ``size_range_mm[1]`` mm and without the pixels nearer (in mm) to
       another kept seed, so that the MCs of a tight cluster do not share one large
       component; equivalent diameter ``2 sqrt(area / pi)`` in mm, clipped to
       ``size_range_mm``.
    """
    prob = _check_map(prob, "prob", region)
    sr, sc = _check_spacing(spacing_mm)
    return _seeds_at_maxima(prob, prob, prob, (sr, sc), config, region, config.min_prob, None)


def seeds_from_logits(
    logits: np.ndarray,
    spacing_mm: Sequence[float],
    config: SeedConfig,
    region: np.ndarray | None = None,
) -> list[Seed]:
    """Seeds at the local maxima of a segmentor's logits (the ``"logit"`` rule).

    As :func:`seeds_from_probability` with the maxima taken on ``logits`` (float ``[H, W]``;
    not ``sigmoid(logits)``, whose near-binary values flatten every weak candidate to 0) and
    kept where ``z >= config.min_logit``; after NMS, at most ``config.max_per_tile`` seeds,
    strongest first, in each ``config.tile_px`` tile. A seed's strength is ``sigmoid`` of its
    peak logit; its size is measured on ``sigmoid(logits)`` as in
    :func:`seeds_from_probability` (the component of ``p >= p_peak / 2``, which for a weak
    peak is the component of ``z >= z_peak - log 2``).
    """
    z = _check_map(logits, "logits", region)
    sr, sc = _check_spacing(spacing_mm)
    prob = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
    return _seeds_at_maxima(z, prob, prob, (sr, sc), config, region, config.min_logit,
                            config.max_per_tile)


def find_seeds(
    logits: np.ndarray,
    spacing_mm: Sequence[float],
    config: SeedConfig,
    region: np.ndarray | None = None,
) -> list[Seed]:
    """Seeds of a segmentor's logits by ``config.rule``: :func:`seeds_from_probability` on
    ``sigmoid(logits)`` or :func:`seeds_from_logits` on ``logits`` (strongest first)."""
    if config.rule == "logit":
        return seeds_from_logits(logits, spacing_mm, config, region)
    z = np.clip(np.asarray(logits, dtype=np.float64), -60.0, 60.0)
    return seeds_from_probability(1.0 / (1.0 + np.exp(-z)), spacing_mm, config, region)


def _check_map(values: np.ndarray, name: str, region: np.ndarray | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D [H, W], got shape {values.shape}")
    if region is not None and np.shape(region) != values.shape:
        raise ValueError(f"region shape {np.shape(region)} != {name} shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has non-finite values")
    return values


def _seeds_at_maxima(
    score: np.ndarray,
    prob: np.ndarray,
    strength: np.ndarray,
    spacing_mm: tuple[float, float],
    config: SeedConfig,
    region: np.ndarray | None,
    min_score: float,
    per_tile: int | None,
) -> list[Seed]:
    """Steps 1-3 of :func:`seeds_from_probability` on ``score``'s maxima (``>= min_score``),
    sizes on ``prob``, strengths read from ``strength``; ``per_tile``: the logit rule's cap."""
    sr, sc = spacing_mm
    kept = _kept_maxima(score, spacing_mm, config, region, min_score, per_tile)
    centres_mm = np.array([(r * sr, c * sc) for r, c, *_ in kept])
    seeds = []
    for i, (row, col, _peak, raster) in enumerate(kept):
        peak_px = divmod(raster, score.shape[1])
        seeds.append(Seed(
            row=row,
            col=col,
            size_mm=_half_peak_diameter_mm(
                prob, peak_px, float(prob[peak_px]), i, centres_mm, (sr, sc), config
            ),
            strength=float(np.clip(strength[peak_px], 0.0, 1.0)),
        ))
    return seeds


def seed_positions(
    logits: np.ndarray,
    spacing_mm: Sequence[float],
    config: SeedConfig,
    region: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """The ``(row, col)`` of the seeds :func:`find_seeds` gives for the same arguments, in
    its order (strongest first), without measuring their sizes: what planning needs, at a
    fraction of the cost on a whole image (step 3 of :func:`seeds_from_probability` is most
    of it there)."""
    spacing = _check_spacing(spacing_mm)
    if config.rule == "logit":
        z = _check_map(logits, "logits", region)
        kept = _kept_maxima(z, spacing, config, region, config.min_logit, config.max_per_tile)
    else:  # as find_seeds: the clipped logits' sigmoid
        z = np.clip(np.asarray(logits, dtype=np.float64), -60.0, 60.0)
        prob = _check_map(1.0 / (1.0 + np.exp(-z)), "prob", region)
        kept = _kept_maxima(prob, spacing, config, region, config.min_prob, None)
    return [(row, col) for row, col, *_ in kept]


def _kept_maxima(
    score: np.ndarray,
    spacing_mm: tuple[float, float],
    config: SeedConfig,
    region: np.ndarray | None,
    min_score: float,
    per_tile: int | None,
) -> list[tuple[float, float, float, int]]:
    """Steps 1-2 of :func:`seeds_from_probability` (and the logit rule's cap per tile):
    ``(row, col, peak, raster index of the peak)`` of each kept maximum, strongest first."""
    sr, sc = spacing_mm
    if score.size == 0:
        return []
    peaks = local_maxima(score, connectivity=2, allow_borders=True)
    peaks &= score >= min_score
    if region is not None:
        peaks &= np.asarray(region, dtype=bool)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []

    # (-peak, raster index of its first pixel, row, col): sorting gives the documented order
    candidates: list[tuple[float, int, float, float]] = []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = np.nonzero(labels[sl] == index)
        rows = rows + sl[0].start
        cols = cols + sl[1].start
        peak = float(score[rows[0], cols[0]])  # a plateau: every pixel has the same value
        if rows.size == 1:
            r, c = int(rows[0]), int(cols[0])
            row = r + _parabola_offset(score[max(r - 1, 0) : r + 2, c])
            col = c + _parabola_offset(score[r, max(c - 1, 0) : c + 2])
        else:
            row, col = float(rows.mean()), float(cols.mean())
        raster = int(rows[0]) * score.shape[1] + int(cols[0])  # nonzero() is in raster order
        candidates.append((-peak, raster, float(row), float(col)))
    candidates.sort(key=lambda c: (c[0], c[1]))

    kept: list[tuple[float, float, float, int]] = []  # (row, col, peak, raster index)
    r2 = config.nms_radius_mm**2
    for neg_peak, raster, row, col in candidates:
        if all(((row - kr) * sr) ** 2 + ((col - kc) * sc) ** 2 >= r2 for kr, kc, *_ in kept):
            kept.append((row, col, -neg_peak, raster))
    if per_tile is not None:
        count: dict[tuple[int, int], int] = {}
        capped = []
        for item in kept:  # strongest first: the first per_tile of each tile stay
            r, c = divmod(item[3], score.shape[1])
            tile = (r // config.tile_px, c // config.tile_px)
            if count.get(tile, 0) < per_tile:
                count[tile] = count.get(tile, 0) + 1
                capped.append(item)
        kept = capped
    return kept


def _parabola_offset(line: np.ndarray) -> float:
    """Sub-pixel offset of the vertex of the parabola through three samples (0 at a border)."""
    if line.size != 3:
        return 0.0
    left, mid, right = (float(v) for v in line)
    curvature = left - 2.0 * mid + right
    if curvature >= 0.0:  # not a strict maximum along this axis
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def _half_peak_diameter_mm(
    prob: np.ndarray,
    peak_px: tuple[int, int],
    peak: float,
    own: int,
    centres_mm: np.ndarray,
    spacing_mm: tuple[float, float],
    config: SeedConfig,
) -> float:
    sr, sc = spacing_mm
    low, high = config.size_range_mm
    h, w = prob.shape
    pr, pc = peak_px  # a pixel of the maximum itself (a plateau's centroid may lie off it)
    hr, hc = math.ceil(high / sr), math.ceil(high / sc)
    r0, r1 = max(pr - hr, 0), min(pr + hr + 1, h)
    c0, c1 = max(pc - hc, 0), min(pc + hc + 1, w)
    above = prob[r0:r1, c0:c1] >= 0.5 * peak
    # Voronoi split with the other kept seeds (distances in mm)
    rr = (np.arange(r0, r1, dtype=np.float64) * sr)[:, None]
    cc = (np.arange(c0, c1, dtype=np.float64) * sc)[None, :]
    d_own = (rr - centres_mm[own, 0]) ** 2 + (cc - centres_mm[own, 1]) ** 2
    for j, (yr, xc) in enumerate(centres_mm):
        near = abs(yr - centres_mm[own, 0]) <= 2 * high and abs(xc - centres_mm[own, 1]) <= 2 * high
        if j != own and near:
            above &= d_own <= (rr - yr) ** 2 + (cc - xc) ** 2
    labels, _ = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    label = labels[pr - r0, pc - c0]
    # label 0 only if a nearer seed claims the peak pixel itself: count that one pixel
    area_mm2 = float((labels == label).sum()) * sr * sc if label > 0 else sr * sc
    return float(np.clip(2.0 * math.sqrt(area_mm2 / math.pi), low, high))


def render_seed_map(
    seeds: Sequence[Seed],
    shape: tuple[int, int],
    spacing_mm: Sequence[float],
    config: SeedConfig,
) -> np.ndarray:
    """The seed map: float32 ``[H, W]`` in [0, 1], the pixel-wise **max** of one Gaussian per seed.

    A seed's blob is ``strength * exp(-(dy^2 / sy^2 + dx^2 / sx^2) / 2)`` with ``dy``, ``dx``
    the pixel-centre offsets from the sub-pixel centre and ``sy = sigma_mm / row_spacing``,
    ``sx = sigma_mm / col_spacing`` (``sigma_mm = max(size_mm * blob_sigma_scale,
    min_sigma_mm)``), so the blob is round in mm on anisotropic pixels. Each blob is drawn
    in its own window of +-4 sigma (cost O(seeds * blob area), not O(seeds * H * W)).

    Max rather than sum: each blob's peak keeps its seed's strength, and the map stays in
    [0, 1] however close the MCs of a cluster are. A sum would turn two overlapping weak
    candidates into one confident MC, and tie the map's scale to the cluster density.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 0 or w < 0:
        raise ValueError(f"shape must be non-negative, got {shape}")
    sr, sc = _check_spacing(spacing_mm)
    seed_map = np.zeros((h, w), dtype=np.float32)
    for seed in seeds:
        sigma_mm = max(seed.size_mm * config.blob_sigma_scale, config.min_sigma_mm)
        sy, sx = sigma_mm / sr, sigma_mm / sc
        r0 = max(math.floor(seed.row - _TRUNCATE_SIGMAS * sy), 0)
        r1 = min(math.ceil(seed.row + _TRUNCATE_SIGMAS * sy) + 1, h)
        c0 = max(math.floor(seed.col - _TRUNCATE_SIGMAS * sx), 0)
        c1 = min(math.ceil(seed.col + _TRUNCATE_SIGMAS * sx) + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue  # entirely outside the image
        gy = np.exp(-0.5 * ((np.arange(r0, r1) - seed.row) / sy) ** 2)
        gx = np.exp(-0.5 * ((np.arange(c0, c1) - seed.col) / sx) ** 2)
        blob = (seed.strength * np.outer(gy, gx)).astype(np.float32)
        np.maximum(seed_map[r0:r1, c0:c1], blob, out=seed_map[r0:r1, c0:c1])
    return seed_map
