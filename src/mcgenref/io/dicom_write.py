"""A minimal, valid digital-mammography DICOM from a pixel array (examples, benchmarks, tests)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def mammogram_dataset(
    pixels: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    bits_stored: int = 12,
    uid_entropy: list[str] | None = None,
    **attributes: Any,
):  # noqa: ANN201 (pydicom.Dataset; pydicom is imported lazily)
    """A "Digital Mammography X-Ray Image - For Presentation" dataset, MONOCHROME2, unsigned.

    ``pixels``: 2-D uint16 (or uint8) array, dense bright; ``pixel_spacing_mm``: (row, col),
    stored as ImagerPixelSpacing; ``uid_entropy``: makes the UIDs deterministic (else random);
    ``attributes``: any further DICOM keywords (e.g. ``PatientName``, ``ImageLaterality``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=[*uid_entropy, kind]) if uid_entropy else generate_uid()

    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = uid("sop")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.ImagerPixelSpacing = [f"{pixel_spacing_mm[0]:g}", f"{pixel_spacing_mm[1]:g}"]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    return ds


def dataset_bytes(ds) -> bytes:  # noqa: ANN001
    """The dataset as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
