"""render_sample: partial volume, PSF, contrast, noise, the mask rule, determinism, speed."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from mcgenref.synthesis.background import procedural_background
from mcgenref.synthesis.config import MaskConfig, NoiseConfig, SynthesisConfig
from mcgenref.synthesis.geometry import (
    MORPHOLOGIES,
    MCParams,
    SampleParams,
    draw_sample_params,
)
from mcgenref.synthesis.render import render_sample, thickness_window

CFG = SynthesisConfig()
QUIET = dataclasses.replace(CFG, noise=NoiseConfig(enabled=False))


def _mc(row=32.3, col=30.7, r=0.3, morphology="punctate", att=2.0, psf=0.05, axes=None,
        seed=1, orientation=0.0) -> MCParams:
    axes = axes or (r, r, r)
    size = 2 * axes[0]
    return MCParams(centre_row=row, centre_col=col, size_mm=size, morphology=morphology,
                    axes_mm=axes, orientation_rad=orientation, shape_seed=seed,
                    attenuation_per_mm=att, psf_sigma_mm=psf)


def _params(mcs, shape=(64, 64), spacing=(0.1, 0.1), gain=0.4) -> SampleParams:
    return SampleParams(shape=shape, spacing_mm=spacing, kind="isolated", clusters=(),
                        mcs=tuple(mcs), noise_gain=gain)


def _flat(value=0.5, shape=(64, 64)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _noisy(std=0.01, shape=(64, 64), seed=0) -> np.ndarray:
    return (0.5 + std * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# ----------------------------------------------------------------- partial volume geometry


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.07, 0.07), (0.1, 0.05), (0.2, 0.2)])
def test_sphere_volume_and_disc_area(spacing) -> None:
    r = 0.4
    mc = _mc(r=r)
    _, _, thick, cover = thickness_window(mc, spacing, CFG)
    px_area = spacing[0] * spacing[1]
    assert thick.sum() * px_area == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)
    assert cover.sum() * px_area == pytest.approx(math.pi * r**2, rel=0.02)
    assert cover.min() >= 0 and cover.max() <= 1


def test_thickness_peak_is_the_diameter() -> None:
    mc = _mc(row=20.0, col=20.0, r=0.5)
    cfg = dataclasses.replace(CFG, supersample=9)
    _, _, thick, _ = thickness_window(mc, (0.1, 0.1), cfg)
    assert thick.max() == pytest.approx(1.0, rel=0.02)  # 2 * r through the centre


def test_same_mc_covers_four_times_the_pixels_at_half_the_spacing() -> None:
    mc = _mc(r=0.45)
    _, _, _, c1 = thickness_window(mc, (0.1, 0.1), CFG)
    _, _, _, c2 = thickness_window(mc, (0.2, 0.2), CFG)
    assert c1.sum() / c2.sum() == pytest.approx(4.0, rel=0.02)
    bg1, bg2 = _flat(shape=(80, 80)), _flat(shape=(40, 40))
    m1 = _mc(row=40.2, col=39.6, r=0.45)
    m2 = _mc(row=20.1, col=19.8, r=0.45)
    r1 = render_sample(bg1, (0.1, 0.1), _params([m1], (80, 80), (0.1, 0.1)), QUIET, 0)
    r2 = render_sample(bg2, (0.2, 0.2), _params([m2], (40, 40), (0.2, 0.2)), QUIET, 0)
    assert r1.mask.sum() / r2.mask.sum() == pytest.approx(4.0, rel=0.25)


def test_anisotropic_spacing_gives_an_ellipse_of_the_right_aspect() -> None:
    # a round MC at (row 0.1 mm, col 0.2 mm) spacing spans twice as many rows as columns
    mc = _mc(r=0.8)
    _, _, _, cover = thickness_window(mc, (0.1, 0.2), CFG)
    rows, cols = np.indices(cover.shape)
    w = cover / cover.sum()
    var_r = (w * (rows - (w * rows).sum()) ** 2).sum()
    var_c = (w * (cols - (w * cols).sum()) ** 2).sum()
    assert math.sqrt(var_r / var_c) == pytest.approx(2.0, rel=0.05)
    res = render_sample(_flat(), (0.1, 0.2), _params([mc], spacing=(0.1, 0.2)), QUIET, 0)
    rr, cc = np.nonzero(res.mask)
    assert (rr.max() - rr.min() + 1) / (cc.max() - cc.min() + 1) == pytest.approx(2.0, rel=0.25)


@pytest.mark.parametrize("morphology", MORPHOLOGIES)
def test_every_morphology_renders(morphology) -> None:
    axes = (0.6, 0.08, 0.08) if morphology == "fine_linear" else (0.35, 0.25, 0.3)
    for seed in range(5):
        mc = _mc(morphology=morphology, axes=axes, seed=seed, orientation=0.7)
        res = render_sample(_noisy(), (0.1, 0.1), _params([mc]), CFG, seed)
        assert np.isfinite(res.image).all()
        assert res.signal.sum() > 0
        assert res.mcs[0].visible and res.mcs[0].n_mask_px >= 1


def test_linear_mc_is_elongated_along_its_orientation() -> None:
    mc = _mc(morphology="fine_linear", axes=(0.8, 0.08, 0.08), orientation=math.pi / 2,
             seed=3)  # along +y: rows
    _, _, _, cover = thickness_window(mc, (0.05, 0.05), CFG)
    rows, cols = np.indices(cover.shape)
    w = cover / cover.sum()
    var_r = (w * (rows - (w * rows).sum()) ** 2).sum()
    var_c = (w * (cols - (w * cols).sum()) ** 2).sum()
    assert var_r > 3 * var_c


# ----------------------------------------------------------------- PSF and contrast


def test_psf_preserves_the_total_signal() -> None:
    sharp = dataclasses.replace
    mcs0 = [_mc(psf=0.0), _mc(row=20.0, col=45.0, r=0.2, psf=0.0)]
    mcs1 = [sharp(m, psf_sigma_mm=0.12) for m in mcs0]
    mcs2 = [sharp(m, psf_sigma_mm=0.03) for m in mcs0]  # < 0.8 px: the 3-tap kernel
    sums = []
    peaks = []
    for mcs in (mcs0, mcs1, mcs2):
        res = render_sample(_flat(), (0.1, 0.1), _params(mcs), QUIET, 0)
        sums.append(float(res.signal.astype(np.float64).sum()))
        peaks.append(res.mcs[0].peak_contrast)
    assert sums[1] == pytest.approx(sums[0], rel=1e-5)
    assert sums[2] == pytest.approx(sums[0], rel=1e-5)
    assert peaks[1] < peaks[2] < peaks[0]


def test_anisotropic_psf_preserves_the_signal() -> None:
    mc = _mc(psf=0.0)
    a = render_sample(_flat(), (0.05, 0.1), _params([mc], spacing=(0.05, 0.1)), QUIET, 0)
    b = render_sample(_flat(), (0.05, 0.1),
                      _params([dataclasses.replace(mc, psf_sigma_mm=0.1)], spacing=(0.05, 0.1)),
                      QUIET, 0)
    assert b.signal.sum(dtype=np.float64) == pytest.approx(a.signal.sum(dtype=np.float64),
                                                           rel=1e-5)


def test_signal_is_attenuation_times_volume() -> None:
    # Beer-Lambert in the log domain: sum(signal) * pixel area = mu * m(b) * volume
    r, att, b = 0.3, 1.5, 0.2
    res = render_sample(_flat(b), (0.1, 0.1), _params([_mc(r=r, att=att)]), QUIET, 0)
    m = CFG.contrast.modulation(b)
    expected = att * m * 4 / 3 * math.pi * r**3
    assert res.signal.sum(dtype=np.float64) * 0.01 == pytest.approx(expected, rel=0.02)
    assert res.mcs[0].local_background == pytest.approx(b, abs=1e-6)


def test_contrast_is_lower_on_dense_tissue() -> None:
    mc = _mc()
    dark = render_sample(_flat(0.1), (0.1, 0.1), _params([mc]), QUIET, 0)
    bright = render_sample(_flat(0.9), (0.1, 0.1), _params([mc]), QUIET, 0)
    assert bright.mcs[0].peak_contrast < dark.mcs[0].peak_contrast
    ratio = bright.mcs[0].peak_contrast / dark.mcs[0].peak_contrast
    assert ratio == pytest.approx(CFG.contrast.modulation(0.9) / CFG.contrast.modulation(0.1),
                                  rel=1e-5)


def test_image_is_background_plus_signal_without_noise() -> None:
    bg = _noisy()
    res = render_sample(bg, (0.1, 0.1), _params([_mc()]), QUIET, 0)
    np.testing.assert_allclose(res.image, bg + res.signal, atol=1e-6)
    assert res.image.dtype == np.float32 and res.signal.dtype == np.float32


def test_noise_is_local_and_scales_with_the_background_noise() -> None:
    mc = _mc(r=0.5)
    excess = []
    for std in (0.01, 0.04):
        bg = _noisy(std)
        res = render_sample(bg, (0.1, 0.1), _params([mc], gain=1.0), CFG, 7)
        noise = res.image.astype(np.float64) - bg - res.signal
        far = np.ones_like(noise, dtype=bool)
        far[20:45, 18:44] = False
        assert np.abs(noise[far]).max() < 1e-6  # only inside the MC's window
        near = res.signal > 0.5 * res.signal.max()
        excess.append(noise[near].std())
        assert res.mcs[0].local_noise == pytest.approx(std, rel=0.25)
    assert excess[1] / excess[0] == pytest.approx(4.0, rel=0.5)


# ----------------------------------------------------------------- the mask rule


def test_mask_is_binary_and_matches_the_area() -> None:
    r = 0.4
    res = render_sample(_noisy(), (0.1, 0.1), _params([_mc(r=r)]), CFG, 0)
    assert res.mask.dtype == np.uint8
    assert set(np.unique(res.mask)) <= {0, 1}
    assert res.mask.sum() == pytest.approx(math.pi * r**2 / 0.01, rel=0.15)
    assert res.mcs[0].n_mask_px == res.mask.sum()


def test_invisible_mc_is_rendered_but_not_masked() -> None:
    res = render_sample(_noisy(0.02), (0.1, 0.1), _params([_mc(att=1e-3)]), CFG, 0)
    rec = res.mcs[0]
    assert not rec.visible and rec.n_mask_px == 0
    assert rec.cnr < CFG.mask.min_cnr
    assert res.mask.sum() == 0
    assert res.signal.sum() > 0


def test_visibility_follows_the_cnr_threshold() -> None:
    mc = _mc(att=1.0)
    base = render_sample(_noisy(0.01), (0.1, 0.1), _params([mc]), CFG, 0).mcs[0]
    cfg_hi = dataclasses.replace(CFG, mask=MaskConfig(min_cnr=base.cnr * 1.01))
    cfg_lo = dataclasses.replace(CFG, mask=MaskConfig(min_cnr=base.cnr * 0.99))
    assert not render_sample(_noisy(0.01), (0.1, 0.1), _params([mc]), cfg_hi, 0).mcs[0].visible
    assert render_sample(_noisy(0.01), (0.1, 0.1), _params([mc]), cfg_lo, 0).mcs[0].visible


def test_subpixel_mc_gets_exactly_one_pixel() -> None:
    mc = _mc(row=20.2, col=20.9, r=0.04, att=50.0, psf=0.03)  # 0.08 mm MC at 0.2 mm
    res = render_sample(_flat(shape=(40, 40)), (0.2, 0.2),
                        _params([mc], (40, 40), (0.2, 0.2)), QUIET, 0)
    assert res.mcs[0].visible
    assert res.mask.sum() == 1 and res.mask[20, 21] == 1


def test_mc_at_the_border_does_not_crash() -> None:
    mcs = [_mc(row=0.2, col=63.5), _mc(row=-0.5, col=10.0)]
    res = render_sample(_noisy(), (0.1, 0.1), _params(mcs), CFG, 0)
    assert np.isfinite(res.image).all()
    assert len(res.mcs) == 2


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError):
        render_sample(_flat(shape=(32, 32)), (0.1, 0.1), _params([_mc()]), CFG, 0)
    with pytest.raises(ValueError):
        render_sample(_flat(), (0.2, 0.2), _params([_mc()]), CFG, 0)


# ----------------------------------------------------------------- determinism and speed


def _random_sample(seed: int, spacing=(0.1, 0.1)):
    rng = np.random.default_rng(seed)
    bg = procedural_background(rng, (256, 256), spacing, CFG.background)
    cfg = dataclasses.replace(CFG, empty_fraction=0.0, isolated_fraction=0.0)
    return bg, draw_sample_params(rng, (256, 256), spacing, cfg)


def test_same_seed_same_bytes_different_seed_different() -> None:
    bg, p = _random_sample(11)
    a = render_sample(bg, (0.1, 0.1), p, CFG, 5)
    b = render_sample(bg.copy(), (0.1, 0.1), p, CFG, 5)
    c = render_sample(bg, (0.1, 0.1), p, CFG, 6)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert a.signal.tobytes() == b.signal.tobytes()
    assert a.mcs == b.mcs
    assert a.image.tobytes() != c.image.tobytes()
    assert a.signal.tobytes() == c.signal.tobytes()  # only the noise differs


def test_records_are_consistent() -> None:
    bg, p = _random_sample(12, spacing=(0.07, 0.08))
    res = render_sample(bg, (0.07, 0.08), p, CFG, 0)
    assert len(res.mcs) == len(p.mcs)
    for rec, mc in zip(res.mcs, p.mcs):
        assert rec.x_px == mc.centre_col and rec.y_px == mc.centre_row
        assert rec.x_mm == pytest.approx(mc.centre_col * 0.08)
        assert rec.y_mm == pytest.approx(mc.centre_row * 0.07)
        assert rec.cnr == pytest.approx(rec.peak_contrast / rec.local_noise)
        assert rec.visible == (rec.cnr >= CFG.mask.min_cnr)
        assert (rec.n_mask_px > 0) == rec.visible
    assert res.mask.any() == any(r.visible for r in res.mcs)


def test_render_is_fast() -> None:
    bg, _ = _random_sample(13)
    rng = np.random.default_rng(0)
    cfg = dataclasses.replace(CFG, empty_fraction=0.0, isolated_fraction=0.0)
    params = [draw_sample_params(rng, (256, 256), (0.1, 0.1), cfg) for _ in range(40)]
    render_sample(bg, (0.1, 0.1), params[0], CFG, 0)  # warm up
    t = time.perf_counter()
    for i, p in enumerate(params):
        render_sample(bg, (0.1, 0.1), p, CFG, i)
    per_mc = (time.perf_counter() - t) / sum(len(p.mcs) for p in params)
    # ~0.15 ms per MC on one core (about 3 ms for 20 MCs); generous bound for slow CI
    assert per_mc < 1.5e-3
