"""Grouping detected microcalcifications (MCs) into clusters.

The rule (:class:`ClusterRule`, default ``min_count=3``, ``radius_mm=5.0``) is greedy and
deterministic:

1. MCs are visited as *seeds* from the highest score to the lowest (ties: lower index first).
2. A seed that is not yet in a cluster gathers every MC not yet in a cluster whose distance
   to the seed is ``<= radius_mm`` (the seed included).
3. If that group has at least ``min_count`` MCs it becomes a cluster and its MCs are taken.
   Otherwise nothing is taken: the seed stays free and may still join a later seed's group.

So a cluster is "at least ``min_count`` MCs within a disc of radius ``radius_mm`` around its
strongest free MC" (3 MCs within 5 mm by default; METHOD.md's "≥3 within 1 cm²" corresponds to
a disc of radius ≈ 5.6 mm).

Positions are in millimetres as ``(y_mm, x_mm)`` = ``(row * row_spacing, col * col_spacing)``
(see :func:`points_px_to_mm`), distances Euclidean in mm.

Cluster summary (:class:`Cluster`):

* ``centre_mm`` = mean of the member positions; ``radius_mm`` = largest member distance to it.
* ``score`` = the ``min_count``-th largest member score (with ``min_count = 3``: the third
  strongest MC). A cluster needs ``min_count`` MCs, so it is only as sure as the weakest of its
  best ``min_count`` members; with scores = MC peak probabilities this is (for the seed's
  group) the highest MC threshold at which the group still holds ``min_count`` MCs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from mcgenref.errors import ConfigError, InputError


@dataclass(frozen=True)
class ClusterRule:
    """How MCs are grouped: at least ``min_count`` MCs within ``radius_mm`` of the seed MC."""

    min_count: int = 3
    radius_mm: float = 5.0

    def __post_init__(self) -> None:
        if int(self.min_count) != self.min_count or self.min_count < 1:
            raise ConfigError(f"cluster min_count must be an integer >= 1, got {self.min_count}")
        if not np.isfinite(self.radius_mm) or self.radius_mm <= 0:
            raise ConfigError(f"cluster radius_mm must be > 0, got {self.radius_mm}")

    def to_dict(self) -> dict[str, float | int]:
        return {"min_count": int(self.min_count), "radius_mm": float(self.radius_mm)}

    @classmethod
    def from_dict(cls, d: dict) -> ClusterRule:
        """Build from a dict such as ``clusters.json``'s ``"rule"`` (unknown keys ignored)."""
        return cls(min_count=int(d.get("min_count", 3)), radius_mm=float(d.get("radius_mm", 5.0)))


@dataclass(frozen=True)
class Cluster:
    """One cluster: ``members`` index the input points; positions in mm ``(y_mm, x_mm)``."""

    members: tuple[int, ...]
    centre_mm: tuple[float, float]
    radius_mm: float
    score: float

    @property
    def count(self) -> int:
        return len(self.members)


def points_px_to_mm(points_px: ArrayLike, spacing: tuple[float, float]) -> np.ndarray:
    """``(N, 2)`` ``(row, col)`` pixels -> ``(N, 2)`` ``(y_mm, x_mm)`` with spacing (row, col)."""
    p = np.asarray(points_px, dtype=float).reshape(-1, 2)
    return p * np.asarray(spacing, dtype=float)[None, :]


def group_clusters(points_mm: ArrayLike, scores: ArrayLike | None = None, min_count: int = 3,
                   radius_mm: float = 5.0, *, rule: ClusterRule | None = None) -> list[Cluster]:
    """Group MCs into clusters with the greedy rule of the module docstring.

    ``points_mm``: ``(N, 2)`` positions ``(y_mm, x_mm)``; ``scores``: ``(N,)`` (e.g. MC peak
    probabilities; all 1 when ``None``). ``rule``, when given, overrides ``min_count`` and
    ``radius_mm``. Returns the clusters in the order they were formed (strongest seed first);
    an MC belongs to at most one cluster.
    """
    rule = rule if rule is not None else ClusterRule(min_count, radius_mm)
    pts = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    n = len(pts)
    sc = np.ones(n) if scores is None else np.asarray(scores, dtype=float).reshape(-1)
    if len(sc) != n:
        raise InputError(f"group_clusters: {n} points but {len(sc)} scores")
    if n < rule.min_count:
        return []
    tree = cKDTree(pts)
    # a tiny slack so that a distance of exactly radius_mm is inside despite rounding
    reach = rule.radius_mm * (1 + 1e-12)
    order = np.lexsort((np.arange(n), -sc))  # score descending, then index ascending
    taken = np.zeros(n, dtype=bool)
    clusters: list[Cluster] = []
    for seed in order:
        if taken[seed]:
            continue
        group = [j for j in tree.query_ball_point(pts[seed], r=reach) if not taken[j]]
        if len(group) < rule.min_count:
            continue
        members = np.array(sorted(group), dtype=int)
        taken[members] = True
        centre = pts[members].mean(axis=0)
        radius = float(np.max(np.hypot(*(pts[members] - centre).T)))
        member_scores = np.sort(sc[members])[::-1]
        clusters.append(Cluster(members=tuple(int(m) for m in members),
                                centre_mm=(float(centre[0]), float(centre[1])),
                                radius_mm=radius,
                                score=float(member_scores[rule.min_count - 1])))
    return clusters
