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
    # a flat top is one peak, at its pixel nearest the centroid (21, 10.5): raster first
    assert (a["x"], a["y"]) == (21, 10)
    assert a["x_mm"] == pytest.approx(4.2) and a["y_mm"] == pytest.approx(1.0)
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


def _blob(shape, centre, peak, sigma_px):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return peak * np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma_px**2))


def test_touching_mcs_are_two_rows_that_share_their_component() -> None:
    # two MCs 0.8 mm apart whose blobs join above the threshold, and a third 1.5 mm away:
    # one component holds two peaks; three peaks make a cluster where two components do not
    shape = (60, 60)
    prob = np.maximum.reduce([_blob(shape, (20, 20), 0.9, 3.5), _blob(shape, (20, 28), 0.8, 3.5),
                              _blob(shape, (35, 24), 0.85, 2.0)]).astype(np.float32)
    region = np.ones(shape, bool)
    det = find_calcifications(prob, region, (0.1, 0.1), 0.3, ClusterRule())
    from scipy import ndimage

    components, n = ndimage.label(det.mask, structure=np.ones((3, 3)))
    assert n == 2
    assert [(m["y"], m["x"]) for m in det.mcs] == [(20, 20), (35, 24), (20, 28)]  # strongest first
    assert [m["peak_prob"] for m in det.mcs] == pytest.approx([0.9, 0.85, 0.8], abs=1e-4)
    # the shared component is split between its two peaks: areas add up, outlines are disjoint
    shared = components == components[20, 20]
    assert np.array_equal(det.labels > 0, det.mask)
    assert set(np.unique(det.labels[shared])) == {1, 3}
    area = {m["id"]: m["area_mm2"] for m in det.mcs}
    assert area[1] + area[3] == pytest.approx(shared.sum() * 0.01, abs=1e-3)
    assert area[1] > area[3]  # the stronger, wider blob keeps more of the shared pixels
    # each outline holds its peak, and the split runs through the valley between them
    assert det.labels[20, 23] == 1 and det.labels[20, 25] == 3
    for m in det.mcs:
        assert det.labels[m["y"], m["x"]] == m["id"]
        own = det.labels == m["id"]
        assert m["mean_prob"] == pytest.approx(float(prob[own].mean()), abs=1e-4)
    assert len(det.clusters) == 1 and det.clusters[0]["members"] == [1, 2, 3]
    assert det.clusters[0]["n_groups"] == 1
    # a lower threshold only adds MCs: the three are still there at 0.2
    lower = find_calcifications(prob, region, (0.1, 0.1), 0.2, ClusterRule())
    assert {(m["y"], m["x"]) for m in det.mcs} <= {(m["y"], m["x"]) for m in lower.mcs}


def test_a_component_without_a_peak_of_its_own_is_no_row() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[10, 10] = 0.9
    prob[10, 12] = 0.6  # 0.2 mm from a stronger peak, across a gap below the threshold
    det = find_calcifications(prob, np.ones((20, 20), bool), (0.1, 0.1), 0.5, ClusterRule())
    assert [(m["y"], m["x"]) for m in det.mcs] == [(10, 10)]
    assert det.mask[10, 12] and det.labels[10, 12] == 0


def test_cross_morphology_is_ndimage_s() -> None:
    from scipy import ndimage

    from mcgenref.inference.postprocess import _dilate_cross, _erode_cross

    rng = np.random.default_rng(0)
    for _ in range(10):
        m = ndimage.binary_opening(rng.random((41, 33)) > 0.3)
        m[0, :6] = m[:, -1] = True  # the image border counts as outside for the erosion
        for it in (1, 2):
            np.testing.assert_array_equal(_erode_cross(m, it), ndimage.binary_erosion(m, iterations=it))
            np.testing.assert_array_equal(_dilate_cross(m, it), ndimage.binary_dilation(m, iterations=it))


def test_overlay_palette_png_shows_the_rgb_overlay() -> None:
    import io

    from PIL import Image

    from mcgenref.inference.postprocess import (
        CLUSTER_RGB, EDGE_RGB, MC_RGB, overlay_palette, render_overlay,
        render_overlay_indexed,
    )
    from mcgenref.io.display import display_uint8
    from mcgenref.io.predictions import palette_png_bytes

    rng = np.random.default_rng(0)
    image = rng.random((120, 100)).astype(np.float32)
    region = np.zeros(image.shape, bool)
    region[10:110, 0:80] = True
    prob = np.zeros(image.shape, np.float32)
    for r, c in [(50, 40), (60, 45), (70, 38)]:  # 1 mm apart: three peaks
        prob[r : r + 2, c : c + 2] = 0.9
    det = find_calcifications(prob, region, (0.1, 0.1), 0.5, ClusterRule(min_count=3))
    assert len(det.clusters) == 1
    idx = render_overlay_indexed(image, region, det, (0.1, 0.1))
    rgb = render_overlay(image, region, det, (0.1, 0.1))
    decoded = np.array(Image.open(io.BytesIO(palette_png_bytes(idx, overlay_palette()))).convert("RGB"))
    np.testing.assert_array_equal(decoded, rgb)
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert {EDGE_RGB, MC_RGB, CLUSTER_RGB} <= colours
    assert tuple(rgb[51, 41]) != MC_RGB  # the MC itself stays grey: only its outline is red
    grey = display_uint8(image, region)
    plain = (rgb == rgb[..., :1]).all(axis=2) & ~np.isin(idx, [253, 254, 255])
    assert np.abs(rgb[..., 0][plain].astype(int) - grey[plain]).max() <= 1  # requantised to 253 levels


def test_outlines_of_separate_and_touching_mcs_in_a_corner_of_a_large_map() -> None:
    """Labelled on the mask's bounding box, the outlines are placed back on the whole grid."""
    from mcgenref.detections import PeakRule, find_peaks
    from mcgenref.inference.postprocess import peak_outlines

    prob = np.zeros((300, 400), np.float32)
    prob[250:253, 330:333] = 0.9  # one MC
    prob[260, 360:367] = [0.95, 0.9, 0.7, 0.6, 0.7, 0.9, 0.99]  # two touching, split by a valley
    prob[10, 10] = 0.3  # below threshold
    mask = prob >= 0.5
    peaks = find_peaks(prob, (0.1, 0.1), PeakRule(radius_mm=0.2), mask, min_score=0.5)
    assert len(peaks) == 3
    outlines = peak_outlines(prob, mask, peaks)
    assert outlines.shape == prob.shape and ((outlines > 0) == mask).all()
    for k in range(3):  # each peak inside its own outline, every outline one piece
        assert outlines[peaks.rows[k], peaks.cols[k]] == k + 1
    assert len({int(v) for v in outlines[260, 360:367]}) == 2
    assert (outlines[250:253, 330:333] == outlines[251, 331]).all()
    off = PeakRule()
    with pytest.raises(ValueError, match="must lie on the mask"):
        peak_outlines(prob, mask & (np.arange(400) < 350), find_peaks(prob, (0.1, 0.1), off, mask, min_score=0.5))
