"""The cluster rule (which MCs form a cluster, its score and centre) on hand-placed points."""

from __future__ import annotations

import numpy as np
import pytest

from mcgenref.errors import ConfigError
from mcgenref.clusters import ClusterRule, group_clusters, points_px_to_mm


def test_group_clusters_hand_placed():
    three = [[0, 0], [0, 4], [3, 0]]  # all within 5 mm of the first
    cl = group_clusters(three, [0.9, 0.5, 0.7])
    assert len(cl) == 1
    assert cl[0].members == (0, 1, 2)
    assert cl[0].score == pytest.approx(0.5)  # the 3rd strongest member
    assert cl[0].centre_mm == pytest.approx((1.0, 4 / 3))
    assert group_clusters(three[:2], [1, 1]) == []
    two_groups = three + [[50, 50], [52, 50], [50, 53], [51, 51]]
    cl = group_clusters(two_groups, np.ones(7))
    assert sorted(c.count for c in cl) == [3, 4]
    # a point 6 mm away from the seed is not a member
    cl = group_clusters([[0, 0], [0, 4], [0, 6], [0, 3]], [4, 3, 2, 1])
    assert [c.members for c in cl] == [(0, 1, 3)]


def test_group_clusters_rule_and_failed_seed_stays_free():
    # the strongest MC (index 0) has only one neighbour within 5 mm; MC 1 then seeds a
    # cluster that includes MC 0
    pts = [[0, 0], [0, 4], [0, 8], [0, 8.5]]
    cl = group_clusters(pts, [1.0, 0.9, 0.5, 0.4])
    assert [c.members for c in cl] == [(0, 1, 2, 3)]
    assert cl[0].score == pytest.approx(0.5)
    cl = group_clusters(pts, [1.0, 0.9, 0.5, 0.4], rule=ClusterRule(min_count=2, radius_mm=1.0))
    assert [c.members for c in cl] == [(2, 3)]
    with pytest.raises(ConfigError):
        ClusterRule(min_count=0)
    with pytest.raises(ConfigError):
        ClusterRule(radius_mm=-1)
    assert points_px_to_mm([[10, 10]], (0.1, 0.2)).tolist() == [[1.0, 2.0]]
