from __future__ import annotations

import numpy as np
import pytest
import torch

from mcgenref.inference.sliding import sliding_window_logits


def test_identity_predictor_reconstructs_image_in_region() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(150, 230)).astype(np.float32)
    region = np.zeros_like(image, bool)
    region[20:80, 10:100] = True
    res = sliding_window_logits(image, region, lambda x: x * 1.0, window_px=64, overlap=0.5, batch_size=3)
    # a blend of identical values is the value itself, wherever a window reached
    reached = np.isfinite(res.logits)
    assert reached[region].all()
    np.testing.assert_allclose(res.logits[reached], image[reached], rtol=1e-5, atol=1e-5)
    assert res.n_windows < res.n_windows_total  # windows over pure background were skipped


def test_no_window_outside_region_is_run() -> None:
    image = np.zeros((256, 256), np.float32)
    region = np.zeros_like(image, bool)
    region[:40, :40] = True
    seen = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.zeros_like(x)

    res = sliding_window_logits(image, region, predict, window_px=64, overlap=0.0, batch_size=8)
    assert res.n_windows == 1 and sum(seen) == 1
    assert np.isinf(res.logits[200, 200]) and res.logits[10, 10] == 0.0


def test_small_image_is_padded() -> None:
    image = np.arange(30 * 20, dtype=np.float32).reshape(30, 20)
    res = sliding_window_logits(image, np.ones_like(image, bool), lambda x: x + 1, window_px=32)
    assert res.logits.shape == (30, 20)
    np.testing.assert_allclose(res.logits, image + 1, rtol=1e-6)


def _blobs(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A breast-like region: a half-ellipse against the left edge plus a few separate specks."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    region = ((r - shape[0] / 2) / (0.45 * shape[0])) ** 2 + (c / (0.8 * shape[1])) ** 2 <= 1
    for _ in range(4):
        rr, cc = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        region[max(0, rr - 3) : rr + 3, max(0, cc - 3) : cc + 3] = True
    return region


def _key(window) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    return window[0].start, window[0].stop, window[1].start, window[1].stop


def _guarantee(region: np.ndarray, windows: list, context_px: int) -> tuple[bool, bool]:
    """(every region pixel in a window, every region pixel in a window's core)."""
    from mcgenref.inference.sliding import _core

    in_window = np.zeros(region.shape, bool)
    in_core = np.zeros(region.shape, bool)
    for s in windows:
        in_window[s] = True
        in_core[_core(s, region.shape, context_px)] = True
    return bool(in_window[region].all()), bool(in_core[region].all())


@pytest.mark.parametrize("shape,window,overlap,context", [
    ((300, 233), 64, 0.25, 8), ((287, 401), 64, 0.25, 0), ((150, 150), 32, 0.5, 8),
    ((129, 97), 64, 0.25, 8), ((64, 64), 64, 0.25, 8)])
def test_selected_windows_cover_every_region_pixel_with_context(shape, window, overlap, context) -> None:
    from monai.data.utils import dense_patch_slices

    from mcgenref.inference.sliding import select_windows

    for seed in range(3):
        region = _blobs(shape, seed)
        plan = select_windows(region, window, overlap, context)
        interval = max(1, int(round(window * (1 - overlap))))
        grid = dense_patch_slices(shape, (window, window), (interval, interval))
        assert plan.n_total == len(grid)
        assert {_key(s) for s in plan.windows} <= {_key(s) for s in grid}  # grid positions, unmoved
        assert len(plan.windows) <= plan.n_touching
        assert _guarantee(region, plan.windows, context) == (True, True)
        # and no kept window could go: each one holds a pixel no other window (core) holds
        for k in range(len(plan.windows)):
            rest = plan.windows[:k] + plan.windows[k + 1 :]
            assert _guarantee(region, rest, context) != (True, True)


def test_a_window_that_repeats_its_neighbours_is_skipped_unless_context_needs_it() -> None:
    from mcgenref.inference.sliding import select_windows

    # 260 rows of 64 px windows at stride 48: starts 0, 48, ..., 192 and a last one moved back
    # to 196, so rows 192-260 hold three windows and the one at 192 repeats its neighbours
    region = np.ones((260, 64), bool)
    plan = select_windows(region, 64, 0.25, 0)
    assert plan.n_touching == plan.n_total == 6
    assert [s[0].start for s in plan.windows] == [0, 48, 96, 144, 196]
    assert _guarantee(region, plan.windows, 0) == (True, True)
    # 8 px of context: rows 200-204 lie 8 px inside the window at 192 only
    assert len(select_windows(region, 64, 0.25, 8).windows) == 6


def test_skipped_windows_change_only_what_they_covered() -> None:
    """Kept windows give the same output as with the whole grid: a window-dependent predictor
    (its output depends on the window's mean, as instance norm makes the network's) agrees
    wherever no skipped window reached."""
    from mcgenref.inference.sliding import select_windows

    rng = np.random.default_rng(1)
    image = rng.normal(size=(300, 233)).astype(np.float32)
    region = _blobs(image.shape, 0)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=(2, 3), keepdim=True)

    from monai.data.utils import compute_importance_map, dense_patch_slices

    plan = select_windows(region, 64, 0.25, 16)
    fewer = sliding_window_logits(image, region, predict, 64, 0.25, 4, context_px=16)
    assert fewer.n_windows == len(plan.windows) < plan.n_touching
    # the blend over every window that touches the region (the grid before skipping)
    weight = compute_importance_map((64, 64), mode="gaussian", sigma_scale=0.125).numpy()
    num, den = np.zeros_like(image), np.zeros_like(image)
    kept = {_key(s) for s in plan.windows}
    skipped = np.zeros(region.shape, bool)
    x = torch.from_numpy(image)
    for s in dense_patch_slices(region.shape, (64, 64), (48, 48)):
        if region[s].any():
            num[s] += predict(x[s][None, None])[0, 0].numpy() * weight
            den[s] += weight
            skipped[s] |= _key(s) not in kept
    every = num / np.maximum(den, 1e-12)
    assert np.isfinite(fewer.logits[region]).all()
    untouched = region & ~skipped
    assert untouched.any() and (region & skipped).any()
    np.testing.assert_allclose(fewer.logits[untouched], every[untouched], rtol=1e-5, atol=1e-5)


def test_context_beyond_half_the_window_is_refused() -> None:
    from mcgenref.inference.sliding import select_windows

    with pytest.raises(ValueError):
        select_windows(np.ones((64, 64), bool), 64, 0.25, 33)


def test_a_plan_made_by_the_caller_gives_the_same_logits() -> None:
    from mcgenref.inference.sliding import select_windows

    rng = np.random.default_rng(1)
    image = rng.random((150, 130)).astype(np.float32)
    region = np.zeros(image.shape, bool)
    region[20:140, :90] = True
    predict = lambda x: x * 2.0 - 1.0  # noqa: E731
    plan = select_windows(region, 64, 0.25, 16)
    a = sliding_window_logits(image, region, predict, 64, 0.25, 3)
    b = sliding_window_logits(image, region, predict, 64, 0.25, 3, plan=plan)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert (a.n_windows, a.n_windows_total) == (b.n_windows, b.n_windows_total)
