"""The evidence sets and statistics of ``benchmarks/tt_gpr.py`` (issue 14, item 6): the
shifted test set's settings differ from training's, its seeds are fresh."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("tt_gpr")


def test_the_shifted_settings_differ_from_training(bench) -> None:  # noqa: ANN001
    from mcgenref.synthesis.config import SynthesisConfig

    train = SynthesisConfig()  # both networks' image-formation model (clusters aside)
    shifted = bench.shifted_synthesis()
    lo, hi = shifted.contrast.attenuation_per_mm_range
    assert lo < train.contrast.attenuation_per_mm_range[0] and hi < train.contrast.attenuation_per_mm_range[1]
    assert shifted.contrast.density_damping > train.contrast.density_damping
    assert shifted.psf.sigma_mm_range[0] > train.psf.sigma_mm_range[0]
    assert shifted.psf.sigma_mm_range[1] > train.psf.sigma_mm_range[1]
    assert shifted.mc.morphology_probs != train.mc.morphology_probs
    assert shifted.mc.p_fine_linear > train.mc.p_fine_linear
    assert shifted.cluster.pattern_probs != train.cluster.pattern_probs
    # the procedural texture's spectrum does not overlap training's
    assert shifted.background.beta_range[1] < train.background.beta_range[0]
    assert 0 < bench.SHIFTED_PROCEDURAL_FRACTION < 1
    # the fresh set is training's model with other seeds
    fresh = bench.fresh_synthesis()
    assert (fresh.contrast, fresh.psf, fresh.mc, fresh.background) == (
        train.contrast, train.psf, train.mc, train.background)


def test_evidence_seeds_are_fresh_and_splits_apart(bench) -> None:  # noqa: ANN001
    seeds = list(bench.EVIDENCE_SEEDS.values())
    used = {0, 1_000_003, bench.TEST_SEED, 51_515_001, 51_515_002, 51_515_003}
    assert len(set(seeds)) == len(seeds) and not used & set(seeds)
    assert bench.EVIDENCE_NORMALS == {"test": "test", "dev": "calibration"}


def test_mcnemar_on_a_known_table(bench) -> None:  # noqa: ANN001
    import numpy as np

    # 10 MCs both find, 1 only A, 6 only B, 3 neither: p = 2 * P(X <= 1), X ~ Bin(7, 1/2) = 16/128
    a = np.array([1] * 10 + [1] * 1 + [0] * 6 + [0] * 3, bool)
    b = np.array([1] * 10 + [0] * 1 + [1] * 6 + [0] * 3, bool)
    r = bench.mcnemar_exact(a, b)
    assert (r["n"], r["both"], r["a_only"], r["b_only"], r["neither"]) == (20, 10, 1, 6, 3)
    assert r["p_value"] == pytest.approx(16 / 128)
    assert bench.mcnemar_exact(a, a)["p_value"] == 1.0  # no discordant pair
    assert bench.mcnemar_exact(b, a)["p_value"] == pytest.approx(16 / 128)  # symmetric
    with pytest.raises(ValueError, match="length"):
        bench.mcnemar_exact(a, b[:-1])


def test_paired_difference_resamples_the_same_patches(bench) -> None:  # noqa: ANN001
    import numpy as np

    values = np.arange(20, dtype=float)
    # B = A + 1 on every patch: the difference is exactly 1 in every resample
    r = bench.paired_difference(lambda i: float(values[i].mean() + 1), lambda i: float(values[i].mean()), 20, 200)
    assert r["difference"] == pytest.approx(1.0) and r["ci"] == pytest.approx([1.0, 1.0])


def test_cost_variants_are_refine_settings(bench) -> None:  # noqa: ANN001
    import dataclasses

    from mcgenref.inference.refine import RefineConfig

    for name, change in bench.COST_VARIANTS.items():
        config = dataclasses.replace(RefineConfig(), **change)  # a typo'd field raises here
        assert config != RefineConfig(), name


@pytest.mark.parametrize("argv, message", [
    (["--split", "test", "--real-variants", "32 windows"], "development images only"),
    (["--split", "test", "--cost-variants", "0"], "development patches only"),
    (["--real-variants", "32 windows; no such setting"], "unknown ['no such setting']"),
])
def test_development_only_options_are_refused_on_test_data(bench, monkeypatch, tmp_path, argv, message) -> None:  # noqa: ANN001
    monkeypatch.setattr(sys, "argv", ["tt_gpr.py", "--out", str(tmp_path / "out"), *argv])
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        bench.main()
    assert not (tmp_path / "out").exists()  # refused before anything is written
