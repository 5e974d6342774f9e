from __future__ import annotations

import numpy as np
import pytest

from mcgenref.inference.classical import ClassicalConfig, classical_cnr, classical_score


def _spots(spacing: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    n = int(40 / spacing)  # a 40 mm field
    img = rng.normal(0.5, 0.01, (n, n)).astype(np.float32)
    rr, cc = np.mgrid[0:n, 0:n]
    centres = [(int(n * f), int(n * g)) for f, g in [(0.25, 0.25), (0.5, 0.7), (0.75, 0.4)]]
    for r, c in centres:  # 0.3 mm wide Gaussian specks, physical size fixed
        img += 0.08 * np.exp(-(((rr - r) ** 2 + (cc - c) ** 2) * spacing**2) / (2 * 0.1**2))
    return img, centres


@pytest.mark.parametrize("spacing", [0.1, 0.2])
def test_planted_specks_have_high_cnr(spacing: float) -> None:
    img, centres = _spots(spacing)
    cnr = classical_cnr(img, (spacing, spacing), ClassicalConfig())
    background = np.percentile(cnr, 99)
    for r, c in centres:
        assert cnr[r, c] > 2 * background
    score = classical_score(img, (spacing, spacing), ClassicalConfig())
    assert score.max() < 1.0
    # darker than its surround (CNR <= 0) scores exactly 0, never below
    assert (cnr <= 0).any() and (score[cnr <= 0] == 0).all() and score.min() == 0


def test_score_is_half_at_cnr_half() -> None:
    img, centres = _spots(0.1)
    cfg = ClassicalConfig(cnr_half=3.0)
    cnr = classical_cnr(img, (0.1, 0.1), cfg)
    score = classical_score(img, (0.1, 0.1), cfg)
    r, c = centres[0]
    assert score[r, c] == pytest.approx(1 - 2 ** (-cnr[r, c] / 3.0), rel=1e-5)
    with pytest.raises(ValueError):
        ClassicalConfig(sigma_spot_mm=1.0, sigma_background_mm=0.5)
