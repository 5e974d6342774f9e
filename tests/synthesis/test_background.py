"""Procedural power-law backgrounds and the measured power-spectrum slope."""

from __future__ import annotations

import numpy as np
import pytest

from mcgenref.synthesis.background import power_spectrum_slope, procedural_background
from mcgenref.synthesis.config import BackgroundConfig

CFG = BackgroundConfig()
QUIET = BackgroundConfig(white_noise_std_range=(0.005, 0.005))


def test_shape_dtype_and_range() -> None:
    bg = procedural_background(np.random.default_rng(0), (200, 300), (0.1, 0.1), CFG)
    assert bg.shape == (200, 300) and bg.dtype == np.float32
    assert np.isfinite(bg).all()
    assert CFG.mean_range[0] - 0.01 <= bg.mean() <= CFG.mean_range[1] + 0.01
    assert CFG.std_range[0] <= bg.std() <= CFG.std_range[1] + 0.03


def test_deterministic() -> None:
    a = procedural_background(np.random.default_rng(4), (64, 64), (0.1, 0.1), CFG)
    b = procedural_background(np.random.default_rng(4), (64, 64), (0.1, 0.1), CFG)
    c = procedural_background(np.random.default_rng(5), (64, 64), (0.1, 0.1), CFG)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beta_three_measures_three(seed: int) -> None:
    bg = procedural_background(np.random.default_rng(seed), (512, 512), (0.1, 0.1), QUIET,
                               beta=3.0)
    assert power_spectrum_slope(bg, (0.1, 0.1), 0.1, 1.0) == pytest.approx(3.0, abs=0.3)


def test_beta_is_recovered_across_the_range_and_spacings() -> None:
    for beta in (2.5, 3.5):
        vals = [power_spectrum_slope(
            procedural_background(np.random.default_rng(s), (512, 512), (0.05, 0.05), QUIET,
                                  beta=beta), (0.05, 0.05), 0.1, 2.0) for s in range(3)]
        assert np.mean(vals) == pytest.approx(beta, abs=0.2)


def test_texture_scale_is_physical() -> None:
    # the same physical field size at two spacings has the same slope in cycles/mm
    a = procedural_background(np.random.default_rng(0), (512, 512), (0.05, 0.05), QUIET, beta=3)
    b = procedural_background(np.random.default_rng(0), (256, 256), (0.1, 0.1), QUIET, beta=3)
    sa = power_spectrum_slope(a, (0.05, 0.05), 0.1, 1.0)
    sb = power_spectrum_slope(b, (0.1, 0.1), 0.1, 1.0)
    assert sa == pytest.approx(sb, abs=0.5)


def test_white_noise_is_flat() -> None:
    w = np.random.default_rng(0).standard_normal((256, 256))
    assert abs(power_spectrum_slope(w, (0.1, 0.1), 0.3, 4.0)) < 0.3


def test_bad_band_raises() -> None:
    with pytest.raises(ValueError):
        power_spectrum_slope(np.zeros((32, 32)), (0.1, 0.1), 1.0, 0.5)
