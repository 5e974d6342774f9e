"""Scores on synthetic samples: known counts on hand-made masks and predictions."""

import numpy as np
import pytest
import torch

from mcgenref.evaluation.synthetic import (
    refined_probabilities,
    score_synthetic,
    segmentor_logits,
    visible_points,
)
from mcgenref.synthesis.sample import Sample


def _sample(points: list[tuple[int, int, bool]], shape=(32, 32)) -> Sample:
    mask = np.zeros(shape, np.uint8)
    mcs = []
    for r, c, visible in points:
        if visible:
            mask[r - 1 : r + 2, c - 1 : c + 2] = 1
        mcs.append({"y_px": float(r), "x_px": float(c), "visible": visible})
    return Sample(image=np.zeros(shape, np.float32), mask=mask,
                  record={"mcs": mcs, "spacing_mm": [0.1, 0.1]})


def test_visible_points_drops_invisible():
    s = _sample([(5, 5, True), (20, 20, False)])
    assert visible_points(s.record).tolist() == [[5.0, 5.0]]
    assert visible_points({"mcs": []}).shape == (0, 2)


def test_counts_objects_and_pooling():
    a = _sample([(5, 5, True), (20, 20, True)])
    b = _sample([])
    pa = np.zeros((32, 32), np.float32)
    pa[4:7, 4:7] = 0.9  # exactly the first MC
    pa[28, 28] = 0.95  # a false component, 1 pixel
    pa[20, 20] = 0.4  # below the threshold: the second MC is missed
    pb = np.zeros((32, 32), np.float32)
    scores = score_synthetic([pa, pb], [a, b], threshold=0.5)
    assert scores.counts.tolist() == [[9, 1, 9, 32 * 32 - 19], [0, 0, 0, 32 * 32]]
    assert scores.objects.tolist() == [[1, 1, 2], [0, 0, 0]]
    assert scores.object_sensitivity == 0.5
    assert scores.fp_per_patch == 0.5
    pooled = scores.pooled()
    assert pooled["recall"] == pytest.approx(0.5)
    assert pooled["precision"] == pytest.approx(0.9)
    assert pooled["dice"] == pytest.approx(2 * 9 / (2 * 9 + 1 + 9))
    # a lower threshold finds the second MC's pixel (a component within tolerance of it)
    low = score_synthetic([pa, pb], [a, b], threshold=0.3)
    assert low.objects[0].tolist() == [2, 1, 2]


def test_summary_has_cis_only_when_asked():
    a = _sample([(5, 5, True)])
    p = np.zeros((32, 32), np.float32)
    p[4:7, 4:7] = 1.0
    scores = score_synthetic([p, p], [a, a], 0.5)
    s0 = scores.summary()
    assert s0["ci"] == {} and s0["pooled"]["dice"] == 1.0 and s0["n_truth_mcs"] == 2
    s1 = scores.summary(n_bootstrap=20, metrics=("dice",))
    assert s1["ci"]["dice"] == [1.0, 1.0]


def test_mismatched_inputs_are_refused():
    a = _sample([])
    with pytest.raises(ValueError, match="probability maps"):
        score_synthetic([], [a], 0.5)
    with pytest.raises(ValueError, match="mask"):
        score_synthetic([np.zeros((8, 8))], [a], 0.5)


class _Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * (x - 0.5)


class _ShiftRefiner:
    """Adds 3 to every logit and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def refine(self, image, region, logits, spacing):  # noqa: ANN001, ANN201
        self.calls.append((region.all(), spacing))
        return type("R", (), {"logits": logits + 3.0})()


def test_segmentor_logits_and_refined_probabilities():
    a = _sample([(5, 5, True)])
    a.image[:] = 0.5
    a.image[5, 5] = 0.8
    logits = segmentor_logits(_Scale(), [a])
    assert logits[0].shape == (32, 32) and logits[0][5, 5] == pytest.approx(3.0)
    plain = refined_probabilities([a], logits)
    assert plain[0][0, 0] == pytest.approx(0.5) and plain[0][5, 5] == pytest.approx(1 / (1 + np.exp(-3)))
    refiner = _ShiftRefiner()
    refined = refined_probabilities([a], logits, refiner)
    assert refined[0][0, 0] == pytest.approx(1 / (1 + np.exp(-3)))
    assert refiner.calls == [(True, (0.1, 0.1))]  # the whole patch, at the sample's spacing
