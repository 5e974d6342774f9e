"""The separable resampler against scipy.ndimage's Gaussian + zoom (what it replaces)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mcgenref.io.resample import axis_operator, resample, resample_to_shape


def _ndimage_resample(x: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    sigma = [0.5 * (1.0 / z - 1.0) if z < 1.0 else 0.0 for z in zoom]
    if min(zoom) < 1.0:
        x = ndimage.gaussian_filter(x, sigma=sigma, mode="nearest")
    return ndimage.zoom(x, zoom, order=1, mode="nearest", grid_mode=True)


@pytest.mark.parametrize("shape, zoom", [
    ((37, 53), (0.35, 0.35)),  # 70 um -> 0.2 mm
    ((40, 41), (0.5, 0.7)),
    ((31, 20), (2.0, 1.5)),  # upsampling: no blur
    ((64, 48), (0.25, 3.0)),  # one axis down, the other up
    ((5, 7), (0.3, 0.3)),  # blur wider than the image: the edge is clamped
])
def test_resample_matches_ndimage(shape: tuple[int, int], zoom: tuple[float, float]) -> None:
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    got, ref = resample(x, zoom), _ndimage_resample(x, zoom)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_resample_to_shape_matches_ndimage_and_crops() -> None:
    small = np.random.default_rng(1).random((14, 12)).astype(np.float32)
    shape = (40, 33)
    ref = ndimage.zoom(small, (40 / 14, 33 / 12), order=1, mode="nearest", grid_mode=True)
    full = resample_to_shape(small, shape)
    assert full.shape == shape
    np.testing.assert_allclose(full, ref, atol=2e-6)
    box = (slice(3, 38), slice(10, 20))
    np.testing.assert_array_equal(resample_to_shape(small, shape, crop=box), full[box])
    assert resample_to_shape(small, small.shape) is small


def test_operator_rows_sum_to_one_and_preserve_a_constant() -> None:
    a = axis_operator(100, 35, sigma=0.93)
    np.testing.assert_allclose(np.asarray(a.sum(axis=1)).ravel(), 1.0, atol=1e-6)
    img = np.full((100, 90), 3.25, np.float32)
    np.testing.assert_allclose(resample(img, (0.35, 0.35)), 3.25, atol=1e-5)


def test_masks_use_nearest_neighbour() -> None:
    m = np.zeros((30, 30), np.uint8)
    m[10:20, 5:25] = 1
    got = resample(m, (0.5, 0.5), order=0)
    np.testing.assert_array_equal(got, ndimage.zoom(m, 0.5, order=0, mode="nearest", grid_mode=True))
    assert set(np.unique(got)) == {0, 1}


def test_row_blocks_and_two_tap_columns_are_the_sparse_products_exactly() -> None:
    from mcgenref.io import resample as rs

    rng = np.random.default_rng(2)
    small = rng.random((29, 23)).astype(np.float32)
    a_rows, a_cols = axis_operator(29, 83), axis_operator(23, 66, out=slice(5, 60))
    whole = np.asarray(a_rows @ np.ascontiguousarray((a_cols @ small.T).T), dtype=np.float32)
    previous = rs.BLOCK_VALUES
    try:
        rs.BLOCK_VALUES = 7 * 55  # blocks of 7 rows
        blocks = list(rs.separable_blocks(small, a_rows, a_cols))
    finally:
        rs.BLOCK_VALUES = previous
    assert [b[0].start for b in blocks] == list(range(0, 83, 7))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), whole)
    np.testing.assert_array_equal(rs._two_tap_columns(small, a_cols),
                                  np.ascontiguousarray((a_cols @ small.T).T))
    big = rng.random((70, 61)).astype(np.float32)  # downsampling: many taps, transposed pass
    np.testing.assert_array_equal(resample(big, (0.35, 0.35)),
                                  _ndimage_free_reference(big, (0.35, 0.35)))


def _ndimage_free_reference(x: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    """The two whole sparse products, in the order the resampler uses for a downsampling."""
    sigma = [0.5 * (1.0 / z - 1.0) for z in zoom]
    a_rows = axis_operator(x.shape[0], int(round(x.shape[0] * zoom[0])), sigma[0])
    a_cols = axis_operator(x.shape[1], int(round(x.shape[1] * zoom[1])), sigma[1])
    return np.ascontiguousarray((a_cols @ np.ascontiguousarray((a_rows @ x).T)).T)


@pytest.mark.parametrize("shape, zoom", [((4096, 333), (0.35, 0.35)), ((97, 61), (2.3, 0.41)),
                                         ((30, 30), (0.5, 1.0)), ((11, 200), (0.1, 3.0))])
def test_masks_take_the_rows_and_columns_ndimage_takes(shape, zoom) -> None:  # type: ignore[no-untyped-def]
    m = (np.random.default_rng(5).random(shape) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(resample(m, zoom, order=0),
                                  ndimage.zoom(m, zoom, order=0, mode="nearest", grid_mode=True))
