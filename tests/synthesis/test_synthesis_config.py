"""SynthesisConfig: JSON round trip, validation, and a documented reason for every default.

(Named test_synthesis_config.py, not test_config.py: tests/ has no __init__.py files and
tests/test_config.py already exists, so a second basename would clash in pytest.)
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from mcgenref.config import from_dict, to_dict
from mcgenref.errors import ConfigError
from mcgenref.synthesis.config import (
    BackgroundConfig,
    ClusterConfig,
    ContrastConfig,
    MaskConfig,
    MCConfig,
    NoiseConfig,
    PSFConfig,
    SynthesisConfig,
)

ALL = [SynthesisConfig, ClusterConfig, MCConfig, ContrastConfig, PSFConfig, NoiseConfig,
       MaskConfig, BackgroundConfig]


def test_default_round_trip_through_json() -> None:
    cfg = SynthesisConfig()
    data = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(SynthesisConfig, data) == cfg


def test_non_default_round_trip() -> None:
    cfg = SynthesisConfig(
        patch_size_px=128, empty_fraction=0.3, supersample=3,
        cluster=ClusterConfig(n_mcs_range=(5, 12), p_cloud=0.25, p_linear=0.25,
                              p_branching=0.25, p_segmental=0.25),
        psf=PSFConfig(sigma_mm_range=(0.05, 0.05)),
        noise=NoiseConfig(enabled=False),
    )
    assert from_dict(SynthesisConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_partial_dict_keeps_defaults() -> None:
    cfg = from_dict(SynthesisConfig, {"mask": {"min_cnr": 5.0}, "empty_fraction": 0.2})
    assert cfg.mask.min_cnr == 5.0
    assert cfg.mask.coverage_threshold == MaskConfig().coverage_threshold
    assert cfg.empty_fraction == 0.2
    assert cfg.cluster == ClusterConfig()


@pytest.mark.parametrize(
    "data",
    [
        {"empty_fraction": 1.5},
        {"empty_fraction": 0.6, "isolated_fraction": 0.6},
        {"mc": {"size_range_mm": [1.0, 0.1]}},
        {"mc": {"p_punctate": 0.9}},  # probabilities no longer sum to 1
        {"cluster": {"n_mcs_range": [10, 3]}},
        {"cluster": {"p_cloud": 0.0}},
        {"psf": {"sigma_mm_range": [-0.1, 0.1]}},
        {"contrast": {"attenuation_per_mm_range": [0.0, 1.0]}},
        {"mask": {"coverage_threshold": 0.0}},
        {"background": {"beta_range": [3.5, 2.5]}},
        {"supersample": 0},
        {"mc_draws_per_background": 0},
        {"max_backgrounds": 0},
        {"mc": {"unknown_key": 1}},
        {"patch_size_px": "256"},
    ],
)
def test_invalid_values_raise_config_error(data: dict) -> None:
    with pytest.raises(ConfigError):
        from_dict(SynthesisConfig, data)


def test_direct_construction_raises_value_error() -> None:
    with pytest.raises(ValueError):
        MCConfig(size_range_mm=(0.5, 0.2))
    with pytest.raises(ValueError):
        ClusterConfig(p_cloud=0.2)


def test_defaults_match_the_literature() -> None:
    cfg = SynthesisConfig()
    assert cfg.patch_size_px == 256 and cfg.supersample == 5
    assert 0.0 < cfg.empty_fraction < 0.5
    assert cfg.mc.size_range_mm == (0.1, 1.0)
    assert cfg.cluster.n_mcs_range == (3, 30)
    assert cfg.background.beta_range == (2.5, 3.5)
    assert sum(cfg.background.beta_range) / 2 == pytest.approx(3.0)
    lo, hi = cfg.psf.sigma_mm_range
    # calibrated on 200 um film (docs/realism.md); physically between a sharp digital
    # detector (0.03 mm) and one film pixel (0.2 mm)
    assert 0.03 <= lo < hi <= 0.2
    assert cfg.mask.coverage_threshold == 0.5


@pytest.mark.parametrize("cls", ALL)
def test_every_field_has_a_default_and_a_reason(cls: type) -> None:
    source = inspect.getsource(cls).splitlines()
    for f in dataclasses.fields(cls):
        assert (f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING), f.name
        line = next(i for i, s in enumerate(source) if s.strip().startswith(f"{f.name}:"))
        j = line - 1
        while j >= 0 and source[j].strip().startswith("#:") is False and \
                source[j].strip().startswith("p_"):
            j -= 1  # a group of probabilities shares one comment
        assert source[j].strip().startswith("#:"), f"{cls.__name__}.{f.name} has no reason"


def test_fine_resolution_preset_changes_only_the_mc_size() -> None:
    fine = SynthesisConfig.fine_resolution()
    base = SynthesisConfig()
    assert fine.mc.size_median_mm == 0.4 > base.mc.size_median_mm
    assert dataclasses.replace(fine, mc=base.mc) == base
    assert from_dict(SynthesisConfig, json.loads(json.dumps(to_dict(fine)))) == fine
