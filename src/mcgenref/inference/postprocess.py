"""From a probability map to MCs and clusters (on the input image's own pixel grid)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from mcgenref.clusters import ClusterRule, group_clusters, points_px_to_mm
from mcgenref.io.display import display_uint8

CSV_COLUMNS = (
    "id", "x", "y", "x_mm", "y_mm", "area_mm2", "max_diameter_mm",
    "mean_prob", "peak_prob", "cluster_id",
)


@dataclass(frozen=True)
class Detections:
    """MCs (one row per connected component of ``prob >= threshold`` inside the region)
    and the clusters they form.

    ``mcs``: dicts with the keys of :data:`CSV_COLUMNS` (x = column, y = row, pixels from the
    top-left; mm = pixels x spacing). ``clusters``: dicts for ``<stem>_clusters.json``.
    ``mask``: bool [H, W], the thresholded map.
    """

    mask: np.ndarray
    mcs: list[dict[str, Any]]
    clusters: list[dict[str, Any]]


def _max_diameter_mm(coords: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest distance between pixel centres, plus one pixel (the pixels' own extent)."""
    pts = coords * np.asarray(spacing)[None, :]
    if len(pts) > 64:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear pixels: the extremes along the line are enough
            pass
    longest = float(pdist(pts).max()) if len(pts) > 1 else 0.0
    return longest + float(np.mean(spacing))


def find_calcifications(
    prob: np.ndarray,
    region: np.ndarray,
    spacing_mm: tuple[float, float],
    threshold: float,
    rule: ClusterRule,
) -> Detections:
    """Threshold, label (8-connectivity), measure each MC, and group MCs into clusters.

    Cluster scores follow :func:`mcgenref.clusters.group_clusters` (the
    ``min_count``-th strongest member's peak probability).
    """
    mask = (prob >= threshold) & region
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    mcs: list[dict[str, Any]] = []
    if n:
        # per component on its bounding box: the cost follows the components, not the image
        pixel_area = float(spacing_mm[0] * spacing_mm[1])
        for i, sl in enumerate(ndimage.find_objects(labels)):
            own = labels[sl] == i + 1
            local = np.argwhere(own) + np.array([sl[0].start, sl[1].start])
            p = prob[sl][own].astype(np.float64)
            row, col = local.mean(axis=0)
            mcs.append({
                "id": i + 1,
                "x": round(float(col), 2),
                "y": round(float(row), 2),
                "x_mm": round(float(col * spacing_mm[1]), 3),
                "y_mm": round(float(row * spacing_mm[0]), 3),
                "area_mm2": round(float(len(local)) * pixel_area, 4),
                "max_diameter_mm": round(_max_diameter_mm(local.astype(float), spacing_mm), 3),
                "mean_prob": round(float(p.mean()), 4),
                "peak_prob": round(float(p.max()), 4),
                "cluster_id": -1,
            })
    clusters = []
    if mcs:
        points = points_px_to_mm([[m["y"], m["x"]] for m in mcs], spacing_mm)
        found = group_clusters(points, [m["peak_prob"] for m in mcs], rule=rule)
        for cid, cl in enumerate(found, start=1):
            for member in cl.members:
                mcs[member]["cluster_id"] = cid
            y_mm, x_mm = cl.centre_mm
            clusters.append({
                "id": cid,
                "x": round(x_mm / spacing_mm[1], 2),
                "y": round(y_mm / spacing_mm[0], 2),
                "x_mm": round(x_mm, 3),
                "y_mm": round(y_mm, 3),
                "radius_mm": round(cl.radius_mm, 3),
                "count": cl.count,
                "score": round(cl.score, 4),
                "members": [mcs[m]["id"] for m in cl.members],
            })
    return Detections(mask=mask, mcs=mcs, clusters=clusters)


def render_overlay(
    image: np.ndarray,
    region: np.ndarray,
    detections: Detections,
    spacing_mm: tuple[float, float],
) -> np.ndarray:
    """RGB uint8: the image, MC outlines in red, cluster circles in yellow, breast edge in blue."""
    gray = display_uint8(image, region)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    edge = region & ~ndimage.binary_erosion(region, iterations=2)
    rgb[edge] = (60, 120, 255)
    m = detections.mask
    grown = ndimage.binary_dilation(m, iterations=2)
    rgb[grown & ~m] = (255, 40, 40)
    rows, cols = image.shape
    for cl in detections.clusters:
        radius_mm = cl["radius_mm"] + 2.0
        ry, rx = radius_mm / spacing_mm[0], radius_mm / spacing_mm[1]
        t = np.linspace(0, 2 * np.pi, max(64, int(8 * max(ry, rx))))
        for dr in (-1, 0, 1):
            rr = np.clip(np.round(cl["y"] + (ry + dr) * np.sin(t)).astype(int), 0, rows - 1)
            cc = np.clip(np.round(cl["x"] + (rx + dr) * np.cos(t)).astype(int), 0, cols - 1)
            rgb[rr, cc] = (255, 220, 0)
    return rgb
