"""Grouping detected microcalcifications (MCs) into clusters: one cluster per finding.

The rule (:class:`ClusterRule`) has two deterministic steps.

**1. Seed groups** (:func:`seed_groups`; ``min_count=3``, ``radius_mm=5.0``), greedy:

1. MCs are visited as *seeds* from the highest score to the lowest (ties: lower index first).
2. A seed that is not yet in a group gathers every MC not yet in a group whose distance
   to the seed is ``<= radius_mm`` (the seed included).
3. If that group has at least ``min_count`` MCs it becomes a group and its MCs are taken.
   Otherwise nothing is taken: the seed stays free and may still join a later seed's group.

So a group is "at least ``min_count`` MCs within a disc of radius ``radius_mm`` around its
strongest free MC" (3 MCs within 5 mm by default; METHOD.md's "≥3 within 1 cm²" corresponds to
a disc of radius ≈ 5.6 mm). One finding spread over more than one disc comes out of this step
as several groups, side by side or overlapping.

**2. Merging** (:func:`merge_groups`; ``merge_distance_mm=5.0``, ``max_extent_mm=20.0``), when
``merge`` is true: single linkage with a cap on the size.

1. Two groups are *linked* when their circles overlap (``|c_a - c_b| <= r_a + r_b``, centre
   and radius as in the cluster summary below) or their nearest members are at most
   ``merge_distance_mm`` apart (the *gap*: the smallest distance between a member of one and
   a member of the other; 0 mm would merge only overlapping groups).
2. Links are taken from the smallest gap to the largest (ties: the pair of lower group indices
   first, groups numbered in the order step 1 formed them, i.e. strongest seed first). A link
   merges the two clusters its groups are in, unless the merged cluster would span more than
   ``max_extent_mm`` (the largest distance between two of its members). A refused link is
   never retried: clusters only grow, so its merge would only be larger later.

So a chain of groups through dense tissue is cut: the shortest links merge first, and a
cluster stops growing where the next merge would make it span more than the maximum extent
(BI-RADS: "grouped" MCs span at most about 2 cm). Free MCs (in no group) stay free.
``max_extent_mm`` must be at least ``2 * radius_mm``, the span one group may already have.

Positions are in millimetres as ``(y_mm, x_mm)`` = ``(row * row_spacing, col * col_spacing)``
(see :func:`points_px_to_mm`), distances Euclidean in mm.

Cluster summary (:class:`Cluster`), of the merged cluster:

* ``centre_mm`` = mean of the member positions; ``radius_mm`` = largest member distance to it;
  ``extent_mm`` = largest distance between two members; ``n_groups`` = seed groups merged.
* ``score`` = the ``min_count``-th largest member score (with ``min_count = 3``: the third
  strongest MC). A cluster needs ``min_count`` MCs, so it is only as sure as the weakest of its
  best ``min_count`` members; with scores = MC peak probabilities this is (for the seed's
  group) the highest MC threshold at which the group still holds ``min_count`` MCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist, pdist

from mcgenref.errors import ConfigError, InputError

#: relative slack so that a distance exactly equal to a rule's distance is within it
_SLACK = 1e-12


@dataclass(frozen=True)
class ClusterRule:
    """How MCs are grouped (module docstring): seed groups of at least ``min_count`` MCs within
    ``radius_mm`` of the seed MC, then (``merge``) groups that overlap or lie within
    ``merge_distance_mm`` of each other merged, up to a span of ``max_extent_mm``."""

    #: What ``<stem>_clusters.json`` says of the rule beside its fields.
    DESCRIPTION: ClassVar[str] = (
        "seed groups: at least min_count MCs within radius_mm of the group's strongest free MC "
        "(greedy, strongest first); merge (when true): groups whose circles overlap or whose "
        "nearest members are within merge_distance_mm merge (single linkage, smallest gap "
        "first) unless the merged cluster would span more than max_extent_mm; score = the "
        "min_count-th strongest member's peak probability"
    )

    min_count: int = 3
    radius_mm: float = 5.0
    merge: bool = True
    merge_distance_mm: float = 5.0
    max_extent_mm: float = 20.0

    def __post_init__(self) -> None:
        if int(self.min_count) != self.min_count or self.min_count < 1:
            raise ConfigError(f"cluster min_count must be an integer >= 1, got {self.min_count}")
        if not np.isfinite(self.radius_mm) or self.radius_mm <= 0:
            raise ConfigError(f"cluster radius_mm must be > 0, got {self.radius_mm}")
        if not np.isfinite(self.merge_distance_mm) or self.merge_distance_mm < 0:
            raise ConfigError(f"cluster merge_distance_mm must be >= 0, got "
                              f"{self.merge_distance_mm}")
        if not np.isfinite(self.max_extent_mm) or self.max_extent_mm < 2 * self.radius_mm:
            raise ConfigError(f"cluster max_extent_mm must be at least 2 x radius_mm "
                              f"({2 * self.radius_mm:g}, the span of one group), got "
                              f"{self.max_extent_mm}")

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"min_count": int(self.min_count), "radius_mm": float(self.radius_mm),
                "merge": bool(self.merge), "merge_distance_mm": float(self.merge_distance_mm),
                "max_extent_mm": float(self.max_extent_mm)}

    @classmethod
    def from_dict(cls, d: dict) -> ClusterRule:
        """Build from a dict such as ``clusters.json``'s ``"rule"`` (unknown keys ignored;
        missing ones keep their defaults, so a file written before merging existed is
        re-grouped with merging; a missing ``max_extent_mm`` is at least ``2 * radius_mm``)."""
        base = cls()
        radius = float(d.get("radius_mm", base.radius_mm))
        return cls(min_count=int(d.get("min_count", base.min_count)), radius_mm=radius,
                   merge=bool(d.get("merge", base.merge)),
                   merge_distance_mm=float(d.get("merge_distance_mm", base.merge_distance_mm)),
                   max_extent_mm=float(d.get("max_extent_mm",
                                             max(base.max_extent_mm, 2 * radius))))


@dataclass(frozen=True)
class Cluster:
    """One cluster: ``members`` index the input points; positions in mm ``(y_mm, x_mm)``.

    ``extent_mm``: largest distance between two members; ``n_groups``: seed groups merged
    into it (1 when unmerged).
    """

    members: tuple[int, ...]
    centre_mm: tuple[float, float]
    radius_mm: float
    score: float
    extent_mm: float = 0.0
    n_groups: int = 1

    @property
    def count(self) -> int:
        return len(self.members)


def points_px_to_mm(points_px: ArrayLike, spacing: tuple[float, float]) -> np.ndarray:
    """``(N, 2)`` ``(row, col)`` pixels -> ``(N, 2)`` ``(y_mm, x_mm)`` with spacing (row, col)."""
    p = np.asarray(points_px, dtype=float).reshape(-1, 2)
    return p * np.asarray(spacing, dtype=float)[None, :]


def _inputs(points_mm: ArrayLike, scores: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    n = len(pts)
    sc = np.ones(n) if scores is None else np.asarray(scores, dtype=float).reshape(-1)
    if len(sc) != n:
        raise InputError(f"group_clusters: {n} points but {len(sc)} scores")
    return pts, sc


def _summary(pts: np.ndarray, sc: np.ndarray, members: np.ndarray, min_count: int,
             n_groups: int) -> Cluster:
    members = np.sort(members)
    centre = pts[members].mean(axis=0)
    radius = float(np.max(np.hypot(*(pts[members] - centre).T)))
    extent = float(pdist(pts[members]).max()) if len(members) > 1 else 0.0
    member_scores = np.sort(sc[members])[::-1]
    return Cluster(members=tuple(int(m) for m in members),
                   centre_mm=(float(centre[0]), float(centre[1])), radius_mm=radius,
                   score=float(member_scores[min_count - 1]), extent_mm=extent,
                   n_groups=n_groups)


def seed_groups(points_mm: ArrayLike, scores: ArrayLike | None = None, *,
                rule: ClusterRule = ClusterRule()) -> list[Cluster]:
    """Step 1 only: the greedy seed groups (module docstring), strongest seed first."""
    pts, sc = _inputs(points_mm, scores)
    n = len(pts)
    if n < rule.min_count:
        return []
    tree = cKDTree(pts)
    # a tiny slack so that a distance of exactly radius_mm is inside despite rounding
    reach = rule.radius_mm * (1 + _SLACK)
    order = np.lexsort((np.arange(n), -sc))  # score descending, then index ascending
    taken = np.zeros(n, dtype=bool)
    groups: list[Cluster] = []
    for seed in order:
        if taken[seed]:
            continue
        group = [j for j in tree.query_ball_point(pts[seed], r=reach) if not taken[j]]
        if len(group) < rule.min_count:
            continue
        members = np.array(group, dtype=int)
        taken[members] = True
        groups.append(_summary(pts, sc, members, rule.min_count, 1))
    return groups


def merge_groups(points_mm: ArrayLike, groups: Sequence[Cluster],
                 scores: ArrayLike | None = None, *,
                 rule: ClusterRule = ClusterRule()) -> list[Cluster]:
    """Step 2: merge linked ``groups`` (of :func:`seed_groups`) up to ``rule.max_extent_mm``.

    Returns the merged clusters ordered by their first group (so strongest seed first);
    members are sorted. ``rule.merge`` is not consulted here: this is the merge itself.
    """
    pts, sc = _inputs(points_mm, scores)
    k = len(groups)
    if k < 2:
        return list(groups)
    members = [np.asarray(g.members, dtype=int) for g in groups]
    centres = np.array([g.centre_mm for g in groups], dtype=float)
    radii = np.array([g.radius_mm for g in groups], dtype=float)
    links: list[tuple[float, int, int]] = []
    # members lie within r of their centre, so the gap is at least |c_a - c_b| - r_a - r_b:
    # only pairs of centres within 2 max(r) + merge_distance_mm can be linked
    near = cKDTree(centres).query_pairs(2 * radii.max() + rule.merge_distance_mm + 1e-9)
    for a, b in sorted(near):
        centre_gap = float(np.hypot(*(centres[a] - centres[b])))
        overlap = centre_gap <= (radii[a] + radii[b]) * (1 + _SLACK)
        if not overlap and centre_gap - radii[a] - radii[b] > rule.merge_distance_mm:
            continue
        gap = float(cdist(pts[members[a]], pts[members[b]]).min())
        if overlap or gap <= rule.merge_distance_mm * (1 + _SLACK):
            links.append((gap, a, b))
    links.sort()
    # each cluster is known by its lowest group index: its root
    root = list(range(k))
    extent = [g.extent_mm for g in groups]
    pool = {a: members[a] for a in range(k)}

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    limit = rule.max_extent_mm * (1 + _SLACK)
    for _, a, b in links:
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        across = float(cdist(pts[pool[ra]], pts[pool[rb]]).max())
        span = max(extent[ra], extent[rb], across)
        if span > limit:
            continue
        keep, gone = min(ra, rb), max(ra, rb)
        root[gone] = keep
        pool[keep] = np.concatenate([pool[keep], pool.pop(gone)])
        extent[keep] = span
    n_groups = np.bincount([find(a) for a in range(k)], minlength=k)
    return [_summary(pts, sc, pool[r], rule.min_count, int(n_groups[r])) for r in sorted(pool)]


def group_clusters(points_mm: ArrayLike, scores: ArrayLike | None = None, min_count: int = 3,
                   radius_mm: float = 5.0, *, rule: ClusterRule | None = None) -> list[Cluster]:
    """Group MCs into clusters with the rule of the module docstring (seed groups, then
    merging when ``rule.merge``).

    ``points_mm``: ``(N, 2)`` positions ``(y_mm, x_mm)``; ``scores``: ``(N,)`` (e.g. MC peak
    probabilities; all 1 when ``None``). ``rule``, when given, overrides ``min_count`` and
    ``radius_mm`` (without it, the other fields keep their defaults). Returns the clusters
    strongest seed first; an MC belongs to at most one cluster.
    """
    if rule is None:
        rule = ClusterRule(min_count, radius_mm, max_extent_mm=max(20.0, 2 * radius_mm))
    groups = seed_groups(points_mm, scores, rule=rule)
    if not rule.merge:
        return groups
    return merge_groups(points_mm, groups, scores, rule=rule)
