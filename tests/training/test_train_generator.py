"""The generator's training task: its condition by hand, a tiny CPU run, exact resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mcgenref.errors import InputError
from mcgenref.models.checkpoint import GENERATOR_KIND, load_generator, load_model
from mcgenref.models.generator import GeneratorConfig, GeneratorContract, _mc_like_spots
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.sample import generate_sample
from mcgenref.training.generator import (
    TrainGeneratorConfig,
    generator_condition,
)
from mcgenref.training.loop import run_training

TINY = TrainGeneratorConfig(
    model=GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4),
    synthesis=SynthesisConfig(patch_size_px=32),
    steps=4,
    batch_size=2,
    warmup_steps=1,
    val_size=4,
    val_every=2,
    checkpoint_every=2,
    log_every=1,
    num_workers=0,
    deterministic=True,
)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="observation_gain"):
        TrainGeneratorConfig(observation_gain=(0.8, 0.2))
    with pytest.raises(ValueError, match="decoy_rate"):
        TrainGeneratorConfig(decoy_rate=-1.0)
    with pytest.raises(ValueError, match="hard_decoy_fraction"):
        TrainGeneratorConfig(hard_decoy_fraction=1.5)
    with pytest.raises(ValueError, match="residual_scale"):
        TrainGeneratorConfig(residual_scale=0.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        TrainGeneratorConfig(synthesis=SynthesisConfig(patch_size_px=34))


def _sample_with_mcs() -> object:
    config = SynthesisConfig(patch_size_px=64)
    for seed in range(50):
        sample = generate_sample(seed, config, None, (0.1, 0.1))
        if sample.record["n_mcs"] >= 2:
            return sample
    raise AssertionError("no synthetic sample with MCs in 50 seeds")


def test_condition_keeps_the_background_and_scales_the_mcs() -> None:
    sample = _sample_with_mcs()
    config = dataclasses.replace(TINY, synthesis=SynthesisConfig(patch_size_px=64),
                                 observation_gain=(0.5, 0.5), decoy_rate=0.0)
    observation, seed_map, mc_seeds, decoys = generator_condition(sample, config, np.random.default_rng(0))
    expected = sample.background + 0.5 * (sample.image - sample.background)
    np.testing.assert_allclose(observation, expected, atol=1e-6)
    signal = np.abs(sample.image - sample.background) > 1e-6
    np.testing.assert_allclose(observation[~signal], sample.background[~signal], atol=1e-6)
    assert decoys == [] and len(mc_seeds) == sample.record["n_mcs"]
    for seed in mc_seeds:  # a blob of height ~1 at each MC centre
        assert seed_map[int(round(seed.row)), int(round(seed.col))] > 0.6
    # gain 1: the observation is the image itself
    config1 = dataclasses.replace(config, observation_gain=(1.0, 1.0))
    observation1, *_ = generator_condition(sample, config1, np.random.default_rng(0))
    np.testing.assert_allclose(observation1, sample.image, atol=1e-6)


def test_decoys_are_seeded_where_there_is_no_mc() -> None:
    sample = _sample_with_mcs()
    config = dataclasses.replace(TINY, synthesis=SynthesisConfig(patch_size_px=64), decoy_rate=20.0)
    _, seed_map, _, decoys = generator_condition(sample, config, np.random.default_rng(1))
    assert len(decoys) > 5
    for d in decoys:
        assert seed_map[int(round(d.row)), int(round(d.col))] > 0.6


def test_hard_decoys_sit_on_background_spots_away_from_the_mcs() -> None:
    sample = _sample_with_mcs()
    spacing = (0.1, 0.1)
    config = dataclasses.replace(TINY, synthesis=SynthesisConfig(patch_size_px=64), decoy_rate=20.0,
                                 hard_decoy_fraction=1.0)
    _, _, mc_seeds, decoys = generator_condition(sample, config, np.random.default_rng(1))
    spots = _mc_like_spots(sample.background, spacing, mc_seeds)
    spots = {tuple(p) for p in spots.tolist()}
    hard = [d for d in decoys if (d.row, d.col) in spots]
    assert len(spots) > 0 and len(hard) == min(len(decoys), len(spots))
    for d in hard:
        for m in mc_seeds:
            assert np.hypot((d.row - m.row) * spacing[0], (d.col - m.col) * spacing[1]) >= 1.0
    # a DoG maximum: brighter than its ring at ~0.5 mm
    r, c = (int(v) for v in next(iter(spots)))
    ring = sample.background[max(r - 5, 0):r + 6, max(c - 5, 0):c + 6]
    assert sample.background[r, c] > np.median(ring)
    # fraction 0: the uniform decoys, as drawn before the option existed
    plain = dataclasses.replace(config, hard_decoy_fraction=0.0)
    _, _, _, uniform = generator_condition(sample, plain, np.random.default_rng(1))
    assert len(uniform) == len(decoys) and not any((d.row, d.col) in spots for d in uniform)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_tiny_run_writes_a_generator_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = run_training("generator", run, None, TINY, device="cpu", progress=False)
    assert summary["step"] == 4 and summary["val_loss"] > 0
    log = _log(run)
    assert set(log[0]) == {"step", "loss", "lr", "val_loss", "seconds"}
    model, meta = load_model(run / "model", kind=GENERATOR_KIND)
    assert meta["kind"] == "mcgenref-generator"
    assert meta["extra"]["condition"]["decoy_rate"] == TINY.decoy_rate
    # the data convention is recorded, and read back, as the generator's contract
    assert load_generator(run / "model")[1] == TINY.contract() == GeneratorContract(10.0)
    x = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        assert model(x, torch.tensor([0.5]), {"seed_map": x, "background": x}).shape == x.shape
    # a generator is not a segmentor, and the other way round
    with pytest.raises(InputError, match="not an mcgenref segmentor"):
        load_model(run / "model")


def test_resume_is_exact(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_training("generator", straight, None, TINY, device="cpu", progress=False)
    split = tmp_path / "split"
    run_training("generator", split, None, TINY, device="cpu", progress=False, stop_at_step=2)
    summary = run_training("generator", split, None, None, device="cpu", progress=False, resume=True)
    assert summary["resumed_from"] == 2
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(split / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["loss"] for e in _log(straight)] == [e["loss"] for e in _log(split)]


def test_cli_train_generator(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mcgenref.cli import app
    from mcgenref.config import to_dict

    config = tmp_path / "config.json"
    config.write_text(json.dumps(to_dict(dataclasses.replace(TINY, steps=2))))
    res = CliRunner().invoke(app, ["train-generator", "--out", str(tmp_path / "run"), "--config",
                                   str(config), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "validation flow loss" in res.output
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    res = CliRunner().invoke(app, ["train-generator", "--out", str(tmp_path / "run"), "--steps", "0"])
    assert res.exit_code == 2 and "--steps" in res.output
