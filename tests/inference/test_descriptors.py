"""Cluster descriptors on hand-made geometry whose answers are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcgenref.clusters import ClusterRule
from mcgenref.inference.descriptors import (
    DISTRIBUTIONS,
    centroid_shape,
    describe_clusters,
    distribution_class,
    mc_elongation,
    pixel_hull_area_mm2,
)
from mcgenref.inference.postprocess import find_calcifications


def _detect(blocks: list[tuple[int, int, int, int]], shape: tuple[int, int], spacing: float,
            radius_mm: float) -> tuple[list, list, np.ndarray]:
    """MCs = the given (row0, col0, height, width) pixel blocks, grouped with ``radius_mm``."""
    mask = np.zeros(shape, bool)
    for r, c, h, w in blocks:
        mask[r:r + h, c:c + w] = True
    rule = ClusterRule(min_count=3, radius_mm=radius_mm, max_extent_mm=max(20.0, 2 * radius_mm))
    det = find_calcifications(mask * 0.9, np.ones(shape, bool), (spacing, spacing), 0.5, rule)
    return det.mcs, det.clusters, det.labels


def test_five_mcs_on_a_line_are_linear_with_known_extent_area_and_sizes() -> None:
    # 3x3-pixel MCs at 0.1 mm, centres 2 mm apart along a row: centroid cols 21, 41, ..., 101
    blocks = [(50, 20 + 20 * k, 3, 3) for k in range(5)]
    mcs, clusters, mask = _detect(blocks, (120, 140), 0.1, radius_mm=10.0)
    assert len(clusters) == 1 and clusters[0]["count"] == 5
    (d,) = describe_clusters(mcs, clusters, mask, (0.1, 0.1))
    assert d["extent_mm"] == pytest.approx(8.0)
    assert d["major_axis_mm"] == pytest.approx(8.0) and d["minor_axis_mm"] == pytest.approx(0.0)
    # sd along the line = 2 mm * sqrt(2); across = 0, floored at 0.5 mm
    assert d["elongation"] == pytest.approx(2 * math.sqrt(2) / 0.5, abs=1e-3)
    assert d["distribution"] == "linear"
    # hull of the pixel squares: rows 50-52 (0.3 mm) x cols 20-102 (8.3 mm)
    assert d["area_mm2"] == pytest.approx(0.3 * 8.3, abs=1e-6)
    assert d["density_per_cm2"] == pytest.approx(5 / (0.3 * 8.3 / 100), abs=0.01)
    # every MC is a 3x3 block: max diameter = diagonal between pixel centres + one pixel
    assert d["size_mean_mm"] == pytest.approx(0.2 * math.sqrt(2) + 0.1, abs=1e-3)
    assert d["size_sd_mm"] == 0.0 and d["size_cv"] == 0.0
    assert d["mc_elongation_mean"] == pytest.approx(1.0) and d["mc_elongation_sd"] == 0.0


def test_a_tight_blob_is_grouped() -> None:
    # six single-pixel MCs on a 2 x 3 grid, 1 mm apart (spacing 0.1 mm)
    blocks = [(40 + 10 * i, 30 + 10 * j, 1, 1) for i in range(2) for j in range(3)]
    mcs, clusters, mask = _detect(blocks, (100, 100), 0.1, radius_mm=5.0)
    (d,) = describe_clusters(mcs, clusters, mask, (0.1, 0.1))
    assert d["extent_mm"] == pytest.approx(math.hypot(2.0, 1.0), abs=1e-3)
    assert d["major_axis_mm"] == pytest.approx(2.0) and d["minor_axis_mm"] == pytest.approx(1.0)
    assert d["elongation"] == pytest.approx(math.sqrt(2 / 3) / 0.5, abs=1e-3)  # sd 0.816 / 0.5
    assert d["distribution"] == "grouped"
    # hull of the pixel squares: 1.1 mm x 2.1 mm
    assert d["area_mm2"] == pytest.approx(1.1 * 2.1, abs=1e-6)
    assert d["size_mean_mm"] == pytest.approx(0.1) and d["size_sd_mm"] == 0.0


def test_large_clusters_are_segmental_when_elongated_else_regional() -> None:
    # spacing 0.5 mm; a 24 mm row of 7 MCs vs a 24 mm square ring of 8 MCs
    row = [(20, 10 + 8 * k, 2, 2) for k in range(7)]
    mcs, clusters, mask = _detect(row, (100, 100), 0.5, radius_mm=30.0)
    (d,) = describe_clusters(mcs, clusters, mask, (0.5, 0.5))
    assert d["extent_mm"] == pytest.approx(24.0) and d["distribution"] == "segmental"
    ring = [(10 + 24 * i, 10 + 24 * j, 2, 2) for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    mcs, clusters, mask = _detect(ring, (100, 100), 0.5, radius_mm=40.0)
    assert clusters[0]["count"] == 8
    (d,) = describe_clusters(mcs, clusters, mask, (0.5, 0.5))
    assert d["extent_mm"] == pytest.approx(24 * math.sqrt(2), abs=1e-3)
    assert d["elongation"] == pytest.approx(1.0, abs=1e-3) and d["distribution"] == "regional"


@pytest.mark.parametrize(("extent", "elongation", "expected"), [
    (5.0, 1.0, "grouped"), (5.0, 2.99, "grouped"), (5.0, 3.0, "linear"), (20.0, 10.0, "linear"),
    (20.1, 2.0, "segmental"), (20.1, 1.99, "regional"), (40.0, 1.0, "regional"),
])
def test_distribution_rule_table(extent: float, elongation: float, expected: str) -> None:
    assert distribution_class(extent, elongation) == expected
    assert expected in DISTRIBUTIONS


def test_mc_elongation_of_pixel_bars() -> None:
    assert mc_elongation(np.array([[3, 4]]), (0.1, 0.1)) == pytest.approx(1.0)
    bar = np.array([[0, c] for c in range(5)])  # 1 x 5 pixels
    assert mc_elongation(bar, (0.1, 0.1)) == pytest.approx(5.0)
    block = np.array([[r, c] for r in range(2) for c in range(6)])  # 2 x 6 pixels
    assert mc_elongation(block, (0.07, 0.07)) == pytest.approx(3.0)
    # anisotropic spacing: 1 x 2 pixels of 0.2 x 0.1 mm make a 0.2 mm square
    assert mc_elongation(np.array([[0, 0], [0, 1]]), (0.2, 0.1)) == pytest.approx(1.0)


def test_pixel_hull_area() -> None:
    assert pixel_hull_area_mm2(np.array([[5, 5]]), (0.1, 0.2)) == pytest.approx(0.02)
    block = np.array([[r, c] for r in range(3) for c in range(3)])
    assert pixel_hull_area_mm2(block, (0.1, 0.1)) == pytest.approx(0.09)
    ell = np.array([[0, 0], [1, 0], [1, 1]])  # an L of three unit squares: hull = 4 - 1/2
    assert pixel_hull_area_mm2(ell, (1.0, 1.0)) == pytest.approx(3.5)
    assert pixel_hull_area_mm2(np.zeros((0, 2)), (1.0, 1.0)) == 0.0


def test_centroid_shape_degenerate_cases() -> None:
    one = centroid_shape(np.array([[1.0, 2.0]]))
    assert one == {"extent_mm": 0.0, "major_axis_mm": 0.0, "minor_axis_mm": 0.0, "elongation": 1.0}
    two = centroid_shape(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert two["extent_mm"] == pytest.approx(5.0) and two["elongation"] == 1.0
    assert describe_clusters([], [], np.zeros((4, 4), bool), (0.1, 0.1)) == []
