"""TT-GPR (mcgenref.inference.refine) with hand-made networks whose behaviour is known.

The fake generator's velocity transports any state straight to the residual
``RS * AMP * seed_map`` (the exact rectified-flow field towards that target), so a projection
``y + residual / RS`` "restores" a bright MC at every seed and keeps the background elsewhere. The fake segmentor's logits are ``GAIN * (x - LEVEL)``,
so a pixel is an MC where the intensity exceeds LEVEL. A faint MC (below LEVEL in the
observation) is then recovered by TT-GPR exactly when it is seeded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from mcgenref.inference.refine import RefineConfig, Refiner, _taper, plan_windows
from mcgenref.models.generator import GeneratorContract

AMP, GAIN, LEVEL = 1.0, 12.0, 0.6
RS = 10.0  # the generator's residual scale (the default GeneratorContract's)
SPACING = (0.2, 0.2)


class FakeGenerator(nn.Module):
    """The exact field towards the residual ``RS * AMP * seed_map`` (a bright MC at each seed)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        target = RS * AMP * cond["seed_map"]
        t = t.reshape(-1, 1, 1, 1)
        return (target - x) / (1.0 - t).clamp_min(1e-3)


class FakeSegmentor(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GAIN * (x - LEVEL)


def _scene(faint_at=(40, 40), strong_at=(100, 90)) -> tuple[np.ndarray, np.ndarray]:
    """A flat 0.3 background, one strong MC (0.9) and one faint MC (0.55): image, logits."""
    image = np.full((128, 128), 0.3, dtype=np.float32)
    rr, cc = np.mgrid[0:128, 0:128]
    for (r, c), value in ((faint_at, 0.55), (strong_at, 0.9)):
        image[(rr - r) ** 2 + (cc - c) ** 2 <= 2] = value
    with torch.no_grad():
        logits = FakeSegmentor()(torch.from_numpy(image)[None, None])[0, 0].numpy()
    return image, logits


def _refiner(config: RefineConfig) -> Refiner:
    return Refiner(FakeSegmentor(), FakeGenerator(), config, "cpu")


BASE = RefineConfig(seeds=dataclasses.replace(RefineConfig().seeds, min_prob=0.2), k=2, rounds=1,
                    refine_steps=40)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="window_px"):
        RefineConfig(window_px=40)
    with pytest.raises(ValueError, match="margin_px"):
        RefineConfig(window_px=32, margin_px=16)
    with pytest.raises(ValueError, match="k must"):
        RefineConfig(k=0)
    with pytest.raises(ValueError, match="t_start"):
        RefineConfig(t_start=1.0)


def test_taper_is_one_inside_and_falls_to_the_edge() -> None:
    taper = _taper(64, 8)
    assert taper[8:56, 8:56].min() == 1.0
    assert 0.0 < taper[0, 32] < 0.1 and 0.0 < taper[32, 63] < 0.1
    np.testing.assert_allclose(taper, taper[::-1, ::-1])


def test_plan_windows_one_per_separate_candidate_and_respects_the_cap() -> None:
    prob = np.zeros((200, 200), dtype=np.float32)
    prob[30, 30], prob[34, 36], prob[150, 160] = 0.9, 0.5, 0.7  # two close, one far
    region = np.ones_like(prob, dtype=bool)
    config = dataclasses.replace(RefineConfig(), seeds=BASE.seeds)  # min_prob 0.2
    corners, dropped = plan_windows(prob, region, SPACING, config)
    assert len(corners) == 2 and dropped == 0
    r0, c0 = corners[0]  # the strongest first, centred on it
    assert (r0, c0) == (30 - 32 if 30 - 32 >= 0 else 0, 0)
    corners, dropped = plan_windows(prob, region, SPACING, dataclasses.replace(config, max_windows=1))
    assert len(corners) == 1 and dropped == 1
    # outside the region nothing is planned
    assert plan_windows(prob, np.zeros_like(region), SPACING, config) == ([], 0)
    # the default seeds threshold (0.83) leaves the two weak candidates out
    assert len(plan_windows(prob, region, SPACING, RefineConfig())[0]) == 1


def test_no_candidate_leaves_the_logits_untouched() -> None:
    image = np.full((64, 64), 0.3, dtype=np.float32)
    logits = np.full((64, 64), -5.0, dtype=np.float32)
    result = _refiner(BASE).refine(image, np.ones_like(image, bool), logits, SPACING)
    np.testing.assert_array_equal(result.logits, logits)
    assert not result.uncertainty.any() and result.info["windows"] == 0


def test_only_proximity_keeps_the_initial_logits() -> None:
    image, logits = _scene()
    config = dataclasses.replace(BASE, fit=False, overlap=False, edge=False)
    result = _refiner(config).refine(image, np.ones_like(image, bool), logits, SPACING)
    np.testing.assert_allclose(result.logits, np.clip(logits, -12, 12), atol=1e-5)


