"""Generator sample quality on tiny synthetic patches, with an untrained generator whose
projections are known: zero velocity leaves the SDEdit start of the residual, so a projection
is the observation plus (1 - t_start) * noise / residual_scale. The segmentors that judge it
are constant (MC everywhere / nowhere), so every detection-based measure is known too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mcgenref.errors import InputError
from mcgenref.evaluation.generator_quality import generator_quality
from mcgenref.models.checkpoint import save_model
from mcgenref.models.generator import (
    ConditionConfig,
    GeneratorConfig,
    GeneratorContract,
    build_generator,
)
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor
from mcgenref.synthesis.config import MaskConfig, SynthesisConfig
from mcgenref.synthesis.patches import PatchSamplerConfig

GCFG = GeneratorConfig(channels=(8, 16), time_embedding_dim=8, norm_groups=4)
# 32-pixel patches at 0.1 mm (procedural backgrounds), few decoys, so that enough of each
# patch lies 1 mm away from every seed; min_cnr 0: every MC is visible (at the default 5 none
# of these three patches has one), so the seed recalls are measured, not None
PATCHES = {"synthesis": SynthesisConfig(patch_size_px=32, mask=MaskConfig(min_cnr=0.0)),
           "patches": PatchSamplerConfig(), "procedural_spacing_mm": (0.1, 0.1),
           "condition": ConditionConfig(decoy_rate=3.0, hard_decoy_fraction=0.0)}


def test_untrained_generator_is_reported_as_noisy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(tmp_path / "g", build_generator(GCFG), GCFG, GeneratorContract().to_extra())
    for name, logit in (("everywhere", 12.0), ("nowhere", -12.0)):
        _constant_segmentor(tmp_path / name, logit)
    everywhere, nowhere = (generator_quality(tmp_path / "g", tmp_path / name, None, **PATCHES,
                                             n_samples=3, t_start=0.5, steps=2)
                           for name in ("everywhere", "nowhere"))
    assert everywhere["n_patches"] == 3 and everywhere["n_visible_mcs"] > 0 and everywhere["n_decoys"] > 0
    recalls = ("seed_recall", "seed_recall_observation", "seed_recall_clean", "decoy_acceptance")
    assert [everywhere[k] for k in recalls] == [1.0, 1.0, 1.0, 1.0]
    assert [nowhere[k] for k in recalls] == [0.0, 0.0, 0.0, 0.0]
    assert nowhere["spurious_per_patch"] == nowhere["spurious_per_patch_observation"] == 0.0
    # away from the seeds the observation is the image: the error is E|0.5 N(0, 1) / 10|
    assert everywhere["background_mae"] == pytest.approx(0.05 * (2 / np.pi) ** 0.5, rel=0.1)
    assert nowhere["background_mae"] == everywhere["background_mae"]  # the segmentor plays no part


def _constant_segmentor(folder: Path, logit: float) -> None:
    """A segmentor folder whose network says ``logit`` at every pixel: zero weights, the
    output convolution's bias set."""
    cfg = SegmentorConfig(channels=(4, 8, 16))
    net = build_segmentor(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.fill_(logit)
        assert torch.equal(net(torch.rand(1, 1, 32, 32)), torch.full((1, 1, 32, 32), logit))
    save_model(folder, net, cfg)


def test_the_residual_scale_is_the_generators_own(tmp_path: Path) -> None:
    """A generator recorded with residual scale 20 is projected with it: half the error."""
    torch.manual_seed(0)
    save_model(tmp_path / "g", build_generator(GCFG), GCFG,
               GeneratorContract(residual_scale=20.0).to_extra())
    _constant_segmentor(tmp_path / "s", -12.0)
    result = generator_quality(tmp_path / "g", tmp_path / "s", None, **PATCHES, n_samples=3,
                               t_start=0.5, steps=2)
    assert result["background_mae"] == pytest.approx(0.025 * (2 / np.pi) ** 0.5, rel=0.1)


def test_a_generator_without_its_residual_scale_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path / "g", build_generator(GCFG), GCFG, {"pixel_spacing_mm": [0.1, 0.1]})
    _constant_segmentor(tmp_path / "s", -12.0)
    with pytest.raises(InputError, match=r"model.json has no 'extra.residual_scale'") as err:
        generator_quality(tmp_path / "g", tmp_path / "s", None, **PATCHES, n_samples=1)
    assert "\n" not in str(err.value) and str(tmp_path / "g" / "model.json") in str(err.value)
