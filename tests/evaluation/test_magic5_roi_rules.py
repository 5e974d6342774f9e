"""``benchmarks/magic5_roi.py --select-rule``: the candidate that is the library's ROI rule, and
the table of the paired differences from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcgenref.inference.segment import fit_roi_normalization
from mcgenref.io.meta import ImageMeta
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("magic5_roi")


def test_the_library_rule_is_what_segment_roi_does(bench) -> None:  # noqa: ANN001
    raw = np.random.default_rng(0).integers(40, 200, (60, 60)).astype(np.float32)
    meta = ImageMeta(source_path="crop", format="png", rows=60, columns=60,
                     pixel_spacing_mm=(0.085, 0.085), spacing_source="user", bits_stored=8)
    assert bench.CANDIDATE_RULES[bench.LIBRARY_RULE](raw, meta) == fit_roi_normalization(raw, meta)


def test_the_selection_table_shows_each_rules_paired_difference(
        bench, tmp_path: Path) -> None:  # noqa: ANN001
    auc = {"auc": 0.9, "ci": [0.8, 0.95]}
    same = {"difference": 0.0, "ci": [0.0, 0.0]}
    better = {"difference": 0.012, "ci": [-0.004, 0.03]}
    rules = {name: {"n_mcs": auc, "max_prob": auc, "max_prob_minus_library_rule": d}
             for name, d in ((bench.LIBRARY_RULE, same), ("other", better))}
    result = {"rules": rules, "trivial": {"std": auc}}
    bench.write_selection(tmp_path, result, 8, 4, model=Path("m"))
    text = (tmp_path / "rule_selection.md").read_text()
    assert "Model `m`" in text
    row = "| other | 0.900 [0.800, 0.950] | 0.900 [0.800, 0.950] | +0.012 [-0.004, +0.030] |"
    assert row in text
    assert json.loads((tmp_path / "rule_selection.json").read_text()) == result


def test_paired_scores_are_each_score_minus_the_best_trivial_and_area_minus_max(
        bench) -> None:  # noqa: ANN001
    # four cases of one calcification and one normal crop each; max_prob and the trivial mean
    # separate them perfectly, mc_area_mm2 is tied everywhere (AUC 0.5), n_mcs is inverted (0)
    rows = {f"c{i // 2}_{i % 2}": {"case": f"c{i // 2:03d}", "label": str(1 - i % 2),
                                   "max_prob": str(0.9 - 0.8 * (i % 2)), "n_mcs": str(i % 2),
                                   "mc_area_mm2": "0.01", "mean": str(100 - 50 * (i % 2))}
            for i in range(8)}
    d = bench.paired_scores(rows, "mean", n_boot=100, seed=0)
    assert set(d) == {"max_prob - mean", "n_mcs - mean", "mc_area_mm2 - mean",
                      "mc_area_mm2 - max_prob"}
    assert d["max_prob - mean"] == {"difference": 0.0, "ci": [0.0, 0.0]}
    assert d["n_mcs - mean"]["difference"] == -1.0
    assert d["mc_area_mm2 - max_prob"] == {"difference": -0.5, "ci": [-0.5, -0.5]}
