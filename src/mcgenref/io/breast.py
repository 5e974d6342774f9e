"""Breast and pectoral-muscle masks.

:func:`segment_breast` returns two boolean masks of the image's shape:

* ``breast``: breast tissue where calcifications are searched and where normalisation is
  fitted. It excludes the air, film/detector borders, labels and markers outside the breast,
  a skin margin of ``margin_mm`` (default 2 mm from the threshold contour, i.e. 1-2 mm inside the skin edge; the skin line and the thin periphery carry
  edge artefacts and no useful calcifications) and the pectoral muscle when one is found.
* ``pectoral``: the pectoral muscle of MLO views (all False when not searched or not found).
  It is kept separate so callers can decide; ``breast`` never overlaps it.

Method (all sizes in mm, so 0.05-0.2 mm images behave the same)
---------------------------------------------------------------
1. Block-average to a working grid of about ``work_mm`` (0.6 mm) and smooth with a 0.8 mm
   Gaussian.
2. Threshold between air and tissue: the triangle threshold (foot of the air peak), at least
   5 % of the 1st-99th percentile range above the air (the air of digital images and of these
   scans is ~0, and the painted-over labels of mini-MIAS are a few grey levels), at most half
   way to Otsu's threshold (which on breast-filled images splits fat from dense tissue).
3. The chest-wall side is the image half holding more tissue (orientation conventions vary
   between data sets, so the pixels decide); ``meta.laterality`` breaks near-ties (L -> the
   chest wall is on the left, as displayed).
4. Film borders: lines parallel to the three non-chest-wall image edges that are more than
   90 % foreground are peeled off from the edge inwards (the breast never spans an edge).
5. The largest connected component is kept, holes filled; a morphological opening of radius
   ``3 mm`` then removes thin bridges to labels, markers or strips, and the largest piece is
   kept again.
6. The skin margin: the mask is eroded by ``margin_mm`` using the Euclidean distance in mm
   from the background and from the three non-chest-wall image edges (the breast is cut there
   by the detector/film), never from the chest-wall edge (tissue there is real).
7. The distance map is upsampled bilinearly to full resolution and thresholded, so the mask
   edge is smooth rather than blocky (only the edge's pixels are interpolated: the rest of
   the mask follows from the working grid, see ``_upsample_above``).

Pectoral muscle (``pectoral="auto"``: views containing MLO, or ML/LM; ``"always"``; ``"never"``)
---------------------------------------------------------------------------------------------
In the chest-wall-left orientation, the muscle is a roughly triangular region at the top-left
of the breast whose lower edge is a long, nearly straight intensity drop (muscle -> fat). All
straight lines joining a point of the breast's top row (15-95 % of its width from the chest
wall) to a point of the chest-wall edge (15-90 % of its height) are scored by the mean drop of
intensity across them (derivative along the normal pointing away from the corner, per mm,
relative to the breast's 5-95 % intensity range), over their samples inside the breast (3 mm
from the skin, 5 mm from the chest-wall edge), times sqrt(length inside / breast height) so
that long consistent edges beat short strong ones (lymph nodes, vessels). The best line is
accepted when its score exceeds PECTORAL_MIN_SCORE (0.03): on the FFDM sample the MLO views
score 0.05-0.07; the low-contrast 8-bit mini-MIAS scans score below 0.02 and then get no
pectoral (their breast mask includes the muscle). The muscle is the part of the breast region
on the chest-wall side of the line; ``breast`` excludes it plus ``margin_mm`` beyond the line,
so that the bright muscle edge does not bias normalisation or detection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from mcgenref.errors import InputError
from mcgenref.io.meta import ImageMeta

PectoralMode = Literal["auto", "always", "never"]

#: Working resolution (mm per pixel) of the segmentation.
WORK_MM = 0.6
#: Gaussian smoothing (mm) before thresholding: removes noise, keeps the skin edge. The
#: threshold contour lies up to ~1 mm outside a sharp skin edge because of it; MARGIN_MM
#: is measured from that contour.
SMOOTH_MM = 0.8
#: Skin margin (mm) removed from the breast mask.
MARGIN_MM = 2.0
#: Opening radius (mm): bridges thinner than twice this to labels/markers/strips are cut.
OPEN_MM = 3.0
#: Fraction of a border line that must be foreground for it to be peeled as film border.
STRIP_FRACTION = 0.9
#: Deepest film border that is peeled, as a fraction of the image side.
STRIP_MAX_FRACTION = 0.1
#: Rows of the region narrower than this (mm) at its top/bottom ends that touch the
#: chest-wall image edge (within 5 mm) are film-edge flare of scanned film, not breast; they are trimmed.
NARROW_MM = 25.0
#: Relative brightness (above air, vs the breast median) under which narrow rows are flare.
FLARE_LEVEL = 0.5
#: Minimum pectoral line score (mean relative intensity drop per mm across the line).
PECTORAL_MIN_SCORE = 0.03


@dataclass(frozen=True)
class BreastRegion:
    """Masks of an image, both ``bool`` arrays of the image's shape ``(rows, cols)``.

    ``breast`` excludes air, borders, labels, the skin margin and ``pectoral``;
    ``pectoral`` (the muscle plus the margin beside its edge) is all False when no muscle was
    searched or found; ``breast | pectoral`` has no gap between the two.
    ``chest_wall_left`` says on which side the chest wall was found.
    """

    breast: np.ndarray
    pectoral: np.ndarray
    chest_wall_left: bool = True

    @property
    def area_fraction(self) -> float:
        return float(self.breast.mean())


def _block_mean(image: np.ndarray, fr: int, fc: int) -> np.ndarray:
    """Means of ``fr`` x ``fc`` blocks (float32); the last, partial blocks as if the image were
    padded with its edge values. Sums the rows of each block first (a reduction over the
    middle axis of a ``[blocks, fr, cols]`` view: whole contiguous rows added at a time, no
    copy), then the columns of the ``fr`` times smaller result. Why: summing short runs along
    a row (``np.add.reduceat`` over the columns) cost 4x as much on a full-field image.
    Integer-valued pixels (every stored DICOM/PNG value) give the same sums in any order."""
    h, w = image.shape
    x = np.asarray(image, dtype=np.float32)
    whole = h - h % fr
    rows = np.empty((-(-h // fr), w), dtype=np.float32)
    x[:whole].reshape(whole // fr, fr, w).sum(axis=1, dtype=np.float32, out=rows[: whole // fr])
    if h % fr:
        rows[-1] = x[whole:].sum(axis=0, dtype=np.float32) + np.float32(fr - h % fr) * x[-1]
    sums = np.add.reduceat(rows, np.arange(0, w, fc), axis=1, dtype=np.float32)
    if w % fc:
        sums[:, -1] += np.float32(fc - w % fc) * rows[:, -1]
    return sums / np.float32(fr * fc)


def _linear_weights(n_out: int, factor: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) / factor - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (pos - i0).astype(np.float32)
    return i0, i1, w


def _upsample(small: np.ndarray, shape: tuple[int, int], fr: int, fc: int) -> np.ndarray:
    """Separable bilinear upsampling of block-averaged data back to ``shape`` (float32, C order)."""
    r0, r1, wr = _linear_weights(shape[0], fr, small.shape[0])
    c0, c1, wc = _linear_weights(shape[1], fc, small.shape[1])
    s = small.astype(np.float32, copy=False)
    rows = s[r0] * (1 - wr)[:, None] + s[r1] * wr[:, None]
    return np.take(rows, c0, axis=1) * (1 - wc)[None, :] + np.take(rows, c1, axis=1) * wc[None, :]


def _repeat_columns(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``np.repeat(a, lengths, axis=1)`` (C order), written run by run of equal lengths: each
    run a broadcast into a ``[rows, n, length]`` view of the output. Why: upsampling by an
    integer factor repeats almost every column the same number of times, and ``np.repeat``
    along the last axis copies one element at a time (a third slower on a full-field mask)."""
    bounds = np.r_[0, np.flatnonzero(np.diff(lengths)) + 1, lengths.size]
    if bounds.size > 9:  # no few long runs of equal lengths: nothing to gain
        return np.repeat(a, lengths, axis=1)
    out = np.empty((a.shape[0], int(lengths.sum())), dtype=a.dtype)
    j = 0
    for q0, q1 in zip(bounds[:-1], bounds[1:]):
        n, length = int(q1 - q0), int(lengths[q0])
        # splitting the last (unit-stride) axis of a column slice: always a view of ``out``
        out[:, j : j + n * length].reshape(a.shape[0], n, length)[...] = a[:, q0:q1, None]
        j += n * length
    return out


