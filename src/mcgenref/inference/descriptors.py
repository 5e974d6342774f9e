"""Descriptive geometry of MC clusters, for ``<stem>_clusters.json`` and the HTML report.

**Descriptive, not diagnostic.** These numbers describe the shape and spread of what the
detector found; they are not a BI-RADS assessment and say nothing about malignancy. The
distribution class takes BI-RADS' words as inspiration but is a fixed geometric rule
(:func:`distribution_class`), not the radiologist's judgement those words stand for.

Per cluster (:func:`describe_clusters`), with positions in mm, ``(y_mm, x_mm)`` =
``(row * row_spacing, col * col_spacing)``, MC positions (their peaks) from the
``_calcifications.csv`` rows (the word "centroid" below means these positions):

* ``extent_mm``: the largest distance between two member centroids (0 for one MC).
* ``major_axis_mm`` / ``minor_axis_mm``: the span (max - min) of the member centroids
  projected on their first / second principal axis (eigenvectors of their covariance).
* ``elongation``: ``sd_major / max(sd_minor, ELONGATION_FLOOR_MM)``, the ratio of the member
  centroids' standard deviations along the two principal axes (population sd). The floor (about
  one MC's size) keeps the ratio finite for MCs exactly in a row and stops a tight row of
  touching MCs from counting as a line. Fewer than 3 members: 1.0 (two points always line up).
* ``area_mm2``: the area of the convex hull of the member MCs' pixels, each pixel taken as its
  full square (so one pixel has the area of a pixel, a 3 x 3 block nine).
* ``density_per_cm2``: members per cm² of that hull area. The hull of MCs in a row is thin, so
  linear clusters are dense by this measure; it is a packing measure, not an MC count per
  cm² of breast.
* ``distribution``: :func:`distribution_class` of ``extent_mm`` and ``elongation``.
* morphology spread of the members: ``size_mean_mm``, ``size_sd_mm`` and ``size_cv`` (sd /
  mean) of their ``max_diameter_mm``; ``mc_elongation_mean`` / ``mc_elongation_sd`` of each
  MC's own elongation, ``sqrt(l1 / l2)`` of the second moments of its pixels as unit squares
  (a single pixel gives 1, a 1 x n bar of pixels n, a k x n block n / k).

All standard deviations are population ones (ddof = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

#: Clusters whose ``extent_mm`` exceeds this are "large" (BI-RADS' upper limit of "grouped").
LARGE_EXTENT_MM = 20.0
#: A cluster with ``elongation`` at least this (and not large) is "linear".
LINEAR_ELONGATION = 3.0
#: A large cluster with ``elongation`` at least this is "segmental", otherwise "regional".
SEGMENTAL_ELONGATION = 2.0
#: The smallest minor-axis sd (mm) in the elongation ratio: about one MC's size.
ELONGATION_FLOOR_MM = 0.5

DISTRIBUTIONS = ("grouped", "linear", "segmental", "regional")

DESCRIPTOR_RULE = {
    "large_extent_mm": LARGE_EXTENT_MM,
    "linear_elongation": LINEAR_ELONGATION,
    "segmental_elongation": SEGMENTAL_ELONGATION,
    "elongation_floor_mm": ELONGATION_FLOOR_MM,
    "description": (
        "descriptive geometry, not a diagnosis and not BI-RADS: extent_mm = largest distance "
        "between member centroids; elongation = sd of member centroids along their major "
        "principal axis / max(sd along the minor axis, elongation_floor_mm); distribution = "
        "segmental if extent_mm > large_extent_mm and elongation >= segmental_elongation, "
        "regional if extent_mm > large_extent_mm otherwise, linear if elongation >= "
        "linear_elongation, else grouped; area_mm2 = convex hull of the member pixels; "
        "density_per_cm2 = members per cm2 of that hull"
    ),
}


def distribution_class(extent_mm: float, elongation: float) -> str:
    """The distribution word for a cluster (see :data:`DESCRIPTOR_RULE`).

    ========================================  ============
    condition (checked in this order)         class
    ========================================  ============
    extent > 20 mm and elongation >= 2        ``segmental``
    extent > 20 mm                            ``regional``
    elongation >= 3                           ``linear``
    otherwise                                 ``grouped``
    ========================================  ============

    With the default cluster rule merged clusters span at most ``max_extent_mm`` = 20 mm, so
    only ``grouped`` and ``linear`` occur; the large classes need a larger
    ``cluster_rule.max_extent_mm``.
    """
    if extent_mm > LARGE_EXTENT_MM:
        return "segmental" if elongation >= SEGMENTAL_ELONGATION else "regional"
    return "linear" if elongation >= LINEAR_ELONGATION else "grouped"


def principal_axes(points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sd along each principal axis, largest first; the axes as columns) of ``(N, 2)`` points."""
    p = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    if len(p) < 2:
        return np.zeros(2), np.eye(2)
    cov = np.cov(p, rowvar=False, ddof=0)
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = values.argsort()[::-1]
    return np.sqrt(np.clip(values[order], 0.0, None)), vectors[:, order]


