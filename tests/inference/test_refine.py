"""TT-GPR (mcgenref.inference.refine) with hand-made networks whose behaviour is known.

The fake generator's velocity transports any state straight to the residual
``RS * AMP * seed_map`` (the exact rectified-flow field towards that target), so a projection
``y + residual / RS`` "restores" a bright MC at every seed and keeps the background elsewhere. The fake segmentor's logits are ``GAIN * (x - LEVEL)``,
so a pixel is an MC where the intensity exceeds LEVEL. A faint MC (below LEVEL in the
observation) is then recovered by TT-GPR exactly when it is seeded.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from mcgenref.flow.seeds import SeedConfig
from mcgenref.inference.refine import (
    ProjectionRequest,
    RefineConfig,
    Refiner,
    _fold_batch_norms,
    _for_windows,
    _laplacian,
    _taper,
    plan_windows,
    solve_refinement,
)
from mcgenref.models.generator import GeneratorConfig, GeneratorContract, build_generator

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


BASE = RefineConfig(seeds=SeedConfig(rule="probability", min_prob=0.2), k=2, rounds=1)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="window_px"):
        RefineConfig(window_px=40)
    with pytest.raises(ValueError, match="margin_px"):
        RefineConfig(window_px=32, margin_px=16)
    with pytest.raises(ValueError, match="k must"):
        RefineConfig(k=0)
    with pytest.raises(ValueError, match="t_start"):
        RefineConfig(t_start=1.0)


def test_the_default_cap_keeps_the_strongest_windows() -> None:
    # 16 separate candidates on a 4 x 4 grid, 100 px apart, logits rising with their index:
    # the default cap (9) keeps the 9 strongest, one window each, and counts the 7 it drops
    logits = np.full((400, 400), -20.0, dtype=np.float32)
    centres = [(50 + 100 * i, 50 + 100 * j) for i in range(4) for j in range(4)]
    for n, (r, c) in enumerate(centres):
        logits[r, c] = -6.0 + 0.5 * n
    config = RefineConfig()
    corners, dropped = plan_windows(logits, np.ones(logits.shape, bool), SPACING, config)
    assert config.max_windows == len(corners) == 9 and dropped == 7
    half = config.window_px // 2
    assert sorted((r0 + half, c0 + half) for r0, c0 in corners) == sorted(centres[-9:])


def test_taper_is_one_inside_and_falls_to_the_edge() -> None:
    taper = _taper(64, 8)
    assert taper[8:56, 8:56].min() == 1.0
    assert 0.0 < taper[0, 32] < 0.1 and 0.0 < taper[32, 63] < 0.1
    np.testing.assert_allclose(taper, taper[::-1, ::-1])


def test_plan_windows_one_per_separate_candidate_and_respects_the_cap() -> None:
    prob = np.zeros((200, 200), dtype=np.float32)
    prob[30, 30], prob[34, 36], prob[150, 160] = 0.9, 0.5, 0.7  # two close, one far
    logits = np.log(np.clip(prob, 1e-9, None) / np.clip(1 - prob, 1e-9, None))
    region = np.ones_like(prob, dtype=bool)
    config = dataclasses.replace(RefineConfig(), seeds=BASE.seeds)  # min_prob 0.2
    corners, dropped = plan_windows(logits, region, SPACING, config)
    assert len(corners) == 2 and dropped == 0
    r0, c0 = corners[0]  # the strongest first, centred on it
    assert (r0, c0) == (30 - 32 if 30 - 32 >= 0 else 0, 0)
    corners, dropped = plan_windows(logits, region, SPACING, dataclasses.replace(config, max_windows=1))
    assert len(corners) == 1 and dropped == 1
    # outside the region nothing is planned
    assert plan_windows(logits, np.zeros_like(region), SPACING, config) == ([], 0)
    # a probability threshold of 0.8 leaves the two weak candidates out
    strict = dataclasses.replace(config, seeds=SeedConfig(rule="probability", min_prob=0.8))
    assert len(plan_windows(logits, region, SPACING, strict)[0]) == 1


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
        x = refiner.projector(ProjectionRequest(y, seed_map, [[]], [(0, 0)], noise))[0, :, None]
        assert x.shape == (2, 1, 16, 16)
        assert torch.allclose(x[:, 0, 8, 8], torch.full((2,), 0.3 + added), atol=1e-4)
        assert torch.allclose(x[:, 0, 0, 0], torch.full((2,), 0.3), atol=1e-4)


# ------------------------------------------------------------------ the energy and its solve


def _energy(z, z0, zeta, y, c: RefineConfig) -> torch.Tensor:
    """The documented energy (module docstring, step 4), written out term by term."""
    s = torch.sigmoid(zeta)
    agree = (1 - 2 * s.std(dim=1, keepdim=True, unbiased=False)).clamp(0, 1)
    e = 1e-6 * (z - z0) ** 2 + c.proximity_weight * (z - z0) ** 2
    e = e + c.fit_weight * agree * (z - zeta.mean(dim=1, keepdim=True)) ** 2
    t = torch.where(s >= c.overlap_threshold, c.overlap_logit, -c.overlap_logit)
    wrong = (((t > 0) & (z < t)) | ((t < 0) & (z > t))).float()
    e = e + c.overlap_weight * agree * (wrong * (z - t) ** 2).mean(dim=1, keepdim=True)
    wy = torch.exp(-((y[..., 1:, :] - y[..., :-1, :]) ** 2) / (2 * c.edge_sigma**2))
    wx = torch.exp(-((y[..., :, 1:] - y[..., :, :-1]) ** 2) / (2 * c.edge_sigma**2))
    e_edge = (wy * (z[..., 1:, :] - z[..., :-1, :]) ** 2).sum() + (wx * (z[..., :, 1:] - z[..., :, :-1]) ** 2).sum()
    return e.sum() + c.edge_weight * e_edge


def test_the_solve_reaches_the_energys_minimum() -> None:
    """The refined logits are a stationary point of the energy (zero gradient, every term on),
    and no random nearby point has a lower energy."""
    g = torch.Generator().manual_seed(0)
    z0 = 4 * torch.randn(2, 1, 16, 16, generator=g)
    zeta = z0 + 3 * torch.randn(2, 3, 16, 16, generator=g)
    y = 0.3 + 0.05 * torch.randn(2, 1, 16, 16, generator=g)
    c = dataclasses.replace(RefineConfig(), solver_tolerance=1e-7, refine_steps=500, logit_clip=50.0)
    z, info = solve_refinement(z0, zeta, y, c)
    assert info["settled"]
    zz = z.clone().requires_grad_(True)
    _energy(zz, z0, zeta, y, c).backward()
    assert zz.grad.abs().max() < 1e-3
    e_min = float(_energy(z, z0, zeta, y, c))
    for _ in range(10):
        assert float(_energy(z + 0.05 * torch.randn(z.shape, generator=g), z0, zeta, y, c)) > e_min


def test_weights_are_shares_of_the_targets() -> None:
    """Without edge and overlap, each pixel's refined logit is the weighted average of the
    surrogates' mean logit (weight ``fit_weight * agreement``) and ``z0``."""
    z0 = torch.full((1, 1, 4, 4), -2.0)
    zeta = torch.full((1, 2, 4, 4), 4.0)  # both projections agree: agreement 1
    c = dataclasses.replace(RefineConfig(), edge=False, overlap=False, fit_weight=3.0, proximity_weight=1.0)
    z, _ = solve_refinement(z0, zeta, torch.zeros_like(z0), c)
    torch.testing.assert_close(z, torch.full_like(z0, (3 * 4.0 + 1 * -2.0) / 4), atol=1e-4, rtol=0)


