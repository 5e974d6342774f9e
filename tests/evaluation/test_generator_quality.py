"""Generator sample quality on tiny synthetic patches, with an untrained generator whose
projections are known: zero velocity leaves the SDEdit start state, half noise."""

from __future__ import annotations

from pathlib import Path

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
    config = TrainGeneratorConfig(model=gcfg, synthesis=SynthesisConfig(patch_size_px=32))
    result = generator_quality(tmp_path / "g", tmp_path / "s", None, config=config, n_samples=3,
                               t_start=0.5, steps=2)
    assert result["n_patches"] == 3
    for key in ("seed_recall", "seed_recall_observation", "decoy_acceptance"):
        assert result[key] is None or 0.0 <= result[key] <= 1.0
    # zero velocity: the projection is 0.5 * noise + 0.5 * observation, far from the image
    assert result["background_mae"] > 0.3 > 10 * result["background_texture_mad"]