def centroid_shape(points_mm: np.ndarray) -> dict[str, float]:
    """``extent_mm``, ``major_axis_mm``, ``minor_axis_mm`` and ``elongation`` of member
    centroids ``(N, 2)`` in mm (see the module docstring)."""
    p = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    if len(p) < 2:
        return {"extent_mm": 0.0, "major_axis_mm": 0.0, "minor_axis_mm": 0.0, "elongation": 1.0}
    sd, axes = principal_axes(p)
    proj = (p - p.mean(axis=0)) @ axes
    span = proj.max(axis=0) - proj.min(axis=0)
    elongation = 1.0 if len(p) < 3 else float(sd[0] / max(sd[1], ELONGATION_FLOOR_MM))
    return {
        "extent_mm": float(pdist(p).max()),
        "major_axis_mm": float(span[0]),
        "minor_axis_mm": float(span[1]),
        "elongation": elongation,
    }


def pixel_hull_area_mm2(coords: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """Area (mm²) of the convex hull of pixels ``(N, 2)`` ``(row, col)``, each a full square."""
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if not len(c):
        return 0.0
    # only the first and last pixel of each row can be hull vertices: keeps qhull's input small
    order = np.lexsort((c[:, 1], c[:, 0]))
    c = c[order]
    first = np.r_[True, c[1:, 0] != c[:-1, 0]]
    last = np.r_[c[1:, 0] != c[:-1, 0], True]
    ends = np.unique(np.concatenate([c[first], c[last]]), axis=0)
    corners = np.concatenate([ends + d for d in ((0, 0), (0, 1), (1, 0), (1, 1))])
    pts = corners.astype(float) * np.asarray(spacing_mm, dtype=float)[None, :]
    try:
        return float(ConvexHull(pts).volume)  # 2-D "volume" is the area
    except QhullError:  # pragma: no cover - pixel squares always span an area
        return 0.0


def mc_elongation(coords: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    """``sqrt(l1 / l2)`` of the second moments of one MC's pixels ``(N, 2)`` as unit squares
    (each square adds spacing² / 12 per axis, so one pixel gives exactly 1)."""
    s = np.asarray(spacing_mm, dtype=float)
    p = np.asarray(coords, dtype=float).reshape(-1, 2) * s[None, :]
    cov = np.cov(p, rowvar=False, ddof=0) if len(p) > 1 else np.zeros((2, 2))
    cov = cov + np.diag(s**2 / 12.0)
    values = np.linalg.eigvalsh(cov)
    return float(np.sqrt(values[1] / values[0]))


def _spread(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return (float(v.mean()), float(v.std())) if len(v) else (0.0, 0.0)


def describe_clusters(
    mcs: Sequence[dict[str, Any]],
    clusters: Sequence[dict[str, Any]],
    outlines: np.ndarray,
    spacing_mm: tuple[float, float],
) -> list[dict[str, Any]]:
    """Descriptors of each cluster (same order as ``clusters``; see the module docstring).

    ``mcs`` / ``clusters``: :class:`mcgenref.inference.postprocess.Detections` rows;
    ``outlines``: the MCs' pixels, an integer ``[H, W]`` array whose value is the MC ``id``
    (``Detections.labels``), or a bool mask whose 8-connected components, numbered in raster
    order, are the MCs; ``spacing_mm``: (row, col).
    """
    if not clusters:
        return []
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    by_id = {int(m["id"]): m for m in mcs}
    member_ids = sorted({int(i) for cl in clusters for i in cl["members"]})
    pixels = _member_pixels(np.asarray(outlines), member_ids)
    out = []
    for cl in clusters:
        ids = [int(i) for i in cl["members"]]
        rows = [by_id[i] for i in ids]
        centroids = np.array([[float(r["y"]) * spacing[0], float(r["x"]) * spacing[1]]
                              for r in rows]).reshape(-1, 2)
        shape = centroid_shape(centroids)
        coords = [pixels.get(i, np.zeros((0, 2), np.int64)) for i in ids]
        union = np.concatenate(coords) if coords else np.zeros((0, 2), np.int64)
        area = pixel_hull_area_mm2(union, spacing)
        sizes = [float(r["max_diameter_mm"]) for r in rows]
        size_mean, size_sd = _spread(sizes)
        elong_mean, elong_sd = _spread([mc_elongation(c, spacing) for c in coords if len(c)])
        out.append({
            "extent_mm": round(shape["extent_mm"], 3),
            "major_axis_mm": round(shape["major_axis_mm"], 3),
            "minor_axis_mm": round(shape["minor_axis_mm"], 3),
            "elongation": round(shape["elongation"], 3),
            "area_mm2": round(area, 3),
            "density_per_cm2": round(len(ids) / (area / 100.0), 2) if area > 0 else None,
            "distribution": distribution_class(shape["extent_mm"], shape["elongation"]),
            "size_mean_mm": round(size_mean, 3),
            "size_sd_mm": round(size_sd, 3),
            "size_cv": round(size_sd / size_mean, 3) if size_mean > 0 else None,
            "mc_elongation_mean": round(elong_mean, 3),
            "mc_elongation_sd": round(elong_sd, 3),
        })
    return out


def _member_pixels(outlines: np.ndarray, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """``{id: (N, 2) (row, col)}`` for the requested MC ids (see :func:`describe_clusters`)."""
    if not ids or not outlines.any():
        return {}
    if outlines.dtype == bool:
        labels, _ = ndimage.label(outlines, structure=np.ones((3, 3), bool))
    else:
        labels = outlines.astype(np.int64, copy=False)
    objects = ndimage.find_objects(labels)
    n = len(objects)
    out = {}
    for i in ids:
        if 1 <= i <= n and objects[i - 1] is not None:
            sl = objects[i - 1]
            out[i] = np.argwhere(labels[sl] == i) + np.array([sl[0].start, sl[1].start])
    return out
