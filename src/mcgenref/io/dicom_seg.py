"""DICOM Segmentation (SEG) of the MC mask, for DICOM inputs (built with highdicom).

One BINARY segment on the source's own pixel grid (one frame, Rows x Columns of the source):

* **references**: the SEG is in the source's study (StudyInstanceUID and the patient/study
  modules are copied from the source, as DICOM requires for a derived object; this is the
  one output of ``mcgenref segment`` that carries patient identifiers, exactly those the
  source had), references the source's series and SOP instance (ReferencedSeriesSequence and
  the frame's Source Image Sequence), and shares its FrameOfReferenceUID when the source has
  one. Mammograms are projection images without patient coordinates (no ImagePosition /
  ImageOrientationPatient), so the SEG carries no plane position/orientation either; where the
  source has no Frame of Reference the SEG has none (highdicom then identifies the frame by
  its source image only, which the standard allows). Type 2 patient/study attributes the
  source lacks are written empty, never invented.
* **segment**: label ``microcalcifications``, category SCT 49755003 "Morphologically
  abnormal structure", type SCT 18115005 "Pathologic calcification" (the morphologic
  abnormality "calcification", the code segmentation terminologies use for "Calcification"
  under this category; the mammography *finding* codes such as 129770007 "Individual
  calcification" are findings, not structures, and do not belong under a structure category).
  Algorithm type AUTOMATIC; algorithm identification: name, version, family DCM 123110
  "Artificial Intelligence" and parameters ``method``, ``threshold`` and ``model_sha256``
  (omitted for the classical detector, which has no weights).
* New UIDs are generated for each SEG (series and instance): the SEG is a new object.

Known limit (highdicom 0.28): where the source has PixelSpacing, highdicom writes a Pixel
Measures item with PixelSpacing only (SliceThickness is not required for a DERIVED projection
frame) and its own reader (``highdicom.seg.segread``) then refuses the file; pydicom reads it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import InputError

#: Attributes highdicom reads from the source as Type 2 (present, possibly empty).
_TYPE2_FROM_SOURCE = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)

SEGMENT_LABEL = "microcalcifications"


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 300 else s[:297] + "..."


def calcification_concepts() -> tuple[Any, Any]:
    """(SegmentedPropertyCategory, SegmentedPropertyType) of the MC segment."""
    from pydicom.sr.codedict import codes

    return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.PathologicCalcification


def seg_bytes(
    source_path: Path,
    mask: np.ndarray,
    algorithm: dict[str, Any],
    series_number: int = 9001,
) -> bytes:
    """A DICOM SEG (Part 10 bytes) of ``mask`` (bool, the source's Rows x Columns).

    ``algorithm``: ``name``, ``version``, and optionally ``model_sha256``, ``method``,
    ``threshold`` (recorded as algorithm parameters when not None).
    Raises InputError (one line) when the SEG cannot be built from this source.
    """
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError as exc:  # pragma: no cover - declared dependencies
        raise InputError(f"cannot build DICOM SEG for {source_path}: {exc}") from None
    try:
        # the pixel data is not needed (and may be compressed): attributes only
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        mask = np.asarray(mask, dtype=bool)
        rows, cols = int(source.Rows), int(source.Columns)
        if mask.shape != (rows, cols):
            raise ValueError(f"mask of {mask.shape} does not match the source's {rows}x{cols}")
        if "Modality" not in source:
            source.Modality = "MG"  # as read_image assumes (with its warning)
        for keyword in _TYPE2_FROM_SOURCE:
            if keyword not in source:
                setattr(source, keyword, None)  # empty Type 2 value, nothing invented
        parameters = {
            key: str(algorithm[key]) for key in ("method", "threshold", "model_sha256")
            if algorithm.get(key) is not None
        }
        algo = hd.AlgorithmIdentificationSequence(
            name=str(algorithm["name"]),
            version=str(algorithm["version"]),
            family=codes.cid7162.ArtificialIntelligence,
            parameters=parameters or None,
        )
        category, prop_type = calcification_concepts()
        description = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=SEGMENT_LABEL,
            segmented_property_category=category,
            segmented_property_type=prop_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        import mcgenref

        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=mask[np.newaxis].astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="mcgenref",
            manufacturer_model_name="mcgenref segment",
            software_versions=str(mcgenref.__version__),
            device_serial_number="0",
            content_description="Microcalcifications (mcgenref)",
            series_description="MC segmentation (mcgenref)",
            omit_empty_frames=False,  # "no MC found" is a result too: always one frame
        )
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is one line about this input
        raise InputError(
            f"cannot build DICOM SEG for {source_path}: {_one_line(exc)}"
        ) from None
