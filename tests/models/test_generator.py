"""The seed-conditioned velocity network: contract, zero start, conditioning, guidance, overfit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcgenref.config import from_dict, to_dict
from mcgenref.flow import euler_sample, partial_start, rectified_flow_loss
from mcgenref.flow.seeds import Seed, SeedConfig, render_seed_map
from mcgenref.models.generator import (
    GeneratorConfig,
    GeneratorContract,
    build_generator,
    drop_condition,
    guided_velocity,
)

SMALL = GeneratorConfig(channels=(8, 16, 16), time_embedding_dim=16)


def inputs(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(b, 1, h, w, generator=g)
    t = torch.rand(b, generator=g)
    cond = {
        "seed_map": torch.rand(b, 1, h, w, generator=g),
        "background": torch.rand(b, 1, h, w, generator=g),
    }
    return x_t, t, cond


@pytest.mark.parametrize("shape", [(32, 48), (16, 16), (8, 40)])
def test_velocity_keeps_the_shape_and_is_zero_at_init(shape: tuple[int, int]) -> None:
    # multiples of 4 (= 2 ** (3 - 1)), not square, not powers of 2
    torch.manual_seed(0)
    net = build_generator(SMALL)
    x_t, t, cond = inputs(2, *shape)
    v = net(x_t, t, cond)
    assert v.shape == (2, 1, *shape) and v.dtype == torch.float32
    assert torch.count_nonzero(v) == 0  # zero last convolution: a stable start
    # the default config too (size multiple 4)
    assert build_generator(GeneratorConfig())(*inputs(1, 32, 48)).shape == (1, 1, 32, 48)


def test_wrong_sizes_and_conditions_raise_value_error() -> None:
    net = build_generator(SMALL)
    x_t, t, cond = inputs(2, 30, 48)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(x_t, t, cond)
    x_t, t, cond = inputs(2, 32, 48)
    with pytest.raises(ValueError, match="seed_map"):
        net(x_t, t, {"background": cond["background"]})
    with pytest.raises(ValueError, match="background"):
        net(x_t, t, {**cond, "background": cond["background"][:, :, :16]})
    with pytest.raises(ValueError, match=r"t must be \[B\]"):
        net(x_t, t[:1], cond)
    with pytest.raises(ValueError, match="x_t"):
        net(x_t.repeat(1, 2, 1, 1), t, cond)
    assert net(x_t, torch.tensor(0.5), cond).shape == x_t.shape  # 0-d t broadcasts


def test_config_is_checked_and_round_trips_through_json() -> None:
    assert GeneratorConfig().size_multiple == 4 and SMALL.size_multiple == 4
    assert GeneratorConfig.in_context_channels == 3 and GeneratorConfig.out_channels == 1
    assert from_dict(GeneratorConfig, to_dict(SMALL)) == SMALL
    assert "in_context_channels" not in to_dict(SMALL)  # a fixed contract, not a setting
    with pytest.raises(ValueError):
        GeneratorConfig(channels=(8, 12))  # 12 not divisible by 8 groups
    with pytest.raises(ValueError):
        GeneratorConfig(condition_dropout=1.0)


def test_after_one_step_the_velocity_depends_on_t_seed_map_and_background() -> None:
    torch.manual_seed(0)
    net = build_generator(SMALL)
    x_t, t, cond = inputs(2, 16, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = rectified_flow_loss(net, x_t, cond, torch.Generator().manual_seed(1)).loss
    opt.zero_grad()
    loss.backward()
    opt.step()

    with torch.no_grad():
        v = net(x_t, t, cond)
        assert v.abs().max() > 0
        for changed in [
            net(x_t, 1.0 - t, cond),
            net(x_t, t, {**cond, "seed_map": torch.zeros_like(cond["seed_map"])}),
            net(x_t, t, {**cond, "background": cond["background"] + 0.5}),
            net(x_t + 0.5, t, cond),
        ]:
            assert (changed - v).abs().max() > 1e-3 * v.abs().max()


def test_samples_are_independent_of_their_batch() -> None:
    # GroupNorm, not BatchNorm: what guidance's 2B batch relies on
    torch.manual_seed(0)
    net = build_generator(SMALL).double()  # float64: only the batching can differ
    with torch.no_grad():
        net.out_conv.weight.normal_()
        x_t, t, cond = inputs(3, 16, 16)
        x_t, t = x_t.double(), t.double()
        cond = {k: c.double() for k, c in cond.items()}
        v_all = net(x_t, t, cond)
        v_one = net(x_t[1:2], t[1:2], {k: c[1:2] for k, c in cond.items()})
    torch.testing.assert_close(v_all[1:2], v_one, rtol=1e-10, atol=1e-12)


def test_drop_condition_is_replayable_and_drops_about_p() -> None:
    cond = {"seed_map": torch.ones(4000, 1, 2, 2), "background": torch.full((4000, 1, 2, 2), 7.0)}
    a = drop_condition(cond, torch.Generator().manual_seed(3), 0.25)
    b = drop_condition(cond, torch.Generator().manual_seed(3), 0.25)
    assert torch.equal(a["seed_map"], b["seed_map"])
    dropped = (a["seed_map"].flatten(1) == 0).all(dim=1)
    assert ((a["seed_map"].flatten(1) == 1).all(dim=1) | dropped).all()  # whole samples
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert torch.equal(a["background"], cond["background"])  # never dropped
    assert torch.equal(cond["seed_map"], torch.ones(4000, 1, 2, 2))  # input untouched
    assert torch.equal(drop_condition(cond, None, 0.0)["seed_map"], cond["seed_map"])
    assert drop_condition(cond, torch.Generator().manual_seed(0), 1.0)["seed_map"].sum() == 0
    with pytest.raises(ValueError):
        drop_condition(cond, None, 1.5)


def test_guided_velocity_interpolates_between_unconditional_and_conditional() -> None:
    torch.manual_seed(0)
    net = build_generator(SMALL)
    with torch.no_grad():
        net.out_conv.weight.normal_(std=0.1)
        x_t, t, cond = inputs(2, 16, 16)
        uncond = {**cond, "seed_map": torch.zeros_like(cond["seed_map"])}
        v_c, v_u = net(x_t, t, cond), net(x_t, t, uncond)
        assert torch.equal(guided_velocity(net, x_t, t, cond, 1.0), v_c)
        torch.testing.assert_close(guided_velocity(net, x_t, t, cond, 0.0), v_u)
        torch.testing.assert_close(guided_velocity(net, x_t, t, cond, 3.0), v_u + 3.0 * (v_c - v_u))


def test_overfits_one_pair_and_draws_the_mc_at_the_seed() -> None:
    # one synthetic pair: smooth background + a bright blob at the seed
    torch.manual_seed(0)
    h = w = 64
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    background = 0.3 + 0.1 * torch.sin(cols / 7) * torch.cos(rows / 11)
    image = background + torch.exp(-((rows - 40) ** 2 + (cols - 24) ** 2) / (2 * 2.0**2))
    seed_map = render_seed_map([Seed(40.0, 24.0, 0.5, 1.0)], (h, w), (0.1, 0.1), SeedConfig())
    x1 = image[None, None]
    cond = {
        "seed_map": torch.from_numpy(seed_map)[None, None],
        "background": background[None, None],
    }

    net = build_generator(GeneratorConfig(channels=(16, 32), time_embedding_dim=32))

    def held_out_loss() -> float:  # 16 fixed (noise, t) draws: a low-variance estimate
        batch = {k: c.expand(16, -1, -1, -1) for k, c in cond.items()}
        with torch.no_grad():
            return rectified_flow_loss(
                net, x1.expand(16, -1, -1, -1), batch, torch.Generator().manual_seed(123)
            ).loss.item()

    before = held_out_loss()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = rectified_flow_loss(net, x1, cond, g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.5 * before

    noise = torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        sample = euler_sample(
            net, partial_start(cond["background"], noise, 0.5), 20, 0.5, 1.0, cond
        )
    added = (sample - cond["background"])[0, 0]
    at_seed = added[38:43, 22:27].mean()
    away = added[8:20, 40:56].mean()
    assert at_seed > away + 0.2


# --------------------------------------------------------------------------- data convention


def test_contract_residual_and_projection_are_inverse_known_answers() -> None:
    contract = GeneratorContract(residual_scale=4.0)
    observation = np.array([[0.5, 0.25]], dtype=np.float32)
    image = np.array([[0.75, 0.25]], dtype=np.float32)
    residual = contract.residual(image, observation)
    assert residual.dtype == np.float32 and residual.tolist() == [[1.0, 0.0]]  # 4 x (x - y)
    assert np.array_equal(contract.project(observation, residual), image)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(GeneratorContract().project(y, GeneratorContract().residual(x, y)), x,
                          atol=1e-6)
    assert GeneratorContract().residual_scale == 10.0  # the shipped generator's
    with pytest.raises(ValueError, match="residual_scale"):
        GeneratorContract(residual_scale=0.0)


def test_contract_condition_and_seed_map() -> None:
    contract = GeneratorContract()
    y, seeds = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    cond = contract.condition(y, seeds)
    assert set(cond) == {"seed_map", "background"}
    assert cond["seed_map"] is seeds and cond["background"] is y
    # a candidate's own strength (its probability) is not drawn: every seed at strength 1
    weak = [Seed(8.0, 8.0, 0.4, 0.3)]
    drawn = contract.seed_map(weak, (17, 17), (0.1, 0.1), SeedConfig())
    assert drawn.max() == pytest.approx(1.0)
    assert np.array_equal(drawn, render_seed_map([Seed(8.0, 8.0, 0.4, 1.0)], (17, 17), (0.1, 0.1),
                                                 SeedConfig()))
    assert contract.to_extra()["residual_scale"] == 10.0


def test_sample_projection_of_a_zero_velocity_is_the_sdedit_start_projected() -> None:
    """An untrained net's velocity is 0: the residual stays ``(1 - t_start) noise``."""
    torch.manual_seed(0)
    net = build_generator(SMALL).eval()
    y = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    contract = GeneratorContract(residual_scale=5.0)
    x = contract.sample_projection(net, y, torch.zeros_like(y), noise, t_start=0.25, steps=3)
    assert torch.allclose(x, y + 0.75 * noise / 5.0, atol=1e-6)
