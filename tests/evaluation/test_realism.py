"""Spot features on analytic spots, the detector on planted spots, beta on power-law noise."""

from __future__ import annotations

import numpy as np
import pytest

from mcgenref.evaluation.realism import ks_statistic, measure_spots, power_spectrum_slope
from mcgenref.spots import find_spot_candidates


def _gauss_image(spacing, sigma_mm, amp, centres, shape=(128, 128), noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    img = 0.5 + rng.normal(0.0, noise, shape)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for r0, c0 in centres:
        d2 = ((rr - r0) * spacing[0]) ** 2 + ((cc - c0) * spacing[1]) ** 2
        img += amp * np.exp(-d2 / (2 * sigma_mm**2))
    return img.astype(np.float32)


@pytest.mark.parametrize("spacing,sigma_mm", [((0.2, 0.2), 0.2), ((0.1, 0.1), 0.15),
                                               ((0.07, 0.07), 0.1), ((0.1, 0.08), 0.15)])
def test_measure_gaussian_spots(spacing, sigma_mm):
    """16 Gaussian spots (sub-pixel centres) of known sigma on a flat noisy background."""
    amp, noise = 0.1, 0.005  # CNR 20
    rng = np.random.default_rng(7)
    grid = [(24 + 24 * i, 24 + 24 * j) for i in range(4) for j in range(4)]
    centres = [(r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)) for r, c in grid]
    img = _gauss_image(spacing, sigma_mm, amp, centres, shape=(120, 120), noise=noise)
    m = measure_spots(img, spacing, grid)
    np.testing.assert_allclose(m["fwhm_mm"], 2.3548 * sigma_mm, rtol=0.10)
    # the brightest pixel is within about half a pixel of the centre
    np.testing.assert_allclose(m["contrast"], amp, rtol=0.15)
    assert np.median(m["contrast"]) == pytest.approx(amp, rel=0.08)
    assert np.median(m["noise"]) == pytest.approx(noise, rel=0.15)
    np.testing.assert_allclose(m["cnr"], m["contrast"] / m["noise"])
    np.testing.assert_array_less(np.abs(m["row"] - [c[0] for c in centres]), 0.5)
    np.testing.assert_array_less(np.abs(m["col"] - [c[1] for c in centres]), 0.5)
    prof = np.median(m["profile"], axis=0)
    assert prof[0] == pytest.approx(amp, rel=0.1) and abs(prof[-1]) < 0.01
    assert np.all(np.diff(prof[:4]) < 0)


def test_measure_flat_background_gives_no_fwhm_and_empty_ok():
    img = np.full((64, 64), 0.3, np.float32)
    m = measure_spots(img, (0.2, 0.2), [(32, 32)])
    assert m["contrast"][0] == pytest.approx(0.0) and np.isnan(m["fwhm_mm"][0])
    m0 = measure_spots(img, (0.2, 0.2), np.zeros((0, 2)))
    assert m0["contrast"].shape == (0,) and m0["profile"].shape[0] == 0


def test_detector_finds_planted_spots():
    spacing = (0.1, 0.1)
    centres = [(20, 30), (50, 90), (100, 40), (90, 110), (30, 110)]
    img = _gauss_image(spacing, 0.12, 0.2, centres, noise=0.01, seed=3)
    region = np.ones(img.shape, bool)
    pos, scores = find_spot_candidates(img, spacing, region, max_candidates=len(centres),
                                       return_scores=True)
    assert len(pos) == len(centres) and np.all(np.diff(scores) <= 0)
    found = {tuple(p) for p in pos}
    for c in centres:
        assert any(abs(p[0] - c[0]) <= 1 and abs(p[1] - c[1]) <= 1 for p in found)
    # the region restricts where candidates may be
    region2 = np.zeros(img.shape, bool)
    region2[:64] = True
    pos2 = find_spot_candidates(img, spacing, region2, max_candidates=10, threshold=0.05)
    assert len(pos2) == 3 and np.all(pos2[:, 0] < 64)


def _power_law_noise(n, beta, seed):
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    phase = np.fft.fft2(rng.normal(size=(n, n)))
    return np.real(np.fft.ifft2(phase * amp))


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_power_spectrum_slope_recovers_beta(beta):
    img = _power_law_noise(256, beta, seed=1)
    est = power_spectrum_slope(img, (0.2, 0.2), band_cpmm=(0.1, 0.8))
    assert est == pytest.approx(beta, abs=0.25)


def test_ks_statistic():
    a = np.arange(100.0)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 1000) == 1.0
    assert np.isnan(ks_statistic(a, np.array([np.nan])))