def _runs(i0: np.ndarray, i1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of consecutive outputs that read the same two samples."""
    starts = np.flatnonzero(np.r_[True, (i0[1:] != i0[:-1]) | (i1[1:] != i1[:-1])])
    return starts, np.diff(np.r_[starts, i0.size])


def _upsample_above(small: np.ndarray, shape: tuple[int, int], fr: int, fc: int,
                    threshold: float) -> np.ndarray:
    """``_upsample(small, shape, fr, fc) > threshold`` (bool, C order), the same pixel for pixel,
    without the full-resolution float map.

    The outputs fall into cells: a run of rows that read the same two sample rows times a run
    of columns that read the same two sample columns. Every value of a cell interpolates its
    four corner samples, so a cell is all above the threshold when all four are (all below
    when none is), up to float rounding, which a tolerance of a few ulps covers: whole cells
    are written by repeating the cells' grid, and only the cells across the threshold (the
    mask's edge) are interpolated, with :func:`_upsample`'s own arithmetic.
    Why: on a full-field image the float map and its comparisons cost 4 full-size passes, and
    deciding runs of columns row by row still cost 3 times as much as this.
    """
    r0, r1, wr = _linear_weights(shape[0], fr, small.shape[0])
    c0, c1, wc = _linear_weights(shape[1], fc, small.shape[1])
    s = small.astype(np.float32, copy=False)
    row_starts, row_lengths = _runs(r0, r1)
    col_starts, col_lengths = _runs(c0, c1)
    ra, rb = r0[row_starts], r1[row_starts]
    ca, cb = c0[col_starts], c1[col_starts]
    corners = (s[ra][:, ca], s[ra][:, cb], s[rb][:, ca], s[rb][:, cb])  # [row runs, col runs]
    low, high = np.minimum.reduce(corners), np.maximum.reduce(corners)
    # two interpolations, each within a rounding of the range of what it interpolates
    tol = 16.0 * float(np.finfo(np.float32).eps) * max(1.0, float(np.abs(s).max(initial=0.0)))
    above = low > threshold + tol
    edge = ~above & (high > threshold - tol)
    out = np.repeat(_repeat_columns(above, col_lengths), row_lengths, axis=0)
    p, q = np.nonzero(edge)
    if p.size:
        # every pixel of the edge cells: cell k has row_lengths[p[k]] x col_lengths[q[k]]
        nr, nc = row_lengths[p], col_lengths[q]
        n = nr * nc
        cell = np.repeat(np.arange(p.size), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        i = row_starts[p][cell] + k // nc[cell]
        j = col_starts[q][cell] + k % nc[cell]
        rows = s[r0[i], c0[j]] * (1 - wr)[i] + s[r1[i], c0[j]] * wr[i]
        rows_next = s[r0[i], c1[j]] * (1 - wr)[i] + s[r1[i], c1[j]] * wr[i]
        out[i, j] = rows * (1 - wc)[j] + rows_next * wc[j] > threshold
    return out


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def _threshold(g: np.ndarray) -> float:
    from skimage.filters import threshold_triangle

    lo, hi = (float(v) for v in np.percentile(g, [1, 99]))
    if hi <= lo:
        hi = float(g.max())
    tri = float(threshold_triangle(g, nbins=256))
    ots = _otsu(g)
    t = max(tri, lo + 0.05 * (hi - lo))
    return min(t, lo + 0.5 * (ots - lo)) if ots > lo else t


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)`` (its default 4-connectivity), the same pixel for pixel:
    everything but the background components that reach the image border. One labelling
    instead of fill_holes' iterated dilation (a third of the cost on the working grid)."""
    background, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False  # label 0: the mask itself
    return ~outside[background]


def _peel_strips(fg: np.ndarray) -> np.ndarray:
    """Peel film-border lines off the top, bottom and right (non-chest-wall) edges.

    ``fg`` is in the chest-wall-left orientation. A line is peeled when more than
    STRIP_FRACTION of it is foreground; peeling goes inwards while that holds.
    """
    fg = fg.copy()
    h, w = fg.shape
    for axis, from_end in ((0, False), (0, True), (1, True)):
        n = h if axis == 0 else w
        depth = max(1, int(STRIP_MAX_FRACTION * n))
        for k in range(depth):
            i = n - 1 - k if from_end else k
            line = fg[i, :] if axis == 0 else fg[:, i]
            if line.mean() <= STRIP_FRACTION:
                break
            if axis == 0:
                fg[i, :] = False
            else:
                fg[:, i] = False
    return fg


def _trim_flare(region: np.ndarray, g: np.ndarray, air: float, wc: float) -> np.ndarray:
    """Trim narrow rows at the top/bottom ends of ``region`` that touch the chest-wall edge.

    Scanned film has a flare band decaying from the film edge; on the chest-wall side it joins
    the breast. Such rows are narrower than NARROW_MM, start within 5 mm of image column 0 (in
    the chest-wall-left orientation) and are dim: their mean is below FLARE_LEVEL of the
    breast's median (above the air). Trimming stops at the first row that is not all three.
    """
    region = region.copy()
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return region
    widths = region.sum(axis=1) * wc
    if widths.max() < 2 * NARROW_MM:
        return region
    near_edge = region.argmax(axis=1) * wc <= 5.0  # starts within 5 mm of the image edge
    level = float(np.median(g[region])) - air
    with np.errstate(invalid="ignore", divide="ignore"):
        row_mean = np.where(region, g, 0.0).sum(axis=1) / np.maximum(region.sum(axis=1), 1)
    dim = row_mean - air < FLARE_LEVEL * level
    for order in (rows, rows[::-1]):
        for r in order:
            if widths[r] >= NARROW_MM or not near_edge[r] or not dim[r]:
                break
            region[r] = False
    return region


def _disk(radius_r: float, radius_c: float) -> np.ndarray:
    rr = max(int(np.ceil(radius_r)), 1)
    rc = max(int(np.ceil(radius_c)), 1)
    y, x = np.ogrid[-rr : rr + 1, -rc : rc + 1]
    return (y / max(radius_r, 1e-6)) ** 2 + (x / max(radius_c, 1e-6)) ** 2 <= 1.0


def row_half_widths(structure: np.ndarray) -> dict[int, int] | None:
    """A structuring element as its rows: row offset from the centre -> ``w`` (the row holds
    the columns ``-w..w`` about the centre; rows without any element left out). ``None`` when
    a row is not such a centred run (then only the general morphology applies)."""
    centre_r, centre_c = structure.shape[0] // 2, structure.shape[1] // 2
    if structure.shape[0] % 2 == 0 or structure.shape[1] % 2 == 0:
        return None
    rows: dict[int, int] = {}
    for i, row in enumerate(np.asarray(structure, dtype=bool)):
        cols = np.flatnonzero(row)
        if cols.size == 0:
            continue
        w = centre_c - int(cols[0])
        if w < 0 or cols.size != 2 * w + 1 or int(cols[-1]) != centre_c + w:
            return None
        rows[i - centre_r] = w
    return rows


def _combine_shifted(out: np.ndarray, rows: np.ndarray, dy: int, erode: bool,
                     border: bool) -> None:
    """``out[i] (&= if erode else |=) rows[i + dy]``, rows beyond the image being ``border``."""
    h = out.shape[0]
    op = np.logical_and if erode else np.logical_or
    if abs(dy) >= h:
        if erode != border:  # AND with False / OR with True
            out[:] = border
        return
    if dy >= 0:
        op(out[: h - dy], rows[dy:], out=out[: h - dy])
        beyond = out[h - dy:]
    else:
        op(out[-dy:], rows[: h + dy], out=out[-dy:])
        beyond = out[: -dy]
    if erode != border:
        beyond[...] = border


def morph_rows(mask: np.ndarray, half_widths: dict[int, int], erode: bool,
               border: bool = False) -> np.ndarray:
    """Binary erosion (``erode``) or dilation of ``mask`` (bool [H, W]) by a symmetric element
    given as :func:`row_half_widths`, pixels beyond the image being ``border``: what
    ``ndi.binary_erosion`` / ``ndi.binary_dilation`` give with that element and
    ``border_value``, pixel for pixel. The element is the union of its rows, so the result is
    the AND (OR) of each row's 1-D erosion (dilation, a running minimum / maximum along the
    image rows) shifted by the row's offset: O(pixels x rows of the element) instead of
    O(pixels x elements), 5x faster for the 3 mm disk of the working grid."""
    x = np.ascontiguousarray(mask, dtype=bool)
    x8 = x.view(np.uint8)
    out = np.full(x.shape, erode, dtype=bool)
    filter1d = ndi.minimum_filter1d if erode else ndi.maximum_filter1d
    along: dict[int, np.ndarray] = {}
    for dy, w in half_widths.items():
        if w not in along:
            along[w] = x if w == 0 else filter1d(x8, 2 * w + 1, axis=1, mode="constant",
                                                 cval=int(border)).view(bool)
        # erosion reads mask[p + b]; dilation mask[p - b] (the same for a symmetric element)
        _combine_shifted(out, along[w], dy if erode else -dy, erode, border)
    return out


def _opening(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_opening(mask, structure)`` (border False), by rows when it can be."""
    rows = row_half_widths(structure)
    if rows is None or rows != {-dy: w for dy, w in rows.items()}:
        return ndi.binary_opening(mask, structure=structure)
    return morph_rows(morph_rows(mask, rows, erode=True), rows, erode=False)


def _find_pectoral(
    g: np.ndarray, region: np.ndarray, wr: float, wc: float
) -> tuple[float, float, float] | None:
    """Pectoral line (chest-wall-left orientation, working grid) or None.

    Returns ``(a, b, score)`` with the boundary ``col = a + b * row``. Candidate straight lines
    join a point of the breast's top row (5-95 % of its width from the chest wall) to a point
    of the chest-wall edge (10-90 % of its height). Each is scored by the mean intensity drop
    across it (derivative along the normal pointing away from the chest-wall corner, per mm,
    relative to the 5-95 % intensity range of the breast) over its samples inside the breast
    (away from the skin); the best line is kept when its score exceeds PECTORAL_MIN_SCORE.
    """
    rows_any = np.flatnonzero(region.any(axis=1))
    if rows_any.size < 20:
        return None
    top, bottom = int(rows_any[0]), int(rows_any[-1])
    height = bottom - top + 1
    first_col = region.argmax(axis=1)
    last_col = region.shape[1] - 1 - region[:, ::-1].argmax(axis=1)
    upper = rows_any[rows_any < top + height // 2]
    cw = float(np.min(first_col[upper]))
    width = float(np.max(last_col[rows_any]) - cw + 1)
    if width < 20:
        return None
    vals = g[region]
    lo, hi = (float(v) for v in np.percentile(vals, [5, 95]))
    if hi <= lo:
        return None
    gs = ndi.gaussian_filter(g, sigma=(1.0 / wr, 1.0 / wc), mode="nearest")
    grad_r = ndi.sobel(gs, axis=0) / (8.0 * wr)  # intensity per mm
    grad_c = ndi.sobel(gs, axis=1) / (8.0 * wc)
    inner = ndi.binary_erosion(region, structure=_disk(3.0 / wr, 3.0 / wc))
    inner[:, : int(cw) + max(1, int(round(5.0 / wc)))] = False  # away from the chest-wall edge

    us = np.linspace(0.15, 0.95, 41) * width  # top point: columns from the chest wall
    vs = np.linspace(0.15, 0.90, 38) * height  # chest-wall point: rows from the top
    ts = np.linspace(0.0, 1.0, 64)
    U, V, T = np.meshgrid(us, vs, ts, indexing="ij")
    rr = top + T * V
    cc = cw + U * (1.0 - T)
    coords = np.stack([rr.ravel(), cc.ravel()])
    dr = ndi.map_coordinates(grad_r, coords, order=1, mode="nearest").reshape(rr.shape)
    dc = ndi.map_coordinates(grad_c, coords, order=1, mode="nearest").reshape(rr.shape)
    ok = ndi.map_coordinates(inner.astype(np.float32), coords, order=0).reshape(rr.shape) > 0.5
    # unit normal (row, col) of the line pointing away from the corner, in mm
    nr, nc = U[..., :1] * wc, V[..., :1] * wr
    norm = np.hypot(nr, nc)
    deriv = (dr * nr + dc * nc) / norm
    n_ok = ok.sum(axis=2)
    seg_mm = np.hypot(U[..., 0] * wc, V[..., 0] * wr)  # line length (mm)
    inside_mm = seg_mm * n_ok / ts.size
    mean_drop = -np.where(ok, deriv, 0.0).sum(axis=2) / np.maximum(n_ok, 1) / (hi - lo)
    # long, consistent edges beat short strong ones (lymph nodes, vessels)
    score = mean_drop * np.sqrt(inside_mm / (height * wr))
    score[n_ok < 0.5 * ts.size] = -np.inf
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    best = float(score[i, j])
    if not np.isfinite(best) or best < PECTORAL_MIN_SCORE:
        return None
    u, v = float(us[i]), float(vs[j])
    b = -u / v  # col decreases by u while row increases by v
    a = cw + u - b * top
    return a, b, best


def segment_breast(
    image: np.ndarray,
    meta: ImageMeta,
    *,
    pectoral: PectoralMode = "auto",
    margin_mm: float = MARGIN_MM,
    work_mm: float = WORK_MM,
) -> BreastRegion:
    """Breast and pectoral masks of a mammogram read by :func:`mcgenref.io.read_image`.

    Args:
        image: 2-D float array ``(rows, cols)``, dense tissue bright (any scale).
        meta: its ImageMeta; ``pixel_spacing_mm`` sets every size, ``laterality`` breaks ties
            of the chest-wall side, ``view`` decides the pectoral search in ``"auto"`` mode.
        pectoral: ``"auto"`` (search on MLO/ML/LM views), ``"always"`` (e.g. mini-MIAS, all
            MLO but untagged) or ``"never"``.
        margin_mm: skin margin removed from the breast mask (mm).
        work_mm: working resolution (mm per pixel); coarser is faster.

    Returns:
        BreastRegion with boolean masks of ``image.shape``.

    Raises:
        InputError: no breast tissue could be found (e.g. a blank or non-mammogram image).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"segment_breast expects a 2-D image, got shape {img.shape}")
    if pectoral not in ("auto", "always", "never"):
        raise ValueError(f"pectoral must be 'auto', 'always' or 'never', got {pectoral!r}")
    sr, sc = (float(v) for v in meta.pixel_spacing_mm)
    fr = max(1, int(round(work_mm / sr)))
    fc = max(1, int(round(work_mm / sc)))
    wr, wc = sr * fr, sc * fc  # working spacing (mm)

    small = _block_mean(img.astype(np.float32, copy=False), fr, fc)
    small = np.nan_to_num(small, nan=float(np.nanmin(small)) if np.isfinite(small).any() else 0.0)
    g = ndi.gaussian_filter(small, sigma=(SMOOTH_MM / wr, SMOOTH_MM / wc), mode="nearest")
    thr = _threshold(g)
    air = float(np.percentile(g, 1))
    fg = g > thr
    if not fg.any():
        raise InputError(f"{meta.source_path}: no breast tissue found (image too uniform)")

    # chest-wall side from the tissue mass; near-ties decided by laterality
    half = fg.shape[1] // 2
    # tissue mass above the air level, so that offsets (signed or rescaled data) do not matter
    above = g - air
    mass_left = float(np.sum(above[:, :half] * fg[:, :half]) - np.sum(above[:, -half:] * fg[:, -half:]))
    total = float(np.sum(above * fg)) or 1.0
    if abs(mass_left) / total > 0.1 or meta.laterality not in ("L", "R"):
        left = mass_left >= 0
    else:
        left = meta.laterality == "L"
    if not left:
        g, fg = g[:, ::-1], fg[:, ::-1]

    fg = _peel_strips(fg)
    region = _fill_holes(_largest_component(fg))
    opened = _opening(region, _disk(OPEN_MM / wr, OPEN_MM / wc))
    if opened.sum() > 0.5 * region.sum():
        region = _fill_holes(_largest_component(opened))
    region = _trim_flare(region, g, air, wc)
    region = _fill_holes(_largest_component(region))
    if not region.any():
        raise InputError(f"{meta.source_path}: no breast tissue found")

    # distance (mm) to the background and to the top, bottom and right image edges
    padded = np.pad(region, 1, constant_values=False)
    padded[1:-1, 0] = True  # beyond the chest-wall edge counts as tissue: no erosion there
    dist = ndi.distance_transform_edt(padded, sampling=(wr, wc))[1:-1, 1:-1].astype(np.float32)

    line = None
    if pectoral == "always" or (pectoral == "auto" and _is_mlo(meta.view)):
        line = _find_pectoral(g, region, wr, wc)

    if not left:
        dist = np.ascontiguousarray(dist[:, ::-1])
    breast = _upsample_above(dist, img.shape, fr, fc, margin_mm)
    pect = np.zeros(img.shape, dtype=bool)
    if line is not None:
        inside = _upsample_above(dist, img.shape, fr, fc, 0.5 * min(wr, wc))
        a, b, _ = line
        # convert col = a + b*row (working grid, chest-wall-left) to full resolution
        rows_full = (np.arange(img.shape[0], dtype=np.float64) + 0.5) / fr - 0.5
        col_small = a + b * rows_full  # boundary column (working grid) per full row
        col_full = (col_small + 0.5) * fc - 0.5
        cols = np.arange(img.shape[1], dtype=np.float32)
        if not left:
            cols = cols[::-1].copy()  # column index in the chest-wall-left orientation
        bound = col_full.astype(np.float32)[:, None] + np.float32(margin_mm / sc)
        # the muscle and the margin beside its edge: exactly what is cut from the breast, so
        # that breast | pectoral is the whole tissue region with no gap between them
        pect = inside & (cols[None, :] <= bound)
        breast &= cols[None, :] > bound
    if not breast.any():
        raise InputError(f"{meta.source_path}: no breast tissue left after the skin margin")
    return BreastRegion(breast=breast, pectoral=pect, chest_wall_left=bool(left))


def _is_mlo(view: str | None) -> bool:
    if not view:
        return False
    v = view.upper()
    return "MLO" in v or v in ("ML", "LM", "LMO")
