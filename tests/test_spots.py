"""mcgenref.spots: the one DoG detector, on spots whose positions and sizes are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mcgenref.errors import InputError
from mcgenref.spots import dog_response, find_spot_candidates, sigma_px, spacing_pair


def _spots(shape, spacing, centres, sigma_mm=0.12, amp=0.2, noise=0.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 0.5 + rng.normal(0.0, noise, shape) if noise else np.full(shape, 0.5)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for r0, c0 in centres:
        img = img + amp * np.exp(-(((rr - r0) * spacing[0]) ** 2 + ((cc - c0) * spacing[1]) ** 2)
                                 / (2 * sigma_mm**2))
    return img.astype(np.float32)


def test_sigma_px_and_spacing() -> None:
    assert sigma_px(0.3, (0.1, 0.2)) == pytest.approx((3.0, 1.5))
    assert sigma_px(0.02, (0.1, 0.1), floor_px=0.5) == (0.5, 0.5)
    assert spacing_pair(0.2) == (0.2, 0.2) and spacing_pair([0.1, 0.05]) == (0.1, 0.05)
    with pytest.raises(InputError, match="positive"):
        spacing_pair((0.1, 0.0))


def test_dog_is_the_difference_of_two_gaussians_in_mm() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((40, 50)).astype(np.float32)
    spacing = (0.1, 0.2)
    expected = (ndimage.gaussian_filter(img, (1.5, 0.75)) - ndimage.gaussian_filter(img, (6.0, 3.0)))
    np.testing.assert_array_equal(dog_response(img, spacing, 0.15, 0.6), expected)
    # the inner scale is clamped to min_sigma_px, the outer one never
    clamped = ndimage.gaussian_filter(img, (0.5, 0.5)) - ndimage.gaussian_filter(img, (6.0, 3.0))
    np.testing.assert_array_equal(dog_response(img, spacing, 0.01, 0.6, min_sigma_px=0.5), clamped)
    flat = dog_response(np.full((30, 30), 0.7, np.float32), 0.1)
    assert flat.dtype == np.float32 and np.abs(flat).max() < 1e-6  # no response without a spot


def test_finds_planted_spots_strongest_first_at_anisotropic_spacing() -> None:
    spacing = (0.1, 0.08)
    centres = [(20, 30), (50, 90), (100, 40), (90, 110)]
    amps = [0.4, 0.3, 0.2, 0.1]
    img = np.full((128, 128), 0.5, np.float32)
    for (r, c), a in zip(centres, amps):
        img += _spots(img.shape, spacing, [(r, c)], amp=a) - 0.5
    pos, scores = find_spot_candidates(img, spacing, np.ones(img.shape, bool),
                                       max_candidates=len(centres), return_scores=True)
    assert [tuple(p) for p in pos.tolist()] == centres  # the exact pixels, in order of amplitude
    assert pos.dtype == np.int64 and np.all(np.diff(scores) < 0)


def test_region_threshold_distance_and_bad_input() -> None:
    spacing = (0.1, 0.1)
    # a strong spot, a weaker one 0.6 mm to its right, a third far away
    img = _spots((64, 64), spacing, [(20, 20), (45, 45)], amp=0.3) + _spots((64, 64), spacing, [(20, 26)], amp=0.15) - 0.5
    everywhere = np.ones(img.shape, bool)
    # 0.6 mm apart: two maxima at min_distance 0.3 mm, the weaker one merged at 1 mm
    near = find_spot_candidates(img, spacing, everywhere, min_distance_mm=0.3, threshold=0.01)
    assert len(near) == 3 and tuple(near[2]) == (20, 26)
    far = find_spot_candidates(img, spacing, everywhere, min_distance_mm=1.0, threshold=0.01)
    assert sorted(tuple(p) for p in far.tolist()) == [(20, 20), (45, 45)]
    left = np.zeros(img.shape, bool)
    left[:, :32] = True  # the region: only the close pair is inside
    inside = find_spot_candidates(img, spacing, left, min_distance_mm=0.3, threshold=0.01)
    assert [tuple(p) for p in inside.tolist()] == [(20, 20), (20, 26)]
    assert len(find_spot_candidates(img, spacing, everywhere, threshold=1.0)) == 0
    with pytest.raises(InputError, match="2-D"):
        find_spot_candidates(img[None], spacing, everywhere[None])
    with pytest.raises(InputError, match="region shape"):
        find_spot_candidates(img, spacing, everywhere[:10])
