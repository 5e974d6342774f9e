"""segment_breast on a synthetic phantom and on the real mammograms."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from mcgenref.errors import InputError, McGenRefWarning
from mcgenref.io import BreastRegion, ImageMeta, read_image, segment_breast


def meta_for(img: np.ndarray, spacing: float, **kw) -> ImageMeta:  # type: ignore[no-untyped-def]
    return ImageMeta(
        source_path="phantom",
        format="png",
        rows=img.shape[0],
        columns=img.shape[1],
        pixel_spacing_mm=(spacing, spacing),
        spacing_source="user",
        **kw,
    )


@pytest.mark.parametrize("spacing", [0.2, 0.1])
def test_phantom(spacing: float, make_phantom) -> None:  # type: ignore[no-untyped-def]
    img, ellipse, label, border = make_phantom(spacing)
    reg = segment_breast(img, meta_for(img, spacing))
    assert isinstance(reg, BreastRegion)
    assert reg.breast.shape == img.shape and reg.breast.dtype == bool
    assert reg.chest_wall_left
    assert not reg.pectoral.any()  # not an MLO view
    assert (reg.breast & ellipse).sum() >= 0.9 * ellipse.sum()
    assert not (reg.breast & ~ellipse).any()  # inside the skin margin
    assert not (reg.breast & label).any() and not (reg.breast & border).any()
    # the skin margin: nothing within 0.5 mm of the ellipse edge (away from the chest wall)
    dist = ndi.distance_transform_edt(ellipse, sampling=spacing)
    assert not (reg.breast & (dist < 0.5) & (np.arange(img.shape[1]) > 5 / spacing)).any()


def test_phantom_spacing_consistent(make_phantom) -> None:  # type: ignore[no-untyped-def]
    a_img, _, _, _ = make_phantom(0.2, seed=1)
    b_img, _, _, _ = make_phantom(0.1, seed=1)
    a = segment_breast(a_img, meta_for(a_img, 0.2)).breast
    b = segment_breast(b_img, meta_for(b_img, 0.1)).breast
    b_down = b[::2, ::2]
    assert a.shape == b_down.shape
    iou = (a & b_down).sum() / (a | b_down).sum()
    assert iou > 0.97


def test_phantom_mirrored_and_laterality(make_phantom) -> None:  # type: ignore[no-untyped-def]
    img, ellipse, label, _ = make_phantom(0.2)
    flipped = img[:, ::-1].copy()
    reg = segment_breast(flipped, meta_for(flipped, 0.2, laterality="L"))
    assert not reg.chest_wall_left  # the pixels decide, not the tag
    assert (reg.breast & ellipse[:, ::-1]).sum() >= 0.9 * ellipse.sum()
    assert not (reg.breast & label[:, ::-1]).any()


def test_blank_refused() -> None:
    img = np.zeros((100, 100), np.float32)
    with pytest.raises(InputError):
        segment_breast(img, meta_for(img, 0.2))


def test_pectoral_phantom(make_phantom) -> None:  # type: ignore[no-untyped-def]
    """An MLO-like phantom: a bright triangle at the top chest-wall corner."""
    img, ellipse, _, _ = make_phantom(0.2, label=False, border=False, size_mm=(200, 160))
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w] * 0.2
    tri = (xx < 60 - 60 * yy / 90) & ellipse
    img = img.copy()
    img[tri] += 60
    reg = segment_breast(img, meta_for(img, 0.2, view="MLO"))
    assert reg.pectoral.any()
    overlap = (reg.pectoral & tri).sum() / tri.sum()
    assert overlap > 0.7 and (reg.pectoral & ~tri).sum() < 0.3 * tri.sum()
    assert not (reg.breast & reg.pectoral).any()
    never = segment_breast(img, meta_for(img, 0.2, view="MLO"), pectoral="never")
    assert not never.pectoral.any()


# ---------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_mini_mias_all(real_data: Path) -> None:
    files = sorted((real_data / "mini-mias" / "images").glob("mdb*.png"))
    if not files:
        pytest.skip("mini-MIAS images absent")
    for f in files:
        img, meta = read_image(f, 0.2)
        reg = segment_breast(img, meta)
        b = reg.breast
        assert 0.08 < b.mean() < 0.95, f.name
        far_side = b[:, -1] if reg.chest_wall_left else b[:, 0]
        assert not far_side.any(), f"{f.name}: mask touches the nipple-side border"
        assert ndi.label(b)[1] == 1, f.name
        # air and the painted-over labels (values <= 3) stay outside
        assert (img[b] <= 3).mean() < 0.02, f.name


@pytest.mark.realdata
def test_gmic_pectoral(real_data: Path) -> None:
    files = sorted((real_data / "gmic-sample").glob("*.png"))
    if not files:
        pytest.skip("gmic-sample absent")
    for f in files:
        img, meta = read_image(f, 0.1)
        reg = segment_breast(img, meta)
        assert 0.3 < reg.breast.mean() < 0.95, f.name
        if "MLO" in f.name:
            assert meta.view == "MLO"
            assert 0.03 < reg.pectoral.mean() < 0.5, f"{f.name}: pectoral not found"
        else:
            assert not reg.pectoral.any()


@pytest.mark.realdata
def test_cbis_dicom_breast_is_clean(real_data: Path) -> None:
    """(Its speed is measured by benchmarks/segment_speed.py, not timed here.)"""
    files = sorted((real_data / "cbis-ddsm").glob("*.dcm"))
    if not files:
        pytest.skip("cbis-ddsm absent")
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", McGenRefWarning)
            img, meta = read_image(f)
        reg = segment_breast(img, meta)
        assert reg.chest_wall_left and 0.1 < reg.breast.mean() < 0.6
        bright = img > 0.8 * img.max()
        lab, n = ndi.label(bright)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        in_right = np.bincount(lab[:, img.shape[1] // 2 :].ravel(), minlength=n + 1) > 0
        in_mask = np.bincount(lab[reg.breast], minlength=n + 1) > 0
        # small saturated blobs reaching the air half (the "LCC" letters) are excluded
        small = (sizes < 0.01 * img.size) & in_right
        small[0] = False
        assert not (small & in_mask).any(), f.name


def test_breast_and_pectoral_leave_no_gap_on_mlo(real_data: Path) -> None:
    """breast | pectoral is one region: re-including the muscle must not leave a strip."""
    image, meta = read_image(real_data / "gmic-sample" / "0_L-MLO.png", pixel_spacing_mm=0.1)
    region = segment_breast(image, meta)
    assert region.pectoral.any() and not (region.breast & region.pectoral).any()
    union = region.breast | region.pectoral
    assert ndi.label(union)[1] == 1
    assert np.array_equal(union, ndi.binary_fill_holes(union))  # no strip along the edge


@pytest.mark.parametrize("shape,fr,fc", [((130, 101), 9, 9), ((120, 90), 3, 2), ((50, 40), 1, 1)])
def test_fast_mask_upsampling_equals_the_float_map_thresholded(shape, fr, fc) -> None:  # type: ignore[no-untyped-def]
    from mcgenref.io.breast import _upsample, _upsample_above

    rng = np.random.default_rng(0)
    small_shape = (-(-shape[0] // fr), -(-shape[1] // fc))
    blob = np.zeros(small_shape, bool)
    blob[2:-2, : small_shape[1] * 3 // 4] = True
    blob |= rng.random(small_shape) > 0.9
    dist = ndi.distance_transform_edt(blob, sampling=(0.6, 0.6)).astype(np.float32)
    for t in (0.3, 2.0, float(dist[3, 3])):  # the last exactly on a sample's value
        mask = _upsample_above(dist, shape, fr, fc, t)
        assert mask.flags.c_contiguous and mask.dtype == bool
        np.testing.assert_array_equal(mask, _upsample(dist, shape, fr, fc) > t)


def test_block_mean_equals_the_edge_padded_mean() -> None:
    from mcgenref.io.breast import _block_mean

    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, (47, 38)).astype(np.float32)
    padded = np.pad(img, ((0, 2), (0, 4)), mode="edge")  # 49 x 42: 7 x 7 blocks of 7 x 6
    expect = padded.reshape(7, 7, 7, 6).mean(axis=(1, 3))
    np.testing.assert_array_equal(_block_mean(img, 7, 6), expect)  # integers: exact sums
    noisy = img + rng.random(img.shape).astype(np.float32)
    np.testing.assert_allclose(_block_mean(noisy, 7, 6),
                               np.pad(noisy, ((0, 2), (0, 4)), mode="edge").reshape(7, 7, 7, 6).mean(axis=(1, 3)),
                               rtol=1e-6)


def test_masks_are_c_ordered(make_phantom) -> None:  # type: ignore[no-untyped-def]
    # an F-ordered mask made every later full-size operation on it (with C-ordered images)
    # several times slower
    img, _, _, _ = make_phantom(0.2)
    reg = segment_breast(img, meta_for(img, 0.2))
    assert reg.breast.flags.c_contiguous and reg.pectoral.flags.c_contiguous


def test_row_morphology_equals_ndimage_erosion_dilation_and_opening() -> None:
    from mcgenref.io.breast import _disk, _opening, morph_rows, row_half_widths

    rng = np.random.default_rng(3)
    for shape, (rr, rc) in [((40, 37), (4.76, 4.76)), ((23, 61), (2.2, 5.5)), ((5, 90), (6.0, 1.0)),
                            ((70, 9), (0.4, 3.3))]:
        mask = ndi.binary_dilation(rng.random(shape) > 0.9, iterations=2) | (rng.random(shape) > 0.97)
        disk = _disk(rr, rc)
        rows = row_half_widths(disk)
        assert rows is not None
        for border in (False, True):
            np.testing.assert_array_equal(morph_rows(mask, rows, erode=True, border=border),
                                          ndi.binary_erosion(mask, disk, border_value=border))
            np.testing.assert_array_equal(morph_rows(mask, rows, erode=False, border=border),
                                          ndi.binary_dilation(mask, disk, border_value=border))
        np.testing.assert_array_equal(_opening(mask, disk), ndi.binary_opening(mask, structure=disk))
    assert row_half_widths(np.array([[1, 0, 1]], bool)) is None  # not a centred run


def test_fill_holes_and_column_repeat_equal_ndimage_and_numpy() -> None:
    from mcgenref.io.breast import _fill_holes, _repeat_columns

    rng = np.random.default_rng(4)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) > rng.uniform(0.2, 0.8)
        np.testing.assert_array_equal(_fill_holes(mask), ndi.binary_fill_holes(mask))
    a = rng.random((6, 5)) > 0.5
    for lengths in ([14, 9, 9, 9, 3], [1, 2, 3, 4, 5], [9, 9, 9, 9, 9]):
        np.testing.assert_array_equal(_repeat_columns(a, np.array(lengths)),
                                      np.repeat(a, lengths, axis=1))
