"""Generator sample quality on tiny synthetic patches, with an untrained generator whose
projections are known: zero velocity leaves the SDEdit start of the residual, so a projection
is the observation plus (1 - t_start) * noise / residual_scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mcgenref.evaluation.generator_quality import generator_quality
from mcgenref.models.checkpoint import save_model
from mcgenref.models.generator import GeneratorConfig, build_generator
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.training.generator import TrainGeneratorConfig


def test_untrained_generator_is_reported_as_noisy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    gcfg = GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4)
    scfg = SegmentorConfig(channels=(4, 8, 16))
    save_model(tmp_path / "g", build_generator(gcfg), gcfg)
    save_model(tmp_path / "s", build_segmentor(scfg), scfg)
    # few decoys, so that enough of the 32-pixel patches lies 1 mm away from every seed
    config = TrainGeneratorConfig(model=gcfg, synthesis=SynthesisConfig(patch_size_px=32),
                                  decoy_rate=3.0, hard_decoy_fraction=0.0)
    result = generator_quality(tmp_path / "g", tmp_path / "s", None, config=config, n_samples=3,
                               t_start=0.5, steps=2)
    assert result["n_patches"] == 3
    for key in ("seed_recall", "seed_recall_observation", "decoy_acceptance"):
        assert result[key] is None or 0.0 <= result[key] <= 1.0
    # away from the seeds the observation is the image: the error is E|0.5 N(0, 1) / 10|
    assert result["background_mae"] == pytest.approx(0.05 * (2 / np.pi) ** 0.5, rel=0.1)
