"""``benchmarks/false_components.py`` (issue 13) on one hand-made patch: each kind of false
component lands in its category, and the rules count what they should."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("false_components")


def _patch(bench):  # noqa: ANN001, ANN202
    """64 x 64 px at 0.2 mm: a visible MC at (20, 20) (mask: its 2 x 2 px and a stray pixel
    at (26, 20), 1.2 mm away), an invisible one at (40, 40); seven predicted components."""
    from mcgenref.synthesis.sample import Sample

    mask = np.zeros((64, 64), np.uint8)
    mask[19:21, 19:21] = 1
    mask[26, 20] = 1
    record = {"spacing_mm": [0.2, 0.2], "mcs": [
        {"y_px": 19.5, "x_px": 19.5, "visible": True, "cnr": 8.0},
        {"y_px": 40.0, "x_px": 40.0, "visible": False, "cnr": 3.0}]}
    logit = np.full((64, 64), -10.0, np.float32)
    logit[19:21, 19:21] = 10.0  # the hit (4 px)
    logit[20, 24] = 10.0  # 0.9 mm from the visible MC: a second component on it
    logit[26, 20] = 10.0  # on the mask, 1.3 mm from the MC: a fragment
    logit[40, 41] = 10.0  # on the invisible MC
    logit[3, 30] = 10.0  # 3 px from the patch's top side
    logit[32, 32] = 10.0  # in tissue, far from everything; also on the MC-free patch
    logit[30, 44] = 10.0  # in tissue, only with the MCs
    background_logit = np.full((64, 64), -10.0, np.float32)
    background_logit[32, 33] = 10.0
    image = np.zeros((64, 64), np.float32)
    return bench.DevSet("test", 0, [Sample(image, mask, record)], [logit], [background_logit],
                        [np.ones((64, 64), bool)], "hand-made")


def test_each_false_component_lands_in_its_category(bench) -> None:  # noqa: ANN001
    data = _patch(bench)
    (comps,) = bench.describe_set(data, 0.99)  # also checks the counts against score_synthetic
    by_place = {tuple(np.rint(c).astype(int)): cat
                for c, cat in zip(comps.table["centroid"], comps.table["category"], strict=True)}
    assert by_place == {(20, 20): "matched", (20, 24): "duplicate", (26, 20): "fragment",
                        (40, 41): "invisible", (3, 30): "patch_edge",
                        (32, 32): "tissue_background", (30, 44): "tissue"}
    assert comps.table["area_px"].tolist().count(4) == 1


def test_rules_remove_and_merge_what_they_should(bench) -> None:  # noqa: ANN001
    data = _patch(bench)
    comps = bench.describe_set(data, 0.99)
    scores = bench.rule_scores(data, comps)
    none = scores[("none", 0.0)]
    assert none.objects.tolist() == [[1, 6, 1]]
    # every false component is 1 px: an area of 2 px keeps only the hit, and its Dice rises
    kept = scores[("min_area_px", 2.0)]
    assert kept.objects.tolist() == [[1, 0, 1]]
    assert kept.counts[0].tolist()[:3] == [4, 0, 1]  # tp, fp, fn (the stray mask pixel)
    # merging within 1 mm joins the second component (0.8 mm gap) and the fragment (1.2 mm
    # gap: not joined) -> one false component fewer; the centroid moves but stays on the MC
    merged = scores[("merge_within_mm", 1.0)]
    assert merged.objects.tolist() == [[1, 5, 1]]
    assert merged.counts.tolist() == none.counts.tolist()


def test_in_cluster_keeps_the_members_of_a_cluster_only(bench) -> None:  # noqa: ANN001
    # three components within 1 mm of each other and one 20 mm away: the shipped rule
    # (3 MCs within 5 mm) clusters the three; with 4 MCs needed, none
    table = {"area_px": np.ones(4, int), "peak_logit": np.array([9.0, 8.0, 7.0, 9.5]),
             "centroid_mm": np.array([[10.0, 10.0], [10.5, 10.0], [10.0, 10.8], [30.0, 10.0]])}
    assert bench.in_cluster(table, 3).tolist() == [True, True, True, False]
    assert bench.in_cluster(table, 4).tolist() == [False] * 4


def test_the_table_names_the_command_that_wrote_it(bench) -> None:  # noqa: ANN001
    """Another model's table gives its --model and its threshold in full (0.9999999, not 1),
    --no-real when the real check was left out; the shipped model at its own point neither."""
    res = {"n_patches": 100, "n_bootstrap": 1000, "threshold": 0.9999999, "threshold_given": True,
           "model": {"path": "runs/m/model", "shipped": False}}
    assert bench.command_line(res) == ("python benchmarks/false_components.py --patches 100 --bootstrap 1000 "
                                       "--model runs/m/model --threshold 0.9999999 --no-real")
    shipped = {"n_patches": 50, "n_bootstrap": 10, "threshold": 0.99, "threshold_given": False,
               "model": {"path": "x", "shipped": True}, "real_check": {}}
    assert bench.command_line(shipped) == "python benchmarks/false_components.py --patches 50 --bootstrap 10"