def test_a_faint_seeded_mc_is_recovered_and_the_background_stays() -> None:
    image, logits = _scene()
    assert 1 / (1 + np.exp(-logits[40, 40])) < 0.5  # missed by the segmentor alone
    result = _refiner(BASE).refine(image, np.ones_like(image, bool), logits, SPACING)
    prob = 1 / (1 + np.exp(-result.logits))
    assert prob[40, 40] > 0.9  # recovered
    assert prob[100, 90] > 0.9  # the strong one kept
    far = np.ones_like(image, bool)
    far[25:56, 25:56] = False
    far[85:116, 75:106] = False
    assert prob[far].max() < 0.05  # nothing appears away from the candidates
    assert result.info["windows"] == 2


def test_without_seeds_the_faint_mc_is_not_recovered() -> None:
    image, logits = _scene()
    result = _refiner(dataclasses.replace(BASE, use_seeds=False)).refine(
        image, np.ones_like(image, bool), logits, SPACING)
    prob = 1 / (1 + np.exp(-result.logits))
    assert prob[40, 40] < 0.5


def test_deterministic_and_independent_of_batching() -> None:
    image, logits = _scene()
    region = np.ones_like(image, bool)
    a = _refiner(dataclasses.replace(BASE, batch_windows=1)).refine(image, region, logits, SPACING)
    b = _refiner(dataclasses.replace(BASE, batch_windows=8)).refine(image, region, logits, SPACING)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    np.testing.assert_allclose(a.uncertainty, b.uncertainty, atol=1e-6)


class NoisyGenerator(FakeGenerator):
    """Restores an MC only when the start noise at the seed is positive: projections disagree."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        on = (x > 0).float() * cond["seed_map"]
        target = RS * AMP * on
        return (target - x) / (1.0 - t.reshape(-1, 1, 1, 1)).clamp_min(1e-3)


def test_uncertainty_is_high_where_projections_disagree() -> None:
    image, logits = _scene()
    config = dataclasses.replace(BASE, k=8, sampler_steps=1)
    result = Refiner(FakeSegmentor(), NoisyGenerator(), config, "cpu").refine(
        image, np.ones_like(image, bool), logits, SPACING)
    # the seeded faint MC: each pixel is drawn by ~30 % of the projections
    assert result.uncertainty[38:43, 38:43].max() > 0.2
    assert result.uncertainty[5, 5] == 0.0  # outside every window
    # another seed gives other noise, hence (here) other projections
    other = Refiner(FakeSegmentor(), NoisyGenerator(), dataclasses.replace(config, seed=1), "cpu").refine(
        image, np.ones_like(image, bool), logits, SPACING)
    assert not np.array_equal(other.uncertainty, result.uncertainty)


def test_overlap_threshold_decides_which_surrogate_pixels_are_mcs() -> None:
    """With projections equal to the observation (no seeds), a candidate of probability 0.7 is
    in every projection's mask at overlap_threshold 0.5 (the overlap term raises it) and in
    none at 0.9 (the overlap term lowers it)."""
    image = np.full((64, 64), 0.3, dtype=np.float32)
    image[31:34, 31:34] = LEVEL + np.log(0.7 / 0.3) / GAIN
    with torch.no_grad():
        logits = FakeSegmentor()(torch.from_numpy(image)[None, None])[0, 0].numpy()
    region = np.ones_like(image, bool)
    only_overlap = dataclasses.replace(BASE, use_seeds=False, fit=False, edge=False, proximity=False)
    prob = {}
    for threshold in (0.5, 0.9):
        config = dataclasses.replace(only_overlap, overlap_threshold=threshold)
        z = _refiner(config).refine(image, region, logits, SPACING).logits
        prob[threshold] = 1 / (1 + np.exp(-z[32, 32]))
    assert prob[0.5] > 0.9 and prob[0.9] < 0.5
    with pytest.raises(ValueError, match="overlap_threshold"):
        RefineConfig(overlap_threshold=1.0)


def test_projections_follow_the_generators_contract() -> None:
    """The fake generator's residual is RS x AMP at a seed: read with the scale it was made
    for, a projection adds AMP; read with twice the scale, half of it."""
    y = torch.full((1, 1, 16, 16), 0.3)
    seed_map = torch.zeros_like(y)
    seed_map[..., 8, 8] = 1.0
    noise = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    config = dataclasses.replace(BASE, sampler_steps=8)
    for scale, added in ((RS, AMP), (2 * RS, AMP / 2)):
        refiner = Refiner(FakeSegmentor(), FakeGenerator(), config, "cpu",
                          contract=GeneratorContract(residual_scale=scale))
        x = refiner._project(y, seed_map, noise)
        assert x.shape == (2, 1, 16, 16)
        assert torch.allclose(x[:, 0, 8, 8], torch.full((2,), 0.3 + added), atol=1e-4)
        assert torch.allclose(x[:, 0, 0, 0], torch.full((2,), 0.3), atol=1e-4)
