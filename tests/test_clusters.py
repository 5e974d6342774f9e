"""The cluster rule on hand-placed points: which MCs form a cluster, its score and centre; one
cluster per finding (merging seed groups) and the maximum extent."""

from __future__ import annotations

import numpy as np
import pytest

from mcgenref.errors import ConfigError
from mcgenref.clusters import (
    ClusterRule,
    group_clusters,
    merge_groups,
    points_px_to_mm,
    seed_groups,
)


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


def test_two_overlapping_groups_merge_into_one() -> None:
    # (y, x) mm. Group A around (0, 0); group B's members are 7 mm or more from A's, farther
    # than the 5 mm merge distance, but the two circles (radius 4 each) overlap.
    a = [[0, 0], [0, -4], [0, 4]]
    b = [[7.5, 0], [7, -4], [7, 4]]
    pts = np.array(a + b, dtype=float)
    scores = [1.0, 0.5, 0.5, 0.9, 0.4, 0.4]
    groups = seed_groups(pts, scores)
    assert [g.members for g in groups] == [(0, 1, 2), (3, 4, 5)]
    assert np.hypot(*np.subtract(groups[0].centre_mm, groups[1].centre_mm)) < (
        groups[0].radius_mm + groups[1].radius_mm)
    (merged,) = group_clusters(pts, scores)
    assert merged.members == (0, 1, 2, 3, 4, 5) and merged.n_groups == 2
    assert merged.centre_mm == pytest.approx((21.5 / 6, 0.0))
    assert merged.extent_mm == pytest.approx(np.hypot(7, 8))  # (0, -4) to (7, 4)
    assert merged.radius_mm == pytest.approx(max(np.hypot(*(p - pts.mean(axis=0))) for p in pts))
    assert merged.score == pytest.approx(0.5)  # the third strongest of all six
    # merging only overlapping groups (distance 0) still merges them
    assert len(group_clusters(pts, scores, rule=ClusterRule(merge_distance_mm=0.0))) == 1
    # and without merging they stay two
    assert group_clusters(pts, scores, rule=ClusterRule(merge=False)) == groups


def test_groups_within_the_merge_distance_merge_and_farther_ones_do_not() -> None:
    left = [[0, 0], [0, 1], [0, 2]]  # seed (0, 0) gathers these; x = 7 is beyond 5 mm
    for offset, expected in ((7.0, 1), (7.0 + 1e-6, 2), (8.0, 2)):
        right = [[0, offset], [0, offset + 1], [0, offset + 2]]
        pts = left + right
        scores = [1.0, 0.6, 0.6, 0.9, 0.5, 0.5]
        assert len(seed_groups(pts, scores)) == 2
        found = group_clusters(pts, scores)
        assert len(found) == expected, offset  # nearest members 5 mm apart: merged (inclusive)
    (one,) = group_clusters(left + [[0, 7], [0, 8], [0, 9]], scores)
    assert one.members == tuple(range(6)) and one.extent_mm == pytest.approx(9.0)
    assert one.centre_mm == pytest.approx((0.0, 27 / 6)) and one.radius_mm == pytest.approx(4.5)


