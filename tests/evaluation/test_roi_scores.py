"""``benchmarks/roi_scores.py``: the 8 flips and turns, the crop scores of a known map, and the
within-thirds confound check on crops whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("roi_scores")


def test_the_eight_flips_and_turns_are_distinct_and_undone(bench) -> None:  # noqa: ANN001
    a = np.arange(12, dtype=float).reshape(3, 4)
    seen = {bench.dihedral(a, k).tobytes() + bytes(bench.dihedral(a, k).shape) for k in range(8)}
    assert len(seen) == 8
    for k in range(8):
        assert np.array_equal(bench.undo_dihedral(bench.dihedral(a, k), k), a)


def test_crop_scores_of_a_known_map(bench) -> None:  # noqa: ANN001
    prob = np.zeros((10, 10), np.float32)
    prob[2, 2:8] = [0.9, 0.8, 0.7, 0.6, 0.4, 0.2]  # 6 pixels, 4 above 0.5, sum 3.6
    prob[9, 9] = 1.0  # outside the region
    region = np.ones((10, 10), bool)
    region[9, 9] = False
    s = bench.crop_scores(prob, prob * 0.5, region, (0.1, 0.1))
    assert s["max_prob"] == pytest.approx(0.9) and s["tta_max"] == pytest.approx(0.45)
    assert s["top5_mean"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6 + 0.4) / 5)
    assert s["n_above_half"] == 4 and s["mc_area_mm2"] == pytest.approx(3.6 * 0.01)


def test_within_thirds_a_separating_score_stays_perfect(bench) -> None:  # noqa: ANN001
    # 60 cases of one crop each, calcification crops brighter on average (the confound):
    # max_prob and mc_area_mm2 separate the classes everywhere, tta_max is the brightness
    # itself, n_above_half is tied
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = i % 2
        mean = rng.uniform(0, 1) + 0.5 * label
        rows.append({"case": f"c{i:03d}", "label": label, "mean": mean, "std": rng.uniform(),
                     "max_minus_median": rng.uniform(), "max_prob": label + 0.1 * rng.uniform(),
                     "tta_max": mean, "top5_mean": rng.uniform(), "n_above_half": 0.0,
                     "mc_area_mm2": label + 0.1 * rng.uniform()})
    r = bench.analyse(rows, n_boot=50, seed=0)
    assert r["scores"]["max_prob"]["auc"] == 1.0 and r["scores"]["tta_max"]["auc"] < 1.0
    assert r["scores"]["mc_area_mm2"]["minus_max_prob"]["difference"] == 0.0
    assert r["scores"]["n_above_half"]["auc"] == 0.5
    strata = r["strata"]["mean"]
    assert strata["max_prob"] == strata["mc_area_mm2"] == [1.0, 1.0, 1.0]
    assert strata["n_above_half"] == [0.5, 0.5, 0.5] and len(strata["mean"]) == 3
    # the thirds split the 60 crops into 20 each, by the statistic's tertiles
    assert [sum(c) for c in strata["n_calcification_normal"]] == [20, 20, 20]
    assert set(r["strata"]) == {"mean", "std", "max_minus_median"}
