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


# --------------------------------------------------------------------------- hard negatives


def _hard_file(tmp_path, centres) -> object:
    import json

    path = tmp_path / "hard.json"
    path.write_text(json.dumps({"candidates": [
        {"image": str(p), "row": r, "col": c, "score": 0.99} for p, r, c in centres
    ]}))
    return path


def test_hard_negative_patches_hold_their_centre(phantom_folder, tmp_path) -> None:
    from mcgenref.synthesis.patches import HardNegativePatchSampler, read_hard_negatives
    from mcgenref.synthesis.sample import generate_sample
    from mcgenref.synthesis.config import SynthesisConfig

    paths = sorted(phantom_folder.glob("*.png"))
    base = NegativePatchSampler(paths, 32, PatchSamplerConfig(target_spacing_mm=0.4),
                                pixel_spacing_mm=0.2)
    neg = base.negatives[1]
    # a centre in the middle of image 1's breast, on the ORIGINAL grid (0.2 mm: 2x the work grid)
    mid = neg.valid_origins[len(neg.valid_origins) // 2] + 16
    orig = (int(mid[0] + neg.crop_origin[0]) * 2, int(mid[1] + neg.crop_origin[1]) * 2)
    unknown = (tmp_path / "elsewhere.png", 10, 10)
    centres = read_hard_negatives(_hard_file(tmp_path, [(paths[1], *orig), unknown]))
    hard = HardNegativePatchSampler(base, centres)
    assert len(hard) == 1 and hard.n_dropped == 1 and hard.centre_margin_px == 8
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(30):
        image, breast, source = hard.draw(rng)
        assert source["path"] == neg.source_path and breast.mean() >= 0.95
        r, c = mid[0] - source["row"], mid[1] - source["col"]
        # the centre lies at least a quarter patch (8 px) inside the 32 px patch
        assert 8 <= r <= 23 and 8 <= c <= 23
        assert np.array_equal(image, neg.image[source["row"]:source["row"] + 32,
                                               source["col"]:source["col"] + 32])
        assert source["hard_negative"] == {"original_row": orig[0], "original_col": orig[1]}
        corners.add((source["row"], source["col"]))
    assert len(corners) > 5  # the position inside the patch varies
    # it stands in for the base sampler in the synthesis, and its samples replay with the base
    config = SynthesisConfig(patch_size_px=32)
    sample = generate_sample(7, config, hard, (0.4, 0.4))
    assert sample.record["source"]["hard_negative"]["original_row"] == orig[0]
    from mcgenref.synthesis.sample import replay_sample

    assert np.array_equal(replay_sample(sample.record, config, base).image, sample.image)


def test_hard_negative_file_errors(phantom_folder, tmp_path) -> None:
    from mcgenref.synthesis.patches import HardNegativePatchSampler, read_hard_negatives

    bad = tmp_path / "bad.json"
    bad.write_text('{"centres": []}')
    with pytest.raises(InputError, match="not a hard-negative file"):
        read_hard_negatives(bad)
    paths = sorted(phantom_folder.glob("*.png"))
    base = NegativePatchSampler(paths[:1], 32, pixel_spacing_mm=0.2)
    # a centre in the air corner has no valid patch around it
    with pytest.raises(InputError, match="none of the 1"):
        HardNegativePatchSampler(base, read_hard_negatives(_hard_file(tmp_path, [(paths[0], 0, 0)])))