def test_laplacian_is_symmetric_and_kills_constants() -> None:
    g = torch.Generator().manual_seed(1)
    wy, wx = torch.rand(1, 1, 5, 6, generator=g), torch.rand(1, 1, 6, 5, generator=g)
    a, b = torch.randn(1, 1, 6, 6, generator=g), torch.randn(1, 1, 6, 6, generator=g)
    assert torch.allclose((a * _laplacian(b, wy, wx)).sum(), (b * _laplacian(a, wy, wx)).sum(), atol=1e-5)
    assert _laplacian(torch.full((1, 1, 6, 6), 3.0), wy, wx).abs().max() < 1e-6


class ScaledGenerator(FakeGenerator):
    """The exact field towards the residual ``RS * amp * seed_map``: a projection adds ``amp``
    at each seed (negative: it erases what is there)."""

    def __init__(self, amp: float) -> None:
        super().__init__()
        self.amp = amp

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        target = RS * self.amp * cond["seed_map"]
        return (target - x) / (1.0 - t.reshape(-1, 1, 1, 1)).clamp_min(1e-3)


def _one_spot(logit: float, strong: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A flat background (logit -3.6) with a small spot of segmentor logit ``logit`` at
    (32, 32), and with ``strong`` a confident MC (logit 8) 2.4 mm away in the same window."""
    image = np.full((64, 64), 0.3, dtype=np.float32)
    rr, cc = np.mgrid[0:64, 0:64]
    image[(rr - 32) ** 2 + (cc - 32) ** 2 <= 2] = LEVEL + logit / GAIN
    if strong:
        image[(rr - 32) ** 2 + (cc - 44) ** 2 <= 2] = LEVEL + 8.0 / GAIN
    with torch.no_grad():
        logits = FakeSegmentor()(torch.from_numpy(image)[None, None])[0, 0].numpy()
    return image, logits


# seeds at every candidate above p = 0.1; otherwise the defaults (so the test reads the same
# against any RefineConfig that has these fields)
WEAK_SEEDS = RefineConfig(seeds=SeedConfig(rule="probability", min_prob=0.1), k=2, rounds=1)


def test_a_weak_true_candidate_the_surrogates_raise_ends_higher() -> None:
    """A candidate at p = 0.12 (logit -2) that every projection raises to p = 0.9 (logit
    2.2), beside a confident MC that they keep: the refined logit must rise. (The Adam +
    soft-Dice objective of before lowered it: 0.9 is below its mask threshold 0.98, so its
    window-wide overlap term, driven by the confident MC's mask, pushed it down.)"""
    image, logits = _one_spot(-2.0, strong=True)
    amp = (2.2 - -2.0) / GAIN
    result = Refiner(FakeSegmentor(), ScaledGenerator(amp), WEAK_SEEDS, "cpu").refine(
        image, np.ones_like(image, bool), logits, SPACING)
    assert result.logits[32, 32] > logits[32, 32] + 2.0
    assert 1 / (1 + np.exp(-result.logits[32, 32])) > 0.5


def test_a_confident_candidate_the_surrogates_deny_ends_lower() -> None:
    """A candidate at p = 0.993 (logit 5) that every projection erases (logit -3): the
    refined logit must fall below the decision threshold 0.5."""
    image, logits = _one_spot(5.0)
    amp = -(5.0 - -3.0) / GAIN
    result = Refiner(FakeSegmentor(), ScaledGenerator(amp), WEAK_SEEDS, "cpu").refine(
        image, np.ones_like(image, bool), logits, SPACING)
    assert result.logits[32, 32] < logits[32, 32] - 2.0
    assert 1 / (1 + np.exp(-result.logits[32, 32])) < 0.5


def test_a_projector_stands_in_for_the_generator() -> None:
    """The projector seam: a callable that adds a bright MC only in the window holding image
    pixel (40, 40) recovers the faint MC there, and is told each window's corner and seeds."""
    image, logits = _scene()
    seen = []

    def oracle(request: ProjectionRequest) -> torch.Tensor:
        b, k, h, w = request.noise.shape
        x = request.observation.expand(b, k, h, w).clone()
        for i, (r0, c0) in enumerate(request.corners):
            seen.append(((r0, c0), len(request.seeds[i])))
            if r0 <= 40 < r0 + h and c0 <= 40 < c0 + w:
                x[i, :, 40 - r0 - 1 : 40 - r0 + 2, 40 - c0 - 1 : 40 - c0 + 2] += AMP
        return x

    result = Refiner(FakeSegmentor(), None, BASE, "cpu", projector=oracle).refine(
        image, np.ones_like(image, bool), logits, SPACING)
    assert 1 / (1 + np.exp(-result.logits[40, 40])) > 0.9
    assert len(seen) == 2 and all(n >= 1 for _, n in seen)
    with pytest.raises(ValueError, match="generator or a projector"):
        Refiner(FakeSegmentor(), None, BASE, "cpu")


def _cluster_scene() -> tuple[np.ndarray, np.ndarray]:
    """Six faint MCs in one window (each below LEVEL in the observation): image, logits."""
    image = np.full((64, 64), 0.3, dtype=np.float32)
    rr, cc = np.mgrid[0:64, 0:64]
    for r, c in ((20, 20), (20, 32), (20, 44), (40, 20), (40, 32), (40, 44)):
        image[(rr - r) ** 2 + (cc - c) ** 2 <= 2] = 0.55
    with torch.no_grad():
        logits = FakeSegmentor()(torch.from_numpy(image)[None, None])[0, 0].numpy()
    return image, logits


def test_seed_keep_gives_each_projection_its_own_seed_subset() -> None:
    """With ``seed_keep`` < 1 the K projections see different seeds (so they differ), each a
    subset of the window's; the draw is fixed by the seed; 1 keeps the shared map."""
    image, logits = _cluster_scene()
    seen: list[torch.Tensor] = []

    def recorder(request: ProjectionRequest) -> torch.Tensor:
        seen.append(request.seed_map.clone())
        b, k, h, w = request.noise.shape
        return request.observation.expand(b, k, h, w) + AMP * request.seed_map.expand(b, k, h, w)

    config = dataclasses.replace(BASE, k=4, seed_keep=0.5)
    region = np.ones_like(image, bool)
    result = Refiner(FakeSegmentor(), None, config, "cpu", projector=recorder).refine(image, region, logits, SPACING)
    maps = seen[-1]
    assert maps.shape == (1, 4, 64, 64)
    peaks = [[bool(maps[0, j, r, c] > 0.5) for r, c in ((20, 20), (20, 32), (20, 44), (40, 20), (40, 32), (40, 44))]
             for j in range(4)]
    assert len({tuple(p) for p in peaks}) > 1  # the projections are conditioned differently
    assert not all(all(p) for p in peaks) and any(any(p) for p in peaks)
    assert float(result.uncertainty.max()) > 0.2  # so their surrogates disagree
    seen.clear()
    Refiner(FakeSegmentor(), None, config, "cpu", projector=recorder).refine(image, region, logits, SPACING)
    assert torch.equal(seen[-1], maps)  # deterministic
    seen.clear()
    Refiner(FakeSegmentor(), None, dataclasses.replace(config, seed_keep=1.0), "cpu",
            projector=recorder).refine(image, region, logits, SPACING)
    assert seen[-1].shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="seed_keep"):
        RefineConfig(seed_keep=0.0)


# ------------------------------------------------------------------ speed without a change


def _small_networks() -> tuple[nn.Module, nn.Module]:
    """A small convolutional segmentor and generator with fixed random weights (convolutions,
    so the CPU's channels-last copies really run another kernel than the caller's modules)."""
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    with torch.no_grad():
        seg[2].bias.fill_(-2.0)
    gen = build_generator(GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4))
    nn.init.normal_(gen.out_conv.weight, std=0.1)  # not the zero velocity of a fresh network
    return seg.eval(), gen.eval()


