"""Resampling between pixel grids (physical units: spacing in mm, (row, col)).

Linear resampling (and the Gaussian anti-aliasing before a downsampling) is separable: along
each axis it is one small sparse matrix (output x input pixels, a few taps per row), so a
2-D resampling is two sparse products, ``A_rows @ image @ A_cols.T``. That computes exactly
what ``scipy.ndimage.gaussian_filter`` then ``scipy.ndimage.zoom(order=1, grid_mode=True,
mode="nearest")`` compute (to float32 rounding), at a fraction of the cost on a full-field
image: the Gaussian is never applied to input pixels that no output pixel reads, and a crop of
the output costs only its own pixels. Nearest-neighbour resampling (``order=0``, masks) takes the
rows and columns ``ndimage.zoom`` would take (its map of output to input pixels is per axis).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage, sparse

#: Gaussian kernels are cut at this many standard deviations (as ``ndimage.gaussian_filter``).
TRUNCATE = 4.0


def zoom_factors(spacing_mm: tuple[float, float], target_mm: tuple[float, float]) -> tuple[float, float]:
    """Output pixels per input pixel along (row, col) to go from ``spacing_mm`` to ``target_mm``."""
    return (float(spacing_mm[0]) / float(target_mm[0]), float(spacing_mm[1]) / float(target_mm[1]))


def _zoomed_length(n: int, zoom: float) -> int:
    return int(round(n * zoom))  # the output length ndimage.zoom gives


def axis_operator(n_in: int, n_out: int, sigma: float = 0.0,
                  out: slice | None = None) -> sparse.csr_matrix:
    """Sparse float32 [n_out (or the ``out`` rows), n_in]: a Gaussian blur of ``sigma`` input
    pixels (edges: nearest, cut at ``TRUNCATE`` sigma), then linear interpolation with pixel
    centres aligned (input coordinate ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the edge)."""
    rows = np.arange(n_out)[out if out is not None else slice(None)]
    pos = np.clip((rows + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = pos - i0
    linear = sparse.csr_matrix(
        (np.concatenate([1.0 - w1, w1]),
         (np.concatenate([np.arange(rows.size)] * 2), np.concatenate([i0, i1]))),
        shape=(rows.size, n_in),
    )
    if sigma > 0:
        radius = int(TRUNCATE * sigma + 0.5)
        taps = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (taps / sigma) ** 2)
        kernel /= kernel.sum()
        # blur only the input pixels the interpolation reads
        needed = np.unique(np.concatenate([i0, i1]))
        src = np.clip(needed[:, None] + taps[None, :], 0, n_in - 1)
        blur = sparse.csr_matrix(
            (np.broadcast_to(kernel, src.shape).ravel(),
             (np.repeat(needed, taps.size), src.ravel())),
            shape=(n_in, n_in),
        )  # duplicates (clamped taps) are summed: the "nearest" edge
        linear = linear @ blur
    return linear.astype(np.float32).tocsr()


def _two_tap_columns(y: np.ndarray, a_cols: sparse.csr_matrix) -> np.ndarray:
    """``y @ a_cols.T`` for an operator with at most two entries a row (linear interpolation
    without blur: upsampling), computed along the rows of ``y`` with two column gathers: no
    transposed copies, which cost more than the product itself. The same float32 arithmetic
    as the sparse product (``w0 * y[:, i0] + w1 * y[:, i1]``, the entries in their stored
    order; a row of one entry ``w0 * y[:, i0]``)."""
    first, n_taps = a_cols.indptr[:-1], np.diff(a_cols.indptr)
    out = np.take(y, a_cols.indices[first], axis=1)
    out *= a_cols.data[first]
    two = np.flatnonzero(n_taps == 2)
    if two.size == n_taps.size:
        second = np.take(y, a_cols.indices[first + 1], axis=1)
        second *= a_cols.data[first + 1]
        out += second
    elif two.size:  # a few clamped edge columns of one entry
        out[:, two] += y[:, a_cols.indices[first[two] + 1]] * a_cols.data[first[two] + 1]
    return out


#: Output values computed at a time (float32: 1 MB). A block of output rows goes through both
#: passes while it is in cache, and no full-size intermediate (nor its transposed copies and
#: fresh pages) is ever made: on a full-field image that halves the cost.
BLOCK_VALUES = 1 << 18


def separable_blocks(image: np.ndarray, a_rows: sparse.csr_matrix,
                     a_cols: sparse.csr_matrix) -> Iterator[tuple[slice, np.ndarray]]:
    """``a_rows @ image @ a_cols.T`` in float32, as ``(rows, block)``: the output rows
    ``rows`` (consecutive, in order, together all of them) and their values.

    The column pass (which needs transposes unless :func:`_two_tap_columns` applies) runs on
    whichever of the input and the output has fewer rows: on each block of the row pass's
    output when the output has fewer rows than the input, else once on the input. Every
    output value is the same float32 arithmetic as the two whole sparse products.
    """
    x = np.ascontiguousarray(image, dtype=np.float32)
    taps = np.diff(a_cols.indptr)
    two_taps = taps.size > 0 and int(taps.min()) >= 1 and int(taps.max()) <= 2

    def cols(y: np.ndarray) -> np.ndarray:
        if two_taps:
            return _two_tap_columns(y, a_cols)
        return np.ascontiguousarray((a_cols @ np.ascontiguousarray(y.T)).T)

    n_out = a_rows.shape[0]
    few = n_out <= a_rows.shape[1]
    source = x if few else cols(x)
    step = max(1, BLOCK_VALUES // max(1, source.shape[1]))
    for r0 in range(0, n_out, step):
        rows = slice(r0, min(n_out, r0 + step))
        block = np.asarray(a_rows[rows] @ source, dtype=np.float32)
        yield rows, (cols(block) if few else block)


def _separable(image: np.ndarray, a_rows: sparse.csr_matrix, a_cols: sparse.csr_matrix) -> np.ndarray:
    """``a_rows @ image @ a_cols.T`` in float32 (:func:`separable_blocks` put together)."""
    out = np.empty((a_rows.shape[0], a_cols.shape[0]), dtype=np.float32)
    for rows, block in separable_blocks(image, a_rows, a_cols):
        out[rows] = block
    return out


def resample(image: np.ndarray, zoom: tuple[float, float], order: int = 1) -> np.ndarray:
    """Resample a 2-D array by ``zoom`` (output/input pixels per axis); float32 for ``order=1``.

    Linear interpolation (``order=1``) for images; ``order=0`` for masks. Downsampling is
    anti-aliased first (Gaussian, sigma = 0.5 * (1/zoom - 1) input pixels), so that a small
    bright MC is averaged into the coarser pixel rather than hit or missed by a sample point.
    """
    if tuple(zoom) == (1.0, 1.0):
        return image
    if order == 0:
        if image.ndim != 2:
            return ndimage.zoom(image, zoom, order=0, mode="nearest", grid_mode=True)
        # ndimage maps each output row (column) to an input one by the axis alone: the same
        # map, read off a zoom of the indices, then two gathers (a tenth of the 2-D zoom's cost)
        rows, cols = (ndimage.zoom(np.arange(n, dtype=np.intp), z, order=0, mode="nearest",
                                   grid_mode=True) for n, z in zip(image.shape, zoom))
        return np.take(np.take(image, rows, axis=0), cols, axis=1)
    if order != 1:
        raise ValueError("resample supports order 0 and 1")
    (h, w), (zr, zc) = image.shape, zoom
    sigma = [0.5 * (1.0 / z - 1.0) if z < 1.0 else 0.0 for z in zoom]
    return _separable(image, axis_operator(h, _zoomed_length(h, zr), sigma[0]),
                      axis_operator(w, _zoomed_length(w, zc), sigma[1]))


def resample_to_shape(image: np.ndarray, shape: tuple[int, int], order: int = 1,
                      crop: tuple[slice, slice] | None = None) -> np.ndarray:
    """Resample to an exact ``shape`` (used to bring maps back onto the input's grid).

    ``crop`` (``order=1`` only): compute only these rows and columns of the output (the
    breast's bounding box: a probability map is zero outside the breast anyway).
    """
    if order == 1:
        if image.shape == tuple(shape):
            return image if crop is None else image[crop]
        rows, cols = crop if crop is not None else (slice(None), slice(None))
        return _separable(image, axis_operator(image.shape[0], shape[0], out=rows),
                          axis_operator(image.shape[1], shape[1], out=cols))
    if crop is not None:
        raise ValueError("crop needs order=1")
    if image.shape == tuple(shape):
        return image
    zoom = (shape[0] / image.shape[0], shape[1] / image.shape[1])
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds the output size; pad/crop the last row/col
        fixed = np.empty(shape, dtype=out.dtype)
        r, c = min(shape[0], out.shape[0]), min(shape[1], out.shape[1])
        fixed[:r, :c] = out[:r, :c]
        fixed[r:, :c] = out[r - 1 : r, :c]
        fixed[:, c:] = fixed[:, c - 1 : c]
        out = fixed
    return out
