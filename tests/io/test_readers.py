"""read_image / list_images on synthetic DICOM, PNG, PGM and TIFF files (and real ones)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import ConfigError, InputError, McGenRefWarning
from mcgenref.io import DEFAULT_PIXEL_SPACING_MM, list_images, read_image

RNG = np.random.default_rng(1)
BASE = RNG.integers(100, 3000, (64, 48)).astype(np.uint16)
BASE[20:28, 10:18] = 4000  # a bright (dense) spot


def read_quiet(path: Path, spacing=None):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", McGenRefWarning)
        return read_image(path, spacing)


def refused(path: Path, match: str | None = None, spacing=None) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match) as exc:
        read_quiet(path, spacing)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE, ImagerPixelSpacing=[0.1, 0.1], ImageLaterality="R", ViewPosition="MLO")
    img, meta = read_image(p)
    assert img.dtype == np.float32 and img.shape == (64, 48)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))
    assert meta.format == "dicom" and meta.modality == "MG"
    assert (meta.rows, meta.columns) == (64, 48)
    assert meta.photometric_interpretation == "MONOCHROME2" and not meta.inverted
    assert meta.bits_stored == 12 and meta.laterality == "R" and meta.view == "MLO"
    assert meta.voi_lut_applied is False and meta.warnings == ()


def test_dicom_monochrome1_inverted(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(4095 - BASE, photometric="MONOCHROME1", PixelSpacing=[0.1, 0.1])
    img, meta = read_image(p)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))
    assert meta.inverted and meta.photometric_interpretation == "MONOCHROME1"
    assert img[24, 14] > np.median(img)  # the dense spot stays bright


def test_voi_not_applied_modality_applied(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(
        BASE,
        PixelSpacing=[0.1, 0.1],
        WindowCenter=2000,
        WindowWidth=500,
        RescaleSlope=2,
        RescaleIntercept=-100,
        RescaleType="US",
    )
    img, meta = read_image(p)
    np.testing.assert_allclose(img, BASE.astype(np.float32) * 2 - 100)
    assert meta.modality_lut_applied and not meta.voi_lut_applied


def test_voi_lut_sequence_not_applied(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.add_new(0x00283006, "US", [min(255, i // 16) for i in range(4096)])  # LUTData
    p = dicom_factory(BASE, PixelSpacing=[0.1, 0.1], VOILUTSequence=[item])
    img, _ = read_image(p)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))


def test_spacing_order_kept(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE, ImagerPixelSpacing=[0.1, 0.05], PixelSpacing=[0.09, 0.045])
    _, meta = read_image(p)
    assert meta.pixel_spacing_mm == (0.1, 0.05) and meta.spacing_source == "ImagerPixelSpacing"
    p = dicom_factory(BASE, PixelSpacing=[0.07, 0.08])
    _, meta = read_image(p)
    assert meta.pixel_spacing_mm == (0.07, 0.08) and meta.spacing_source == "PixelSpacing"


def test_spacing_default_warns(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE)
    with pytest.warns(McGenRefWarning, match="no pixel spacing"):
        _, meta = read_image(p)
    d = DEFAULT_PIXEL_SPACING_MM
    assert meta.pixel_spacing_mm == (d, d) and meta.spacing_source == "default"
    assert any("no pixel spacing" in w for w in meta.warnings)


def test_spacing_user_override(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE, ImagerPixelSpacing=[0.1, 0.1])
    with pytest.warns(McGenRefWarning, match="overrides"):
        _, meta = read_image(p, (0.2, 0.2))
    assert meta.pixel_spacing_mm == (0.2, 0.2) and meta.spacing_source == "user"
    with warnings.catch_warnings():
        warnings.simplefilter("error", McGenRefWarning)
        _, meta = read_image(p, 0.1005)  # within 1 %: no warning
    assert meta.warnings == ()
    with pytest.raises(ConfigError):
        read_image(p, -1.0)


def test_spacing_fallback_only_where_the_file_records_none(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    recorded = dicom_factory(BASE, ImagerPixelSpacing=[0.1, 0.1])
    bare = dicom_factory(BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", McGenRefWarning)  # neither case warns
        _, meta = read_image(recorded, fallback_spacing_mm=0.2)
        assert meta.pixel_spacing_mm == (0.1, 0.1) and meta.spacing_source == "ImagerPixelSpacing"
        _, meta = read_image(bare, fallback_spacing_mm=0.2)
        assert meta.pixel_spacing_mm == (0.2, 0.2) and meta.spacing_source == "user"
    with pytest.warns(McGenRefWarning, match="overrides"):  # an explicit spacing still wins
        _, meta = read_image(recorded, 0.3, fallback_spacing_mm=0.2)
    assert meta.pixel_spacing_mm == (0.3, 0.3)
    with pytest.raises(ConfigError):
        read_image(bare, fallback_spacing_mm=50.0)


@pytest.mark.parametrize("ts", ["JPEG2000Lossless", "JPEGLSLossless", "RLELossless"])
def test_compressed_lossless_exact(dicom_factory, ts: str) -> None:  # type: ignore[no-untyped-def]
    import pydicom.uid

    p = dicom_factory(BASE, PixelSpacing=[0.1, 0.1], transfer_syntax=getattr(pydicom.uid, ts))
    img, _ = read_image(p)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))


def test_for_processing_log(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    exposure = np.full((64, 48), 3000, np.uint16)
    exposure[20:30, 10:20] = 300  # dense: less exposure
    exposure[0, 0] = 0
    p = dicom_factory(exposure, PixelSpacing=[0.1, 0.1], PresentationIntentType="FOR PROCESSING")
    with pytest.warns(McGenRefWarning, match="FOR PROCESSING"):
        img, meta = read_image(p)
    expected = np.log(4095.0) - np.log(np.maximum(exposure.astype(np.float64), 1))
    np.testing.assert_allclose(img, expected, rtol=1e-5)
    assert img[25, 15] > img[50, 40]
    assert meta.presentation_intent == "FOR PROCESSING"


def test_magnification_and_missing_modality_warn(dicom_factory) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE, PixelSpacing=[0.1, 0.1], EstimatedRadiographicMagnificationFactor=1.8)
    with pytest.warns(McGenRefWarning, match="magnification"):
        _, meta = read_image(p)
    assert meta.magnification_factor == pytest.approx(1.8)
    p = dicom_factory(BASE, PixelSpacing=[0.1, 0.1], modality=None)
    with pytest.warns(McGenRefWarning, match="Modality"):
        read_image(p)


def test_dicom_refusals(dicom_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    refused(dicom_factory(BASE, modality="CT"), "modality CT")
    frames = np.stack([BASE, BASE])
    refused(dicom_factory(frames, NumberOfFrames=2), "multi-frame")
    refused(dicom_factory(BASE, SOPClassUID="1.2.840.10008.5.1.4.1.1.13.1.3"), "omosynthesis")
    refused(dicom_factory(BASE[:16, :16]), "too small")
    p = dicom_factory(BASE)
    import pydicom

    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    refused(tmp_path / "nopix.dcm", "no pixel data")
    ds = pydicom.dcmread(p)
    ds.Rows = 30000  # header claims a huge image: refused before decoding
    ds.save_as(tmp_path / "huge.dcm")
    refused(tmp_path / "huge.dcm", "exceeds")
    ds = pydicom.dcmread(p)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.save_as(tmp_path / "rgb.dcm")
    refused(tmp_path / "rgb.dcm", "colour")
    ds = pydicom.dcmread(p)
    ds.BitsStored = 20
    ds.save_as(tmp_path / "bits.dcm")
    refused(tmp_path / "bits.dcm", "BitsStored")
    refused(dicom_factory(np.full((64, 48), 7, np.uint16)), "empty")


def test_truncated_and_garbage(dicom_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE)
    data = p.read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) - 1000])
    assert "trunc.dcm" in refused(tmp_path / "trunc.dcm")
    (tmp_path / "half.dcm").write_bytes(data[:200])
    refused(tmp_path / "half.dcm")
    (tmp_path / "text.dcm").write_text("hello, I am not a DICOM file\n" * 20)
    assert "text.dcm" in refused(tmp_path / "text.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    refused(tmp_path / "empty.dcm", "empty")
    refused(tmp_path / "missing.dcm", "no such file")


def test_extensionless_dicom(dicom_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = dicom_factory(BASE, name="IM0001", PixelSpacing=[0.1, 0.1])
    img, meta = read_image(p)
    assert meta.format == "dicom" and img.shape == BASE.shape
    (tmp_path / "notes").write_text("x")
    refused(tmp_path / "notes", "unsupported")


# ---------------------------------------------------------------------------------- rasters


def save(tmp_path: Path, name: str, arr: np.ndarray, mode: str | None = None) -> Path:
    p = tmp_path / name
    Image.fromarray(arr, mode=mode).save(p) if mode else Image.fromarray(arr).save(p)
    return p


def test_png_8_and_16_bit(tmp_path: Path) -> None:
    a8 = (BASE // 16).astype(np.uint8)
    with pytest.warns(McGenRefWarning, match="no pixel spacing"):
        img, meta = read_image(save(tmp_path, "a.png", a8))
    np.testing.assert_array_equal(img, a8.astype(np.float32))
    assert meta.format == "png" and meta.bits_stored == 8 and meta.spacing_source == "default"
    img, meta = read_image(save(tmp_path, "b_L-MLO.png", BASE), 0.2)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))
    assert meta.bits_stored == 12 and meta.pixel_spacing_mm == (0.2, 0.2)
    assert meta.spacing_source == "user" and meta.warnings == ()
    assert (meta.laterality, meta.view) == ("L", "MLO")  # from the file name


def test_pgm(tmp_path: Path) -> None:
    a8 = (BASE // 16).astype(np.uint8)
    p = tmp_path / "x.pgm"
    Image.fromarray(a8).save(p)
    img, meta = read_image(p, 0.2)
    np.testing.assert_array_equal(img, a8.astype(np.float32))
    assert meta.format == "pgm"


def test_raster_refusals(tmp_path: Path) -> None:
    rgb = np.stack([(BASE // 16).astype(np.uint8)] * 3, axis=-1)
    refused(save(tmp_path, "rgb.png", rgb), "RGB", 0.1)
    pal = Image.fromarray((BASE // 16).astype(np.uint8)).convert("P")
    pal.save(tmp_path / "pal.png")
    refused(tmp_path / "pal.png", "palette", 0.1)
    Image.fromarray(BASE > 1000).save(tmp_path / "bw.png")
    refused(tmp_path / "bw.png", "1-bit", 0.1)
    Image.fromarray((BASE // 16).astype(np.uint8)).convert("LA").save(tmp_path / "la.png")
    refused(tmp_path / "la.png", "alpha", 0.1)
    refused(save(tmp_path, "zero.png", np.zeros((64, 64), np.uint8)), "empty", 0.1)
    (tmp_path / "folder.png").mkdir()
    refused(tmp_path / "folder.png", "folder", 0.1)
    (tmp_path / "text.png").write_text("not an image")
    refused(tmp_path / "text.png", None, 0.1)
    data = save(tmp_path, "ok.png", BASE).read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "trunc.png", None, 0.1)


def test_tiff(tmp_path: Path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", BASE)
    img, meta = read_image(tmp_path / "a.tif", 0.1)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))
    assert meta.format == "tiff" and meta.bits_stored == 12
    f = BASE.astype(np.float32) / 4095
    tifffile.imwrite(tmp_path / "f.tiff", f)
    img, meta = read_image(tmp_path / "f.tiff", 0.1)
    np.testing.assert_allclose(img, f)
    f[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    refused(tmp_path / "nan.tif", "NaN", 0.1)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([BASE // 16] * 3, -1).astype(np.uint8), photometric="rgb")
    refused(tmp_path / "rgb.tif", "channel", 0.1)
    tifffile.imwrite(tmp_path / "white.tif", 65535 - BASE, photometric="miniswhite")
    img, meta = read_image(tmp_path / "white.tif", 0.1)
    np.testing.assert_array_equal(img, BASE.astype(np.float32))
    assert meta.inverted


# ---------------------------------------------------------------------------------- listing


def test_list_images(tmp_path: Path, dicom_factory) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in ("b.png", "a.DCM", ".hidden.png", "notes.txt", "sub/c.tif"):
        (d / name).write_bytes(b"x")
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)
    got = list_images([d, d / "b.png"])
    assert [p.name for p in got] == ["a.DCM", "b.png"]
    got = list_images([d], recursive=True)
    assert sorted(p.name for p in got) == ["a.DCM", "b.png", "c.tif"]
    ext = dicom_factory(BASE, name="IM0001")
    assert list_images([ext]) == [ext]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such"):
        list_images([tmp_path / "nope"])
    with pytest.raises(InputError, match="unsupported"):
        list_images([d / "notes.txt"])


# ---------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_files(real_data: Path) -> None:
    mias = real_data / "mini-mias"
    if (mias / "pgm-originals" / "mdb006.pgm").exists():
        a, _ = read_image(mias / "pgm-originals" / "mdb006.pgm", 0.2)
        b, meta = read_image(mias / "images" / "mdb006.png", 0.2)
        np.testing.assert_array_equal(a, b)
        assert meta.bits_stored == 8 and a.shape == (1024, 1024)
    for p in sorted((real_data / "gmic-sample").glob("*.png")):
        img, meta = read_image(p, 0.1)
        assert meta.bits_stored == 12 and img.max() <= 4095
    for p in sorted((real_data / "cbis-ddsm").glob("*.dcm")):
        with pytest.warns(McGenRefWarning, match="no pixel spacing"):
            img, meta = read_image(p)
        assert meta.modality == "MG" and meta.laterality == "L" and meta.view == "CC"
        assert img.shape == (meta.rows, meta.columns) and img.dtype == np.float32
