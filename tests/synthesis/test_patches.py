from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import InputError
from mcgenref.synthesis.patches import NegativePatchSampler, PatchSamplerConfig, _valid_origins


def test_valid_origins_known_answer() -> None:
    breast = np.zeros((10, 10), bool)
    breast[2:8, 3:9] = True  # a 6x6 square
    origins = _valid_origins(breast, 4, 1.0)
    expected = {(r, c) for r in range(2, 5) for c in range(3, 6)}
    assert {tuple(o) for o in origins} == expected
    assert len(_valid_origins(breast, 11, 0.5)) == 0


def test_patches_lie_inside_breast(phantom_folder) -> None:
    paths = sorted(phantom_folder.glob("*.png"))
    sampler = NegativePatchSampler(paths, 48, pixel_spacing_mm=0.2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, breast, source = sampler.draw(rng)
        assert image.shape == (48, 48) and image.dtype == np.float32
        assert breast.mean() >= 0.95
        # normalised inside the breast: tissue around 0..1, not raw 0..255
        assert -1.0 < float(np.median(image[breast])) < 2.0
        assert source["kind"] == "negative" and source["spacing_mm"] == [0.2, 0.2]


def test_canonical_spacing_resamples(phantom_folder) -> None:
    path = sorted(phantom_folder.glob("*.png"))[0]
    native = NegativePatchSampler([path], 32, pixel_spacing_mm=0.2)
    fine = NegativePatchSampler(
        [path], 32, PatchSamplerConfig(target_spacing_mm=0.1), pixel_spacing_mm=0.2
    )
    a, b = native.negatives[0], fine.negatives[0]
    assert b.spacing_mm == (0.1, 0.1)
    # the same physical breast covers 2x the pixels per axis at half the spacing
    assert b.breast.sum() / a.breast.sum() == pytest.approx(4.0, rel=0.05)
    image, _, src = fine.draw(np.random.default_rng(1))
    assert src["original_row"] == pytest.approx((src["row"] + b.crop_origin[0]) / 2.0)


def test_no_usable_negative_is_an_error(tmp_path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.full((40, 40), 100, np.uint8) + np.eye(40, dtype=np.uint8)).save(small)
    with pytest.raises(InputError):
        NegativePatchSampler([small], 256, pixel_spacing_mm=0.2)
