"""The generator trained on mined seeds: labels from a fake segmentor with known logits,
crops centred on the seeds, invisible MCs masked, and a tiny run recording the segmentor."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mcgenref.flow.seeds import TT_GPR_SEEDS
from mcgenref.models.generator import GeneratorConfig
from mcgenref.runtime import Autocast
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.training.generator import (
    GeneratorTask,
    MinedSeedsConfig,
    TrainGeneratorConfig,
    label_mined_seeds,
    mc_owner_map,
    mine_crops,
    shipped_segmentor_path,
)
from mcgenref.training.loop import run_training

SPACING = (0.2, 0.2)
VISIBLE, INVISIBLE, NOTHING = (20, 20), (44, 44), (20, 46)  # (row, col) of the three candidates

CONFIG = TrainGeneratorConfig(
    model=GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4),
    synthesis=SynthesisConfig(patch_size_px=64),
    seed_source="mined",
    mined=MinedSeedsConfig(crop_px=16, crops_per_sample=6),
)


def _patch() -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """A 64 px patch at 0.2 mm with one visible and one invisible MC (Gaussian signals), its
    observation at gain 0.5, the record, and logits with a maximum on each MC and one on
    plain tissue (everything else far below the rule's -8)."""
    rr, cc = np.mgrid[0:64, 0:64]
    background = np.full((64, 64), 0.5, np.float32)
    signal = np.zeros((64, 64), np.float32)
    for r, c in (VISIBLE, INVISIBLE):
        signal += 0.2 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 2.0)
    image = background + signal
    observation = background + 0.5 * signal
    record = {"mcs": [{"y_px": VISIBLE[0], "x_px": VISIBLE[1], "size_mm": 0.4, "visible": True},
                      {"y_px": INVISIBLE[0], "x_px": INVISIBLE[1], "size_mm": 0.4, "visible": False}]}
    logits = np.full((64, 64), -20.0, np.float32)
    for (r, c), peak in ((VISIBLE, -2.0), (INVISIBLE, -3.0), (NOTHING, -4.0)):
        logits += (peak + 20.0) * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 2.0)
    return image, observation, record, logits


def test_owner_map_marks_visible_and_invisible_mcs() -> None:
    image, _, record, _ = _patch()
    owner = mc_owner_map(record, image.shape, SPACING, halo_mm=0.3)
    assert owner[VISIBLE] == 1 and owner[INVISIBLE] == -2 and owner[NOTHING] == 0
    # radius 0.2 + 0.3 mm = 2.5 px: 2 px away is owned, 3 px away is not
    assert owner[VISIBLE[0], VISIBLE[1] + 2] == 1 and owner[VISIBLE[0], VISIBLE[1] + 3] == 0


def test_seeds_are_labelled_by_the_mc_under_them() -> None:
    image, observation, record, logits = _patch()
    owner = mc_owner_map(record, image.shape, SPACING, 0.3)
    crops, mined = mine_crops(image, observation, owner, logits, SPACING, CONFIG, np.random.default_rng(0))
    # three maxima above -8: the one on the invisible MC is dropped, the other two kept
    assert mined.dropped == 1 and len(mined.seeds) == 2
    positions = [(round(s.row), round(s.col)) for s in mined.seeds]
    assert positions == [VISIBLE, NOTHING]  # strongest first
    assert mined.on_mc == [True, False] and mined.seeded_mcs == frozenset({1})
    assert crops["residual"].shape == (6, 1, 16, 16)


def test_crops_are_centred_on_seeds_with_the_right_targets() -> None:
    image, observation, record, logits = _patch()
    owner = mc_owner_map(record, image.shape, SPACING, 0.3)
    crops, _ = mine_crops(image, observation, owner, logits, SPACING, CONFIG, np.random.default_rng(3))
    centres = set()
    for residual, obs, seed_map in zip(crops["residual"][:, 0], crops["background"][:, 0],
                                       crops["seed_map"][:, 0], strict=True):
        assert seed_map[8, 8] > 0.9  # a seed at the crop's centre
        # which seed: the crop is the observation window around it
        centre = next(p for p in (VISIBLE, NOTHING)
                      if np.array_equal(obs, observation[p[0] - 8:p[0] + 8, p[1] - 8:p[1] + 8]))
        centres.add(centre)
        if centre == VISIBLE:  # the restoration target: 10 * (x_1 - y) = 10 * 0.1 at the peak
            assert residual[8, 8] == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(residual, np.where(
                owner[12:28, 12:28] == 1, 10 * (image - observation)[12:28, 12:28], 0.0), atol=1e-6)
        else:  # the segmentor's false candidate: "no MC"
            assert np.all(residual == 0.0)
    assert centres == {VISIBLE, NOTHING}


