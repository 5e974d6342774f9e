from __future__ import annotations

import numpy as np
import pytest

from mcgenref.clusters import ClusterRule
from mcgenref.inference.postprocess import find_calcifications


def test_components_measured_in_mm() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[10:12, 20:23] = 0.9  # 2 rows x 3 cols
    prob[50, 50] = 0.6
    prob[80, 80] = 0.3  # below threshold
    region = np.ones_like(prob, bool)
    det = find_calcifications(prob, region, (0.1, 0.2), 0.5, ClusterRule())
    assert len(det.mcs) == 2
    a, b = det.mcs
    assert (a["x"], a["y"]) == (21.0, 10.5)
    assert a["x_mm"] == pytest.approx(4.2) and a["y_mm"] == pytest.approx(1.05)
    assert a["area_mm2"] == pytest.approx(6 * 0.02)
    # centres 2 columns apart (0.4 mm) + one pixel (mean spacing 0.15) ...
    assert a["max_diameter_mm"] == pytest.approx(np.hypot(0.1, 0.4) + 0.15, rel=1e-3)
    assert a["peak_prob"] == pytest.approx(0.9) and b["peak_prob"] == pytest.approx(0.6)
    assert det.clusters == [] and all(m["cluster_id"] == -1 for m in det.mcs)


def test_region_and_clusters() -> None:
    prob = np.zeros((200, 200), np.float32)
    for r, c in [(50, 50), (55, 52), (60, 48), (150, 150)]:
        prob[r, c] = 0.8
    region = np.ones_like(prob, bool)
    region[140:, 140:] = False
    det = find_calcifications(prob, region, (0.1, 0.1), 0.5, ClusterRule(3, 5.0))
    assert len(det.mcs) == 3  # the one outside the region is ignored
    assert len(det.clusters) == 1 and det.clusters[0]["count"] == 3
    assert {m["cluster_id"] for m in det.mcs} == {1}
    det2 = find_calcifications(prob, region, (0.1, 0.1), 0.5, ClusterRule(4, 5.0))
    assert det2.clusters == []
