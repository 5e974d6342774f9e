from __future__ import annotations

import numpy as np
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
