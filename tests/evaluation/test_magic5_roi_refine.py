"""``benchmarks/magic5_roi.py --refine``: the paired refine - plain AUC difference of the crop
scores read back from ``evaluate``'s ``per_image.csv``, and the record of what TT-GPR did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcgenref.io.predictions import csv_bytes
from tests.conftest import load_benchmark

COLUMNS = ("stem", "case", "label", "n_mcs", "max_prob", "mc_area_mm2")


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_benchmark("magic5_roi")


def _rows(bench, tmp_path: Path, name: str, max_prob: list[float],  # noqa: ANN001
          n_mcs: list[int]) -> dict:
    """Four cases of one calcification and one normal crop each, through a per_image.csv."""
    rows = [{"stem": f"c{i // 2}_{i % 2}", "case": f"c{i // 2:03d}", "label": 1 - i % 2,
             "n_mcs": n, "max_prob": p, "mc_area_mm2": 0.01}
            for i, (p, n) in enumerate(zip(max_prob, n_mcs))]
    path = tmp_path / f"{name}.csv"
    path.write_bytes(csv_bytes(rows, COLUMNS, float_digits=6))
    return bench.read_crop_rows(path)


def test_the_difference_is_refine_minus_plain_with_a_paired_ci(
        bench, tmp_path: Path) -> None:  # noqa: ANN001
    # every case holds both classes, so every resample of cases has an AUC
    # plain max_prob: all tied (AUC 0.5 in every resample); refined: perfect (AUC 1)
    # plain n_mcs: perfect; refined n_mcs: all tied -> the difference is negative
    plain = _rows(bench, tmp_path, "plain", [0.3] * 8, [2, 0] * 4)
    refined = _rows(bench, tmp_path, "refined", [0.9, 0.1, 0.8, 0.2, 0.95, 0.05, 0.7, 0.3],
                    [1] * 8)
    d = bench.paired_refine_difference(plain, refined, n_boot=200, seed=0)
    assert d["max_prob"]["plain_auc"] == 0.5 and d["max_prob"]["refine_auc"] == 1.0
    assert d["max_prob"]["difference"] == 0.5 and d["max_prob"]["ci"] == [0.5, 0.5]
    assert d["n_mcs"]["difference"] == -0.5 and d["n_mcs"]["ci"] == [-0.5, -0.5]
    assert d["max_prob"]["n_crops"] == 8 and d["max_prob"]["n_cases"] == 4
    # from 0.3 every calcification crop rose, and the normal ones fell but the last (0.3)
    assert d["max_prob"]["raised"] == {"calcification": 4, "normal": 0}
    assert d["max_prob"]["lowered"] == {"calcification": 0, "normal": 3}
    # n_mcs 2 -> 1 on the calcification crops, 0 -> 1 on the normal ones
    assert d["n_mcs"]["raised"] == {"calcification": 0, "normal": 4}
    assert d["n_mcs"]["lowered"] == {"calcification": 4, "normal": 0}
    # the same scores: no difference in any resample
    same = bench.paired_refine_difference(plain, plain, n_boot=50, seed=0)
    assert all(v["difference"] == 0.0 and v["ci"] == [0.0, 0.0] for v in same.values())
    assert same["max_prob"]["raised"] == same["max_prob"]["lowered"] == {
        "calcification": 0, "normal": 0}


def test_a_partial_difference_has_a_ci_around_it(bench, tmp_path: Path) -> None:  # noqa: ANN001
    # refined: positives 0.9, 0.8, 0.95, 0.15 over negatives 0.1, 0.2, 0.05, 0.85 win
    # 4 + 3 + 4 + 2 of the 16 pairs, no tie: AUC 13/16; plain all tied (0.5)
    plain = _rows(bench, tmp_path, "plain", [0.3] * 8, [0] * 8)
    refined = _rows(bench, tmp_path, "refined", [0.9, 0.1, 0.8, 0.2, 0.95, 0.05, 0.15, 0.85],
                    [0] * 8)
    d = bench.paired_refine_difference(plain, refined, n_boot=400, seed=0)["max_prob"]
    assert d["difference"] == pytest.approx(13 / 16 - 0.5)
    low, high = d["ci"]
    assert low < d["difference"] < high and low >= -0.5 and high <= 0.5


def test_runs_of_other_crops_or_truth_are_refused(bench, tmp_path: Path) -> None:  # noqa: ANN001
    plain = _rows(bench, tmp_path, "plain", [0.3] * 8, [0] * 8)
    fewer = dict(list(plain.items())[:-1])
    with pytest.raises(SystemExit, match="different crops"):
        bench.paired_refine_difference(plain, fewer, n_boot=10, seed=0)
    relabelled = {s: dict(r, label=str(1 - int(r["label"]))) for s, r in plain.items()}
    with pytest.raises(SystemExit, match="label or case"):
        bench.paired_refine_difference(plain, relabelled, n_boot=10, seed=0)


def test_refine_record_sums_the_crops_tt_gpr_blocks(bench, tmp_path: Path) -> None:  # noqa: ANN001
    gen = {"name": "g", "path": "/g", "sha256": "ab"}
    for stem, windows, solves, seconds in (("a", 0, 0, 0.01), ("b", 1, 3, 0.2), ("c", 2, 5, 0.4)):
        tt = {"generator": gen, "windows": windows, "windows_dropped": 0, "solves": solves,
              "unsettled": 0, "window_px": 64, "refine_s": seconds}
        (tmp_path / f"{stem}_meta.json").write_text(json.dumps({"detector": {"tt_gpr": tt}}))
    r = bench.refine_record(tmp_path)
    assert (r["n_crops"], r["crops_with_windows"], r["windows"], r["solves"]) == (3, 2, 3, 8)
    assert r["window_px"] == [64] and r["refine_s"] == pytest.approx(0.6) and r["generator"] == gen