def _chain(n_groups: int, strongest_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """Groups of 3 MCs along x: group k at x = 5k + (0, 1, 2) mm, its seed in the middle.

    With radius 1.5 mm each group is one seed group spanning 2 mm; neighbouring groups are
    3 mm apart (gap), all within a 3 mm merge distance.
    """
    pts, scores = [], []
    for k in range(n_groups):
        rank = k if strongest_first else n_groups - 1 - k
        pts += [[0.0, 5.0 * k], [0.0, 5.0 * k + 1], [0.0, 5.0 * k + 2]]
        scores += [0.4 - 0.01 * rank, 1.0 - 0.1 * rank, 0.4 - 0.01 * rank]
    return np.array(pts), np.array(scores)


CHAIN_RULE = ClusterRule(min_count=3, radius_mm=1.5, merge_distance_mm=3.0, max_extent_mm=20.0)


def test_a_chain_longer_than_the_maximum_extent_is_cut() -> None:
    pts, scores = _chain(6, strongest_first=True)  # spans 27 mm
    groups = seed_groups(pts, scores, rule=CHAIN_RULE)
    assert [g.members for g in groups] == [tuple(range(3 * k, 3 * k + 3)) for k in range(6)]
    found = group_clusters(pts, scores, rule=CHAIN_RULE)
    # equal gaps: links taken from the strongest groups' end; groups 0-3 span 17 mm, adding
    # group 4 would make 22 mm > 20, so that link is refused; groups 4 and 5 merge (7 mm)
    assert [c.members for c in found] == [tuple(range(12)), tuple(range(12, 18))]
    assert [c.extent_mm for c in found] == pytest.approx([17.0, 7.0])
    assert [c.n_groups for c in found] == [4, 2]
    assert all(c.extent_mm <= CHAIN_RULE.max_extent_mm for c in found)
    # the same chain with the strongest group at the other end is cut from that end
    pts, scores = _chain(6, strongest_first=False)
    found = group_clusters(pts, scores, rule=CHAIN_RULE)
    assert [c.members for c in found] == [tuple(range(6, 18)), tuple(range(6))]
    # a larger maximum extent lets the whole chain through
    whole = group_clusters(pts, scores, rule=ClusterRule(1 * 3, 1.5, True, 3.0, 27.0))
    assert len(whole) == 1 and whole[0].extent_mm == pytest.approx(27.0)


def test_the_shortest_links_merge_first() -> None:
    # three groups; the gap between the last two (1 mm) is shorter than the first one (3 mm);
    # the three together would span 14 mm > 12, so only the closest pair merges
    pts = np.array([[0, 0], [0, 1], [0, 2], [0, 5], [0, 6], [0, 7], [0, 8], [0, 9], [0, 10]],
                   dtype=float)
    scores = np.array([0.4, 1.0, 0.4, 0.3, 0.9, 0.3, 0.2, 0.8, 0.2])
    rule = ClusterRule(min_count=3, radius_mm=1.5, merge_distance_mm=3.0, max_extent_mm=8.0)
    assert len(seed_groups(pts, scores, rule=rule)) == 3
    found = group_clusters(pts, scores, rule=rule)
    assert [c.members for c in found] == [(0, 1, 2), (3, 4, 5, 6, 7, 8)]
    assert found[1].extent_mm == pytest.approx(5.0)
    # merge_groups on its own gives the same
    groups = seed_groups(pts, scores, rule=rule)
    assert merge_groups(pts, groups, scores, rule=rule) == found


def test_free_mcs_stay_free_and_order_is_strongest_seed_first() -> None:
    pts = [[0, 0], [0, 1], [1, 0], [30, 30], [30, 31], [31, 30], [0, 8]]
    scores = [0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 1.0]
    found = group_clusters(pts, scores)  # MC 6 is alone: in no cluster, even within 8 mm
    assert [c.members for c in found] == [(3, 4, 5), (0, 1, 2)]


def test_rule_validation_and_json_form() -> None:
    with pytest.raises(ConfigError):
        ClusterRule(merge_distance_mm=-1.0)
    with pytest.raises(ConfigError, match="max_extent_mm"):
        ClusterRule(radius_mm=12.0)  # one group may already span 24 mm > 20
    assert ClusterRule(radius_mm=12.0, max_extent_mm=24.0).max_extent_mm == 24.0
    rule = ClusterRule(min_count=4, radius_mm=3.0, merge=False, merge_distance_mm=2.0,
                       max_extent_mm=15.0)
    assert ClusterRule.from_dict(rule.to_dict()) == rule
    # a rule written before merging existed keeps the new fields' defaults
    old = ClusterRule.from_dict({"min_count": 3, "radius_mm": 5.0, "description": "..."})
    assert old == ClusterRule()
    assert ClusterRule.from_dict({"radius_mm": 12.0}).max_extent_mm == 24.0
    assert "max_extent_mm" in ClusterRule.DESCRIPTION
