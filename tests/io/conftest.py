"""Shared fixtures of the io tests: the real-data folder and synthetic DICOM/PNG factories."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# tests/io/conftest.py -> parents[2] is the repository root (/work/main); the real data lives
# beside it in ../shared/data (/work/shared/data).
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def data_dir() -> Path:
    return Path(os.environ.get("MCGENREF_DATA", str(DEFAULT_DATA)))


@pytest.fixture
def real_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"real data folder {d} is absent (set MCGENREF_DATA)")
    return d


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    modality: str | None = "MG",
    transfer_syntax: str | None = None,
    **tags: Any,
) -> Path:
    """Write a minimal single-frame grayscale DICOM with ``pixels`` (uint16) to ``path``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = tags.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2")  # Digital Mammography
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    arr = np.ascontiguousarray(pixels.astype(np.uint16))
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def factory(pixels: np.ndarray, name: str | None = None, **kw: Any) -> Path:
        return make_dicom(tmp_path / (name or f"img{next(counter)}.dcm"), pixels, **kw)

    return factory


def phantom(
    spacing_mm: float = 0.2,
    size_mm: tuple[float, float] = (200.0, 160.0),
    seed: int = 0,
    label: bool = True,
    border: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A breast phantom: half-ellipse of textured tissue against the left edge.

    Returns ``(image, ellipse, label_mask, border_mask)`` with a bright label rectangle in
    the air and a bright film-border strip along the right edge (when enabled).
    """
    rng = np.random.default_rng(seed)
    h, w = int(round(size_mm[0] / spacing_mm)), int(round(size_mm[1] / spacing_mm))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    y_mm, x_mm = yy * spacing_mm, xx * spacing_mm
    cy, ry, rx = size_mm[0] / 2, size_mm[0] * 0.38, size_mm[1] * 0.55
    r2 = ((y_mm - cy) / ry) ** 2 + (x_mm / rx) ** 2
    ellipse = r2 <= 1.0
    thickness = np.sqrt(np.clip(1.0 - r2, 0, 1))
    tissue = 60 + 120 * thickness ** 0.3 + 25 * np.sin(x_mm / 7.0) * np.cos(y_mm / 9.0)
    img = np.where(ellipse, tissue, 5.0) + rng.normal(0, 3.0, (h, w))
    label_mask = np.zeros((h, w), dtype=bool)
    border_mask = np.zeros((h, w), dtype=bool)
    if label:
        label_mask[(y_mm > 10) & (y_mm < 25) & (x_mm > 115) & (x_mm < 140)] = True
        img[label_mask] = 250.0
    if border:
        border_mask[:, x_mm[0] > size_mm[1] - 6] = True
        img[border_mask] = 240.0
    return np.clip(img, 0, 255).astype(np.float32), ellipse, label_mask, border_mask


@pytest.fixture
def make_phantom() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    return phantom