def test_the_fast_cpu_path_gives_the_logits_of_the_plain_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels-last copies of the networks and a one-thread solve (the CPU's fast path) give
    the refined logits, uncertainty and counts of the plain path up to float rounding, and
    leave the caller's segmentor as it was."""
    import mcgenref.inference.refine as refine_module

    image, logits = _scene()
    region = np.ones_like(image, bool)
    seg, gen = _small_networks()
    config = dataclasses.replace(BASE, k=3, rounds=2)
    refiner = Refiner(seg, gen, config, "cpu")
    fast = refiner.refine(image, region, logits, SPACING)
    assert refiner._window_segmentor is not seg
    assert refiner._window_segmentor[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert seg[2].weight.is_contiguous()  # the caller's module is not converted
    monkeypatch.setattr(refine_module, "_for_windows", lambda net, device: net)
    monkeypatch.setattr(refine_module, "_one_thread", contextlib.nullcontext)
    plain = Refiner(seg, gen, config, "cpu").refine(image, region, logits, SPACING)
    assert fast.info["windows"] == 2 and fast.info["window_rounds"] >= 2
    assert {k: v for k, v in fast.info.items() if k != "refine_s"} == \
        {k: v for k, v in plain.info.items() if k != "refine_s"}
    assert np.abs(fast.logits - logits).max() > 0.1  # the refinement did change something
    np.testing.assert_allclose(fast.logits, plain.logits, atol=1e-4)
    np.testing.assert_allclose(fast.uncertainty, plain.uncertainty, atol=1e-5)


def _conv_bn_net() -> nn.Sequential:
    """conv -> batch norm (running statistics and affine far from the identity) -> ReLU -> conv."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 9.0]))
        bn.weight.copy_(torch.tensor([2.0, -0.5, 1.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 1.0]))
    return net.eval()


def _batch_norms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_batch_norms_are_folded_into_the_windows_copy_only_where_that_is_exact() -> None:
    """The CPU's window copy of a segmentor folds conv -> batch norm into one convolution (the
    same outputs up to rounding, channels-last, the caller's module untouched); a convolution
    with a second user, a network in training mode and one that torch.fx cannot trace keep
    their batch norms (and their outputs)."""
    net = _conv_bn_net()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)
        window = _for_windows(net, torch.device("cpu"))
        assert _batch_norms(window) == 0 and _batch_norms(net) == 1
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in window.parameters() if p.ndim == 4)
        torch.testing.assert_close(window(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net(x), expected, atol=0, rtol=0)  # the caller's module as it was

    class SecondUser(nn.Module):  # the convolution's output is used after the norm too
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = _conv_bn_net()[0], _conv_bn_net()[1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x)
            return self.bn(a) + a

    class Untraceable(SecondUser):  # control flow on a tensor's value
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else self.conv(x)

    class Shared(SecondUser):  # one convolution module called twice, once before the norm
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.conv(x)

    for cls in (SecondUser, Untraceable, Shared):
        other = cls().eval()
        with torch.no_grad():
            ref = other(x)
            kept = _for_windows(other, torch.device("cpu"))
            assert _batch_norms(kept) == 1
            torch.testing.assert_close(kept(x), ref, atol=1e-6, rtol=1e-6)
    untraceable = Untraceable().eval()
    assert _fold_batch_norms(untraceable) is untraceable
    assert _batch_norms(_for_windows(_conv_bn_net().train(), torch.device("cpu"))) == 1


def test_a_batch_norm_segmentor_refines_the_same_with_its_folded_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """TT-GPR with a segmentor holding batch norms: the folded channels-last window copy gives
    the refined logits of the network as it is (up to rounding), with the same counts."""
    import mcgenref.inference.refine as refine_module

    image, logits = _scene()
    region = np.ones_like(image, bool)
    _, gen = _small_networks()
    seg = _conv_bn_net()
    config = dataclasses.replace(BASE, k=3, rounds=2)
    with torch.no_grad():
        logits = seg(torch.from_numpy(image)[None, None])[0, 0].numpy()
    fast = Refiner(seg, gen, config, "cpu")
    assert _batch_norms(fast._window_segmentor) == 0
    folded = fast.refine(image, region, logits, SPACING)
    monkeypatch.setattr(refine_module, "_for_windows", lambda net, device: net)
    plain = Refiner(seg, gen, config, "cpu").refine(image, region, logits, SPACING)
    assert folded.info["windows"] >= 1 and np.abs(folded.logits - logits).max() > 0.1
    assert {k: v for k, v in folded.info.items() if k != "refine_s"} == \
        {k: v for k, v in plain.info.items() if k != "refine_s"}
    np.testing.assert_allclose(folded.logits, plain.logits, atol=1e-4)


def test_one_thread_restores_the_thread_count() -> None:
    from mcgenref.inference.refine import _one_thread

    before = torch.get_num_threads()
    with _one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
