"""Rectified flow checked against answers known by theory (time convention: see the module).

Two analytic fields are used, both optimal rectified-flow velocities v(x, t) = E[x_1 - x_0 | x_t = x]:

- data a point mass at ``mu``: ``x - t mu = (1 - t)(x_0 - mu)``, so ``v = (mu - x) / (1 - t)``.
  Every path is a straight line travelled at constant speed ``mu - x_0`` and ``v`` returns
  that speed at every point of the line, so an Euler step from a point on the line lands on
  the line again: Euler (and Heun, whose two slopes then agree) is exact at *every* step, the
  last one included. Euler never evaluates ``t = 1`` (the singularity) and neither does our
  Heun, whose last step is Euler.
- data ``N(m, s^2)`` in 1-D: ``x_t ~ N(t m, sigma_t^2)``, ``sigma_t^2 = (1 - t)^2 + t^2 s^2``;
  ``x_1 - x_0`` and ``x_t`` are jointly Gaussian with ``Cov = t s^2 - (1 - t)``, so
  ``v = m + (x - t m) (t s^2 - (1 - t)) / sigma_t^2``. Its flow is ``x_t = t m + sigma_t x_0``,
  that is, it maps ``x_0`` to ``m + s x_0`` exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mcgenref.flow import (
    RFLoss,
    euler_sample,
    heun_sample,
    interpolate,
    partial_start,
    rectified_flow_loss,
    sample_time,
)

TIGHT = {"rtol": 0.0, "atol": 1e-12}  # float64 rounding, nothing else


def point_mass_field(mu: Tensor):
    def v(x_t: Tensor, t: Tensor, cond: object) -> Tensor:
        return (mu - x_t) / (1 - t).reshape(-1, *([1] * (x_t.ndim - 1)))

    return v


def gaussian_field(m: float, s: float):
    def v(x_t: Tensor, t: Tensor, cond: object) -> Tensor:
        t = t.reshape(-1, *([1] * (x_t.ndim - 1)))
        var_t = (1 - t) ** 2 + t**2 * s**2
        return m + (x_t - t * m) * (t * s**2 - (1 - t)) / var_t

    return v


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# (1) endpoints --------------------------------------------------------------------------------


def test_interpolate_is_noise_at_0_and_data_at_1_exactly():
    x0, x1 = randn(3, 2, 5, 4, dtype=torch.float32), randn(3, 2, 5, 4, seed=1, dtype=torch.float32)
    assert torch.equal(interpolate(x0, x1, torch.zeros(3)), x0)
    assert torch.equal(interpolate(x0, x1, torch.ones(3)), x1)
    assert torch.equal(interpolate(x0, x1, 0.0), x0)
    assert torch.equal(interpolate(x0, x1, 1.0), x1)


def test_interpolate_broadcasts_one_time_per_sample():
    x0, x1 = randn(3, 2, 5, 4), randn(3, 2, 5, 4, seed=1)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    x_t = interpolate(x0, x1, t)
    for b in range(3):
        torch.testing.assert_close(x_t[b], (1 - t[b]) * x0[b] + t[b] * x1[b], **TIGHT)


# (2) the straight path's own velocity -------------------------------------------------------


def test_loss_is_zero_for_the_exact_conditional_velocity():
    x1 = randn(64, 2, 6, 6)

    def exact(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:  # the path through cond = x1
        return (cond - x_t) / (1 - t).reshape(-1, 1, 1, 1)

    out = rectified_flow_loss(exact, x1, cond=x1, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, RFLoss)
    assert out.loss.item() < 1e-20
    assert out.t.shape == (64,) and out.x_t.shape == out.target.shape == x1.shape
    # The reduction: a zero field scores the mean squared target; x_0 behaves like N(0, I).
    zero = rectified_flow_loss(
        lambda x_t, t, c: torch.zeros_like(x_t), x1, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(zero.loss, zero.target.pow(2).mean(), **TIGHT)
    x0 = x1 - zero.target
    torch.testing.assert_close(zero.x_t, interpolate(x0, x1, zero.t), rtol=0.0, atol=1e-14)
    assert abs(x0.mean().item()) < 0.05 and abs(x0.std().item() - 1) < 0.05


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
def test_one_step_along_a_straight_path_lands_on_its_end(sampler):
    x0, x1 = randn(4, 3, 5), randn(4, 3, 5, seed=1)
    out = sampler(lambda x_t, t, cond: x1 - x0, x0, steps=1)
    torch.testing.assert_close(out, x1, **TIGHT)


# (3) point mass: Euler and Heun exact at every step -----------------------------------------


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_point_mass_field_is_integrated_exactly_at_every_step(sampler, steps):
    mu, x0 = randn(1, 8, seed=2), randn(16, 8)
    v = point_mass_field(mu)
    for k in range(1, steps + 1):  # k steps to t = k/steps: the k-th state of the full run
        t = k / steps
        x_t = sampler(v, x0, steps=k, t_end=t)
        torch.testing.assert_close(x_t, (1 - t) * x0 + t * mu, **TIGHT)
    torch.testing.assert_close(sampler(v, x0, steps=steps), mu.expand_as(x0), **TIGHT)


# (4) Gaussian to Gaussian -------------------------------------------------------------------


def test_heun_carries_noise_to_a_gaussian_and_beats_euler():
    m, s = 2.0, 0.5
    v, x0 = gaussian_field(m, s), randn(20000, 1)
    exact = m + s * x0  # the flow's own map, same x_0
    heun, euler = heun_sample(v, x0, steps=20), euler_sample(v, x0, steps=20)
    assert abs(heun.mean().item() - m) < 0.02 * m
    assert abs(heun.std().item() - s) < 0.02 * s
    heun_err, euler_err = (heun - exact).abs().max(), (euler - exact).abs().max()
    assert heun_err < 0.02 and heun_err < euler_err / 10
    # Orders: halving h divides the error by ~4 (Heun) and ~2 (Euler).
    heun10 = (heun_sample(v, x0, steps=10) - exact).abs().max()
    euler10 = (euler_sample(v, x0, steps=10) - exact).abs().max()
    assert 3.5 < heun10 / heun_err < 5.0
    assert 1.7 < euler10 / euler_err < 2.3


# (5) partial (SDEdit) start -----------------------------------------------------------------


def test_partial_start_endpoints():
    x_obs, noise = randn(2, 1, 8, 8), randn(2, 1, 8, 8, seed=1)
    assert torch.equal(partial_start(x_obs, noise, 0.0), noise)
    assert torch.equal(partial_start(x_obs, noise, 1.0), x_obs)
    torch.testing.assert_close(partial_start(x_obs, noise, 1 - 1e-9), x_obs, rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="t_start"):
        partial_start(x_obs, noise, 1.5)


@pytest.mark.parametrize("sampler", [euler_sample, heun_sample])
def test_sampling_from_a_partial_start_lands_on_the_data(sampler):
    x_obs, noise = randn(1, 1, 8, 8, seed=3), randn(5, 1, 8, 8)
    x_start = partial_start(x_obs, noise, 0.6)
    out = sampler(point_mass_field(x_obs), x_start, steps=4, t_start=0.6)
    torch.testing.assert_close(out, x_obs.expand_as(out), **TIGHT)


def test_partial_start_from_gaussian_data_keeps_the_data_distribution():
    m, s = 2.0, 0.5
    data, noise = m + s * randn(20000, 1, seed=4), randn(20000, 1, seed=5)
    out = heun_sample(gaussian_field(m, s), partial_start(data, noise, 0.5), steps=10, t_start=0.5)
    assert abs(out.mean().item() - m) < 0.02 * m
    assert abs(out.std().item() - s) < 0.02 * s


# samplers: calls, shapes, arguments ---------------------------------------------------------


def test_samplers_call_the_field_with_one_time_per_sample():
    calls: list[tuple[tuple[int, ...], float, object]] = []

    def v(x_t: Tensor, t: Tensor, cond: object) -> Tensor:
        assert t.shape == (x_t.shape[0],) and t.dtype == x_t.dtype
        calls.append((tuple(x_t.shape), t[0].item(), cond))
        return torch.zeros_like(x_t)

    x = torch.zeros(3, 2, 4, 4)
    euler_sample(v, x, steps=4, cond="c")
    assert [c[1] for c in calls] == [0.0, 0.25, 0.5, 0.75] and {c[2] for c in calls} == {"c"}
    calls.clear()
    heun_sample(v, x, steps=4)
    assert len(calls) == 7 and max(c[1] for c in calls) == 0.75  # never t = 1
    calls.clear()
    heun_sample(v, x, steps=4, t_end=0.5)
    assert len(calls) == 8 and max(c[1] for c in calls) == 0.5


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 2, "t_start": 0.7, "t_end": 0.2}])
def test_samplers_reject_bad_grids(kwargs):
    with pytest.raises(ValueError):
        euler_sample(lambda x_t, t, c: x_t, torch.zeros(1, 2), **kwargs)


# (6) randomness -----------------------------------------------------------------------------


def test_same_seed_same_loss_and_time_and_no_global_rng_use():
    net = nn.Linear(4, 4)
    x1 = randn(8, 4, dtype=torch.float32)

    def v(x_t: Tensor, t: Tensor, cond: object) -> Tensor:
        return net(x_t) * t[:, None]

    global_state = torch.get_rng_state()
    a, b = (rectified_flow_loss(v, x1, generator=torch.Generator().manual_seed(7)) for _ in "ab")
    c = rectified_flow_loss(v, x1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.t, b.t) and torch.equal(a.x_t, b.x_t)
    assert not torch.equal(a.t, c.t)


def test_sample_time_distributions():
    g = torch.Generator().manual_seed(0)
    uniform = sample_time(10000, g, "cpu")
    logit_normal = sample_time(10000, g, "cpu", distribution="logit_normal")
    assert uniform.shape == (10000,) and uniform.min() >= 0 and uniform.max() < 1
    assert abs(uniform.mean().item() - 0.5) < 0.01
    assert logit_normal.min() > 0 and logit_normal.max() < 1
    assert abs(logit_normal.median().item() - 0.5) < 0.02 and logit_normal.std() < uniform.std()
    again = sample_time(10000, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(uniform, again)
    with pytest.raises(ValueError, match="time distribution"):
        sample_time(4, g, "cpu", distribution="beta")  # type: ignore[arg-type]


# (7) a tiny network learns two points -------------------------------------------------------


class TinyVelocity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2)
        )

    def forward(self, x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
        return self.net(torch.cat([x_t, t[:, None]], dim=1))


def test_tiny_mlp_learns_two_point_masses():
    points = torch.tensor([[-2.0, 1.0], [2.0, -1.0]])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TinyVelocity()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(200):
        x1 = points[torch.randint(0, 2, (256,), generator=g)]
        out = rectified_flow_loss(net, x1, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    # Not to 0: near t = 0 the direction to take is ambiguous, so some loss is irreducible.
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:10]) / 10
    with torch.no_grad():
        samples = euler_sample(net, torch.randn(1000, 2, generator=g), steps=20)
    dist = torch.cdist(samples, points)
    assert (dist.min(dim=1).values < 0.5).float().mean() > 0.85
    share = (dist.argmin(dim=1) == 0).float().mean()
    assert 0.3 < share < 0.7


def test_weighted_loss_is_the_weighted_mean_of_the_squared_errors():
    x1 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))

    def zero(x, t, cond):
        return torch.zeros_like(x)

    plain = rectified_flow_loss(zero, x1, generator=torch.Generator().manual_seed(0))
    ones = rectified_flow_loss(zero, x1, generator=torch.Generator().manual_seed(0),
                               weight=torch.ones_like(x1))
    assert torch.allclose(plain.loss, ones.loss)
    half = torch.zeros_like(x1)
    half[0] = 1.0  # only the first sample counts
    only_first = rectified_flow_loss(zero, x1, generator=torch.Generator().manual_seed(0), weight=half)
    assert torch.allclose(only_first.loss, only_first.target[0].pow(2).mean())
