"""From a probability map to MCs and clusters (on the input image's own pixel grid).

An MC is a **peak** of the probability map (:mod:`mcgenref.detections`, non-maximum
suppression within ``PeakRule.radius_mm``) with ``peak_prob >= threshold`` inside the region,
so the MCs at a threshold are also MCs at every lower one. Its outline, from which the table's
area, size and mean probability are measured, is the 8-connected component of the thresholded
mask around the peak; when several peaks lie in one component (touching MCs), the component is
split between them along the valleys of the map (watershed of ``-prob`` from the peaks), so
each pixel of it belongs to exactly one MC and the areas add up to the component's. A
component with no peak of its own (a weaker piece within ``radius_mm`` of a stronger peak
across a gap below the threshold) stays in the mask but is no row of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from mcgenref.clusters import ClusterRule, group_clusters, points_px_to_mm
from mcgenref.detections import PeakRule, Peaks, find_peaks
from mcgenref.io.display import display_uint8

CSV_COLUMNS = (
    "id", "x", "y", "x_mm", "y_mm", "area_mm2", "max_diameter_mm",
    "mean_prob", "peak_prob", "cluster_id",
)

_STRUCTURE = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detections:
    """MCs (one row per peak of the map at or above the threshold inside the region, strongest
    first) and the clusters they form.

    ``mcs``: dicts with the keys of :data:`CSV_COLUMNS` (x = column, y = row of the peak pixel,
    from the top-left; mm = pixels x spacing; area, size and mean probability of its outline).
    ``clusters``: dicts for ``<stem>_clusters.json``. ``mask``: bool [H, W], the thresholded
    map. ``labels``: int32 [H, W], the outlines: pixels of MC ``id`` hold ``id``, 0 elsewhere
    (also on mask pixels of components without a peak).
    """

    mask: np.ndarray
    mcs: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    labels: np.ndarray


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


def peak_outlines(prob: np.ndarray, mask: np.ndarray, peaks: Peaks) -> np.ndarray:
    """int32 [H, W]: pixels of the outline of peak ``k`` (0-based) hold ``k + 1``.

    The outline of a peak is the 8-connected component of ``mask`` it lies in, split by a
    watershed of ``-prob`` (8-connectivity) between the peaks when the component holds more
    than one. Every peak must lie on ``mask``.
    """
    outlines = np.zeros(mask.shape, dtype=np.int32)
    if not len(peaks):
        return outlines
    # labelled on the mask's bounding box: a full-field map's mask is a few sparse specks
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    in_box = rows.size > 0 and bool(np.all(
        (peaks.rows >= rows[0]) & (peaks.rows <= rows[-1])
        & (peaks.cols >= cols[0]) & (peaks.cols <= cols[-1])))
    if not in_box:
        raise ValueError("peak_outlines: every peak must lie on the mask")
    r0, c0 = int(rows[0]), int(cols[0])
    box = (slice(r0, int(rows[-1]) + 1), slice(c0, int(cols[-1]) + 1))
    components, _ = ndimage.label(mask[box], structure=_STRUCTURE)
    comp_of_peak = components[peaks.rows - r0, peaks.cols - c0]
    if np.any(comp_of_peak == 0):
        raise ValueError("peak_outlines: every peak must lie on the mask")
    objects = ndimage.find_objects(components)
    order = np.argsort(comp_of_peak, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(comp_of_peak[order])) + 1, len(order)]
    for a, b in zip(starts[:-1], starts[1:]):
        ks = order[a:b]
        comp = int(comp_of_peak[ks[0]])
        local = objects[comp - 1]  # in the box
        sl = (slice(local[0].start + r0, local[0].stop + r0),
              slice(local[1].start + c0, local[1].stop + c0))
        own = components[local] == comp
        if len(ks) == 1:
            outlines[sl][own] = ks[0] + 1
            continue
        from skimage.segmentation import watershed  # only for touching MCs

        markers = np.zeros(own.shape, dtype=np.int32)
        markers[peaks.rows[ks] - sl[0].start, peaks.cols[ks] - sl[1].start] = ks + 1
        basins = watershed(-prob[sl].astype(np.float64), markers, connectivity=2, mask=own)
        outlines[sl][own] = basins[own]
    return outlines


def find_calcifications(
    prob: np.ndarray,
    region: np.ndarray,
    spacing_mm: tuple[float, float],
    threshold: float,
    rule: ClusterRule,
    peak_rule: PeakRule = PeakRule(),
) -> Detections:
    """Peaks at or above ``threshold`` as MCs, measured on their outlines (module
    docstring), grouped into clusters by ``rule``.

    Cluster scores follow :func:`mcgenref.clusters.group_clusters` (the
    ``min_count``-th strongest member's peak probability).
    """
    mask = (prob >= threshold) & region
    # searching the mask gives the peaks of the region with score >= threshold: the pixels
    # the mask leaves out of the region are below the threshold, so lower than any such peak
    peaks = find_peaks(prob, spacing_mm, peak_rule, mask, min_score=threshold)
    outlines = peak_outlines(prob, mask, peaks)
    mcs: list[dict[str, Any]] = []
    if len(peaks):
        pixel_area = float(spacing_mm[0] * spacing_mm[1])
        for k, sl in enumerate(ndimage.find_objects(outlines)):
            own = outlines[sl] == k + 1
            local = np.argwhere(own) + np.array([sl[0].start, sl[1].start])
            p = prob[sl][own].astype(np.float64)
            row, col = int(peaks.rows[k]), int(peaks.cols[k])
            mcs.append({
                "id": k + 1,
                "x": col,
                "y": row,
                "x_mm": round(col * float(spacing_mm[1]), 3),
                "y_mm": round(row * float(spacing_mm[0]), 3),
                "area_mm2": round(float(len(local)) * pixel_area, 4),
                "max_diameter_mm": round(_max_diameter_mm(local.astype(float), spacing_mm), 3),
                "mean_prob": round(float(p.mean()), 4),
                "peak_prob": round(float(peaks.scores[k]), 4),
                "cluster_id": -1,
            })
    clusters = []
    if mcs:
        points = points_px_to_mm(peaks.points_px, spacing_mm)
        found = group_clusters(points, peaks.scores, rule=rule)
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
                "n_groups": cl.n_groups,
                "count": cl.count,
                "score": round(cl.score, 4),
                "members": [mcs[m]["id"] for m in cl.members],
            })
    return Detections(mask=mask, mcs=mcs, clusters=clusters, labels=outlines)


#: The overlay is a palette PNG: these many grey levels (the 8-bit display window, requantised
#: by at most half a level), then the three drawing colours. A palette image is a third of the
#: bytes of RGB to render and to compress, and shows the same picture.
OVERLAY_GREYS = 253
EDGE_RGB, MC_RGB, CLUSTER_RGB = (60, 120, 255), (255, 40, 40), (255, 220, 0)
EDGE_INDEX, MC_INDEX, CLUSTER_INDEX = OVERLAY_GREYS, OVERLAY_GREYS + 1, OVERLAY_GREYS + 2


def overlay_palette() -> np.ndarray:
    """uint8 [256, 3]: the RGB colour of each index of :func:`render_overlay_indexed`."""
    grey = np.round(np.arange(OVERLAY_GREYS) * 255.0 / (OVERLAY_GREYS - 1)).astype(np.uint8)
    return np.concatenate([np.repeat(grey[:, None], 3, axis=1),
                           np.array([EDGE_RGB, MC_RGB, CLUSTER_RGB], dtype=np.uint8)])


def _bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(0, int(rows[0]) - pad), int(rows[-1]) + 1 + pad),
            slice(max(0, int(cols[0]) - pad), int(cols[-1]) + 1 + pad))


def _erode_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_erosion(mask, iterations=...)`` (4-neighbour cross, outside = False)
    by shifted ANDs: several times faster on a full-field mask."""
    m = mask
    for _ in range(iterations):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[0], e[-1], e[:, 0], e[:, -1] = False, False, False, False
        m = e
    return m


def _dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=...)`` (4-neighbour cross) by shifted ORs."""
    m = mask
    for _ in range(iterations):
        d = m.copy()
        d[1:] |= m[:-1]
        d[:-1] |= m[1:]
        d[:, 1:] |= m[:, :-1]
        d[:, :-1] |= m[:, 1:]
        m = d
    return m


def render_overlay_indexed(
    image: np.ndarray,
    region: np.ndarray,
    detections: Detections,
    spacing_mm: tuple[float, float],
) -> np.ndarray:
    """uint8 [H, W] indices into :func:`overlay_palette`: the image in grey, MC outlines in
    red, cluster circles in yellow, the breast edge in blue."""
    gray = display_uint8(image, region)
    levels = np.round(np.arange(256) * (OVERLAY_GREYS - 1) / 255.0).astype(np.uint8)
    out = levels[gray]
    # morphology on bounding boxes: the cost follows the breast and the MCs, not the image
    box = _bounding_box(region, 2)
    if box is not None:
        r = region[box]
        out[box][r & ~_erode_cross(r, 2)] = EDGE_INDEX
    m = detections.mask
    box = _bounding_box(m, 2)
    if box is not None:
        mb = m[box]
        out[box][_dilate_cross(mb, 2) & ~mb] = MC_INDEX
    rows, cols = image.shape
    for cl in detections.clusters:
        radius_mm = cl["radius_mm"] + 2.0
        ry, rx = radius_mm / spacing_mm[0], radius_mm / spacing_mm[1]
        t = np.linspace(0, 2 * np.pi, max(64, int(8 * max(ry, rx))))
        for dr in (-1, 0, 1):
            rr = np.clip(np.round(cl["y"] + (ry + dr) * np.sin(t)).astype(int), 0, rows - 1)
            cc = np.clip(np.round(cl["x"] + (rx + dr) * np.cos(t)).astype(int), 0, cols - 1)
            out[rr, cc] = CLUSTER_INDEX
    return out


def render_overlay(
    image: np.ndarray,
    region: np.ndarray,
    detections: Detections,
    spacing_mm: tuple[float, float],
) -> np.ndarray:
    """RGB uint8 of :func:`render_overlay_indexed` (what ``<stem>_overlay.png`` shows)."""
    return overlay_palette()[render_overlay_indexed(image, region, detections, spacing_mm)]
