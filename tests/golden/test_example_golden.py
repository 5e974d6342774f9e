"""Golden end-to-end test (in the manner of nnU-Net's integration test): ``mcgenref example``
segmented by the shipped model on the CPU, its mask, MC table and clusters held against the
stored reference in tests/golden/example/ (tolerances and the regenerating command:
tests/golden/reference.py, ``PYTHONPATH=src python -m tests.golden.reference``). One
segmentation (~5 s on one CPU thread) serves every test here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mcgenref.synthesis.example import example_mammogram

from .reference import REGENERATE, compare, reference_outputs, run_example, segment_outputs


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    # one thread, as the reference was made (module scope runs before the autouse
    # one_torch_thread fixture of tests/conftest.py)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_example(tmp_path_factory.mktemp("golden"))
    finally:
        torch.set_num_threads(previous)


def test_example_matches_the_golden_reference(segmented: Path) -> None:
    got, ref = segment_outputs(segmented), reference_outputs()
    problems = compare(got, ref)
    hint = ""
    if got.model_sha256 != ref.model_sha256:
        hint = (f" (the shipped model changed: {got.model_sha256} vs the reference's "
                f"{ref.model_sha256}; if intended, regenerate: {REGENERATE})")
    assert not problems, "\n".join(problems) + hint


def test_the_comparison_fails_on_changes_beyond_the_tolerances() -> None:
    ref = reference_outputs()
    assert len(ref.mcs) == 18 and len(ref.clusters) == 2 and int(ref.mask.sum()) == 45
    assert compare(ref, ref) == []

    def with_mc(i: int, **change: float) -> list[dict[str, float]]:
        return [({**mc, **change} if k == i else mc) for k, mc in enumerate(ref.mcs)]

    x0 = ref.mcs[0]["x"]
    assert compare(dataclasses.replace(ref, mcs=with_mc(0, x=x0 + 0.4)), ref) == []
    moved = compare(dataclasses.replace(ref, mcs=with_mc(0, x=x0 + 0.6)), ref)
    assert len(moved) == 1 and "centroid 0.60 px away" in moved[0]
    # areas: 10 % or one pixel (0.04 mm2 at 0.2 mm), whichever is larger
    a0 = ref.mcs[0]["area_mm2"]
    assert compare(dataclasses.replace(ref, mcs=with_mc(0, area_mm2=a0 + 0.04)), ref) == []
    assert "area" in compare(dataclasses.replace(ref, mcs=with_mc(0, area_mm2=a0 + 0.08)), ref)[0]
    assert "peak_prob" in compare(dataclasses.replace(ref, mcs=with_mc(1, peak_prob=0.98)), ref)[0]
    assert "in a cluster" in compare(dataclasses.replace(ref, mcs=with_mc(0, cluster_id=-1.0)), ref)[0]
    assert "17 MCs, reference 18" in compare(dataclasses.replace(ref, mcs=ref.mcs[1:]), ref)
    # the mask has 45 pixels: one pixel more is already Dice 90/91 < 0.99
    one = ref.mask.copy()
    one[0, 0] = True
    assert compare(dataclasses.replace(ref, mask=one), ref) == ["mask Dice 0.9890 < 0.99"]
    cl = [{**ref.clusters[0], "count": ref.clusters[0]["count"] + 1}, ref.clusters[1]]
    assert "members" in compare(dataclasses.replace(ref, clusters=cl), ref)[0]
    assert "1 clusters, reference 2" in compare(dataclasses.replace(ref, clusters=ref.clusters[:1]), ref)


def test_example_clusters_are_the_true_ones(segmented: Path) -> None:
    """Against the example's own truth, not the reference: each true cluster has a found one
    within 1 cm of its members' centre, and at most two found clusters are extra."""
    got = segment_outputs(segmented)
    truth = example_mammogram(0)
    visible = [m for m in truth.mcs if m["visible"] and m["cluster_id"] >= 0]
    true_ids = {m["cluster_id"] for m in visible}
    found = set()
    for cid in true_ids:
        centre = np.mean([(m["y_px"], m["x_px"]) for m in visible if m["cluster_id"] == cid], axis=0)
        for c in got.clusters:
            if abs(c["y"] - centre[0]) * 0.2 < 10 and abs(c["x"] - centre[1]) * 0.2 < 10:
                found.add(cid)
    assert found == true_ids, (found, true_ids, got.clusters)
    assert len(got.clusters) <= len(true_ids) + 2