def test_invisible_mcs_are_masked_out_of_the_loss() -> None:
    image, observation, record, logits = _patch()
    owner = mc_owner_map(record, image.shape, SPACING, 0.3)
    crops, _ = mine_crops(image, observation, owner, logits, SPACING,
                          dataclasses.replace(CONFIG, mined=MinedSeedsConfig(crop_px=64, crops_per_sample=1)),
                          np.random.default_rng(0))
    mask, residual = crops["loss_mask"][0, 0], crops["residual"][0, 0]
    assert np.all(mask[owner < 0] == 0) and np.all(mask[owner >= 0] == 1)
    assert mask[INVISIBLE] == 0 and mask[VISIBLE] == 1
    assert np.all(residual[owner < 0] == 0)  # no target at an invisible MC either
    # its signal is still in the observation: only the loss ignores it
    assert observation[INVISIBLE] > 0.55


class _KnownLogits(nn.Module):
    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.from_numpy(logits)[None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 1, *self.logits.shape[2:])


def test_mined_batch_runs_the_segmentor_once_for_the_batch() -> None:
    image, observation, record, logits = _patch()
    owner = mc_owner_map(record, image.shape, SPACING, 0.3)
    batch = {"image": torch.from_numpy(np.stack([image, image]))[:, None],
             "observation": torch.from_numpy(np.stack([observation, observation]))[:, None],
             "mc_owner": torch.from_numpy(np.stack([owner, owner]))[:, None],
             "spacing_mm": torch.tensor([SPACING, SPACING], dtype=torch.float64)}
    task = GeneratorTask(CONFIG)
    out = task.mined_batch(batch, torch.Generator().manual_seed(0), Autocast("cpu"), _KnownLogits(logits))
    assert set(out) == {"residual", "background", "seed_map", "loss_mask"}
    assert out["residual"].shape == (12, 1, 16, 16)
    again = task.mined_batch(batch, torch.Generator().manual_seed(0), Autocast("cpu"), _KnownLogits(logits))
    assert all(torch.equal(out[k], again[k]) for k in out)  # the step's generator fixes the crops
    # every crop is centred on one of the two kept seeds, from both samples
    assert bool((out["seed_map"][:, 0, 8, 8] > 0.9).all())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="logit rule"):
        MinedSeedsConfig(seeds=dataclasses.replace(TT_GPR_SEEDS, rule="probability"))
    with pytest.raises(ValueError, match="crop_px"):
        dataclasses.replace(CONFIG, mined=MinedSeedsConfig(crop_px=17))
    with pytest.raises(ValueError, match="at most"):
        dataclasses.replace(CONFIG, mined=MinedSeedsConfig(crop_px=80))
    with pytest.raises(ValueError, match="seed_source"):
        TrainGeneratorConfig(seed_source="decoys")  # type: ignore[arg-type]
    assert TrainGeneratorConfig().seed_source == "synthetic"  # old configs mean the old condition


def test_tiny_mined_run_records_the_segmentor(tmp_path: Path) -> None:
    config = dataclasses.replace(
        CONFIG, synthesis=SynthesisConfig(patch_size_px=32), procedural_spacing_mm=SPACING,
        steps=2, batch_size=2, warmup_steps=1, val_size=2, val_every=2, checkpoint_every=2,
        log_every=1, num_workers=0, deterministic=True)
    summary = run_training("generator", tmp_path / "run", None, config, device="cpu", progress=False)
    assert summary["step"] == 2 and np.isfinite(summary["val_loss"])
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    mined = meta["extra"]["condition"]["mined"]
    shipped = json.loads((shipped_segmentor_path() / "model.json").read_text())
    assert meta["extra"]["condition"]["seed_source"] == "mined"
    assert mined["segmentor_sha256"] == shipped["weights"]["sha256"]
    assert mined["min_logit"] == TT_GPR_SEEDS.min_logit and mined["crop_px"] == 16
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["seed_source"] == "mined" and saved["mined"]["crops_per_sample"] == 6


def test_mined_seeds_at_the_wrong_spacing_are_refused(tmp_path: Path) -> None:
    from mcgenref.errors import ConfigError

    config = dataclasses.replace(
        CONFIG, synthesis=SynthesisConfig(patch_size_px=32), procedural_spacing_mm=(0.1, 0.1),
        steps=1, batch_size=1, warmup_steps=0, val_size=1, num_workers=0)
    with pytest.raises(ConfigError, match="trained at"):
        run_training("generator", tmp_path / "run", None, config, device="cpu", progress=False)
