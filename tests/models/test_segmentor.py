"""The segmentor networks: the tensor contract on odd-but-valid sizes, config checks."""

from __future__ import annotations

import pytest
import torch

from mcgenref.config import from_dict, to_dict
from mcgenref.errors import ConfigError
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor, size_multiple




CONFIGS = [
    SegmentorConfig(arch="attention_unet", channels=(8, 16, 32, 64)),
    SegmentorConfig(arch="unet", channels=(8, 16, 32, 64), num_res_units=1),
    SegmentorConfig(arch="basic_unet", channels=(4, 8, 8, 16, 16)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.arch)
@pytest.mark.parametrize("shape", [(48, 80), (32, 32), (16, 144)])
def test_logits_keep_the_input_shape(config: SegmentorConfig, shape: tuple[int, int]) -> None:
    # 48 x 80 etc. are multiples of 8 (depth 3) and 16 (basic_unet's fixed depth 4), not powers of 2
    torch.manual_seed(0)
    model = build_segmentor(config).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, *shape)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.arch)
def test_outputs_are_unbounded_logits(config: SegmentorConfig) -> None:
    # no sigmoid inside: a strongly scaled last layer gives values far outside [0, 1]
    torch.manual_seed(0)
    model = build_segmentor(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
        y = model(torch.randn(1, 1, 32, 48) * 10)
    assert y.min() < -1.0 or y.max() > 2.0


def test_size_multiple_is_the_product_of_strides() -> None:
    assert size_multiple(SegmentorConfig()) == 8
    assert size_multiple(SegmentorConfig(channels=(8, 16, 32), strides=(2, 3))) == 6
    assert size_multiple(SegmentorConfig(arch="basic_unet", channels=(4, 8, 8, 16, 16))) == 16


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = build_segmentor(SegmentorConfig(channels=(8, 16)))
    torch.manual_seed(3)
    b = build_segmentor(SegmentorConfig(channels=(8, 16)))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_config_round_trips_through_json() -> None:
    config = SegmentorConfig(arch="unet", channels=(8, 16, 32), strides=(2, 2), dropout=0.1)
    assert from_dict(SegmentorConfig, to_dict(config)) == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"arch": "transformer"}, "not one of"),
        ({"channels": [8]}, "at least 2"),
        ({"channels": [8, 16, 32], "strides": [2]}, "len(channels) - 1"),
        ({"arch": "basic_unet"}, "5 values"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_configs_are_config_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(SegmentorConfig, data)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.arch)
def test_untrained_network_predicts_the_prior(config: SegmentorConfig) -> None:
    # prior-probability init: the untrained net says "no MC" (about 1 %) almost everywhere
    torch.manual_seed(0)
    model = build_segmentor(config).eval()
    with torch.no_grad():
        p = torch.sigmoid(model(torch.rand(2, 1, 32, 48)))
    assert 0.001 < p.median() < 0.05
