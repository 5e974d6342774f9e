"""draw_sample_params: ranges, clusters, the allowed mask, fractions, exact records."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from mcgenref.errors import InputError
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.geometry import (
    MORPHOLOGIES,
    MCParams,
    SampleParams,
    draw_sample_params,
    sample_params_from_dict,
    sample_params_to_dict,
)

CFG = SynthesisConfig()
SHAPE = (256, 256)


def _draws(n: int, spacing=(0.1, 0.1), cfg=CFG, seed=0, **kw) -> list[SampleParams]:
    rng = np.random.default_rng(seed)
    return [draw_sample_params(rng, SHAPE, spacing, cfg, **kw) for _ in range(n)]


def test_same_rng_same_params() -> None:
    assert _draws(20, seed=3) == _draws(20, seed=3)
    assert _draws(20, seed=3) != _draws(20, seed=4)


def test_dict_round_trip_is_exact() -> None:
    for p in _draws(60, spacing=(0.07, 0.085)):
        d = sample_params_to_dict(p)
        back = sample_params_from_dict(json.loads(json.dumps(d)))
        assert back == p
        assert sample_params_to_dict(back) == d
        assert all(type(v) is float for m in back.mcs for v in m.axes_mm)


def test_bad_record_is_an_input_error() -> None:
    d = sample_params_to_dict(_draws(1)[0])
    d["kind"] = "nonsense"
    with pytest.raises(InputError):
        sample_params_from_dict(d)


def test_fractions_are_respected() -> None:
    n = 1500
    draws = _draws(n, seed=1)
    kinds = [p.kind for p in draws]
    for kind, frac in (("empty", CFG.empty_fraction), ("isolated", CFG.isolated_fraction)):
        sd = math.sqrt(frac * (1 - frac) / n)
        assert abs(kinds.count(kind) / n - frac) < 4 * sd, kind
    for p in draws:
        if p.kind == "empty":
            assert p.mcs == () and p.clusters == ()
        elif p.kind == "isolated":
            assert p.clusters == () and len(p.mcs) >= 1
            assert all(m.cluster_id == -1 for m in p.mcs)
        else:
            assert len(p.clusters) >= 1


def test_forced_kind_keeps_the_rest_of_the_stream() -> None:
    for kind in ("empty", "isolated", "cluster"):
        draws = _draws(30, seed=5, kind=kind)
        assert {p.kind for p in draws} == {kind}
        assert all(p.mcs for p in draws) == (kind != "empty")
    # forcing the kind a draw would have had anyway changes nothing
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(30):
        p = draw_sample_params(rng_a, SHAPE, (0.1, 0.1), CFG)
        assert draw_sample_params(rng_b, SHAPE, (0.1, 0.1), CFG, kind=p.kind) == p
    with pytest.raises(ValueError, match="kind"):
        draw_sample_params(np.random.default_rng(0), SHAPE, (0.1, 0.1), CFG, kind="many")


def test_clusters_counts_and_extent() -> None:
    lo, hi = CFG.cluster.n_mcs_range
    spacing = (0.1, 0.1)
    seen_patterns = set()
    for p in _draws(300, spacing=spacing, seed=2):
        for c in p.clusters:
            seen_patterns.add(c.pattern)
            members = [m for m in p.mcs if m.cluster_id == c.id]
            assert len(members) == c.n_mcs
            assert lo <= c.n_mcs <= hi
            assert CFG.cluster.extent_mm_range[0] * 0.999 <= c.extent_mm
            assert c.extent_mm <= CFG.cluster.extent_mm_range[1] * 1.001
            for m in members:
                d = math.hypot((m.centre_row - c.centre_row) * spacing[0],
                               (m.centre_col - c.centre_col) * spacing[1])
                assert d <= c.extent_mm / 2 + 1e-9
    assert seen_patterns == {"cloud", "linear", "branching", "segmental"}


def test_mc_sizes_shapes_and_positions() -> None:
    mcc = CFG.mc
    morphs = set()
    margin = CFG.edge_margin_mm / 0.1
    for p in _draws(200, seed=5):
        for m in p.mcs:
            morphs.add(m.morphology)
            assert margin - 1e-9 <= m.centre_row <= SHAPE[0] - 1 - margin + 1e-9
            assert margin - 1e-9 <= m.centre_col <= SHAPE[1] - 1 - margin + 1e-9
            a, b, c = m.axes_mm
            assert a >= b > 0 and c > 0
            lo_ps, hi_ps = CFG.psf.sigma_mm_range
            assert lo_ps <= m.psf_sigma_mm <= hi_ps
            if m.morphology == "fine_linear":
                assert mcc.linear_length_range_mm[0] <= m.size_mm <= mcc.linear_length_range_mm[1]
            else:
                assert mcc.size_range_mm[0] <= m.size_mm <= mcc.size_range_mm[1]
                assert m.size_mm == pytest.approx(2 * a)
            if m.morphology == "punctate":
                assert m.size_mm <= mcc.punctate_max_mm
        # one PSF per sample (one detector)
        assert len({m.psf_sigma_mm for m in p.mcs}) <= 1
    assert morphs == set(MORPHOLOGIES)


def test_most_mcs_are_below_half_a_millimetre() -> None:
    sizes = [m.size_mm for p in _draws(200, seed=6) for m in p.mcs
             if m.morphology != "fine_linear"]
    assert np.mean(np.array(sizes) < 0.5) > 0.7


def test_allowed_mask_is_respected() -> None:
    allowed = np.zeros(SHAPE, dtype=bool)
    allowed[:, :100] = True  # left part only, e.g. the breast
    allowed[30:60, :] = True
    n_mcs = 0
    for p in _draws(200, seed=7, allowed=allowed):
        for m in p.mcs:
            assert allowed[int(round(m.centre_row)), int(round(m.centre_col))]
            n_mcs += 1
        for c in p.clusters:
            assert allowed[int(round(c.centre_row)), int(round(c.centre_col))]
    assert n_mcs > 100


def test_nothing_allowed_gives_no_mcs() -> None:
    allowed = np.zeros(SHAPE, dtype=bool)
    for p in _draws(30, seed=8, allowed=allowed):
        assert p.mcs == ()


def test_allowed_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        draw_sample_params(np.random.default_rng(0), SHAPE, (0.1, 0.1), CFG,
                           allowed=np.ones((10, 10), bool))


def test_sizes_are_physical_not_pixels() -> None:
    # the same draws at two spacings: sizes in mm follow the same distribution
    a = [m.size_mm for p in _draws(200, spacing=(0.1, 0.1), seed=9) for m in p.mcs]
    b = [m.size_mm for p in _draws(200, spacing=(0.2, 0.2), seed=9) for m in p.mcs]
    assert np.median(a) == pytest.approx(np.median(b), rel=0.15)


def test_small_patch_and_fine_spacing_still_fit() -> None:
    cfg = dataclasses.replace(CFG, empty_fraction=0.0, isolated_fraction=0.0)
    rng = np.random.default_rng(10)
    for _ in range(50):
        p = draw_sample_params(rng, (64, 64), (0.05, 0.05), cfg)
        for m in p.mcs:
            assert 0 <= m.centre_row <= 63 and 0 <= m.centre_col <= 63


def test_mcparams_validation() -> None:
    with pytest.raises(ValueError):
        MCParams(centre_row=1.0, centre_col=1.0, size_mm=0.3, morphology="blob",  # type: ignore
                 axes_mm=(0.15, 0.15, 0.15), orientation_rad=0.0, shape_seed=1,
                 attenuation_per_mm=1.0, psf_sigma_mm=0.05)
