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

* **PatientOrientation** (General Image Module, Type 2C: required here, as the SEG has no
  Image Orientation (Patient)): the source's value when it is well formed
  (:func:`is_valid_patient_orientation`, PS3.3 C.7.6.1.1.1); otherwise derived from the
  laterality, the view and the chest-wall side the breast mask found
  (:func:`mammography_patient_orientation`, the mammography convention of PS3.3 C.8.11.7 and
  PS3.17 Annex A); otherwise empty, which the module allows (Type 2). A malformed source value
  (CBIS-DDSM writes the view, ``CC``) is never copied. See docs/segment.md.

The SEG passes ``dciodvfy`` (dicom3tools) with no error the source does not have itself
(tests/io/test_seg_validation.py). Known limit (highdicom 0.28): where the source has
PixelSpacing, highdicom writes a Pixel Measures item with PixelSpacing only (SliceThickness is
not required for a DERIVED projection frame) and its own reader (``highdicom.seg.segread``)
then refuses the file; pydicom reads it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import InputError
from mcgenref.io.library_warnings import attributed_to

#: Attributes highdicom reads from the source as Type 2 (present, possibly empty).
_TYPE2_FROM_SOURCE = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)

SEGMENT_LABEL = "microcalcifications"


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 300 else s[:297] + "..."


#: The anatomical directions of PS3.3 C.7.6.1.1.1 (biped) and the axis each lies on.
_AXIS_OF = {"A": "AP", "P": "AP", "L": "LR", "R": "LR", "H": "HF", "F": "HF"}

#: Direction from the top to the bottom of the image (column direction) per view, for the
#: left and the right breast, in the standard display orientation: CC views lateral side up,
#: oblique views axilla (superolateral) up, lateral views head up (PS3.17 Annex A). Views not
#: listed (caudo-cranial, SIO/ISO, LMO, specimen...) get no derived orientation.
_COLUMN_DIRECTION = {
    "CC": {"L": "R", "R": "L"},
    "XCCL": {"L": "R", "R": "L"},
    "XCCM": {"L": "R", "R": "L"},
    "MLO": {"L": "FR", "R": "FL"},
    "ML": {"L": "F", "R": "F"},
    "LM": {"L": "F", "R": "F"},
}


def is_valid_patient_orientation(value: Any) -> bool:
    """True for a well-formed PatientOrientation: two values (row, column direction), each one
    to three of A P L R H F with no letter twice and no two opposite letters (A and P...), the
    two principal (first) letters on different axes (PS3.3 C.7.6.1.1.1)."""
    if value is None or isinstance(value, (bytes, bytearray)):
        return False
    parts = [str(v) for v in value] if not isinstance(value, str) else value.split("\\")
    if len(parts) != 2:
        return False
    principal = []
    for part in parts:
        if not 1 <= len(part) <= 3 or any(c not in _AXIS_OF for c in part):
            return False
        axes = [_AXIS_OF[c] for c in part]
        if len(set(axes)) != len(axes):
            return False
        principal.append(axes[0])
    return principal[0] != principal[1]


def mammography_patient_orientation(
    laterality: str | None, view: str | None, chest_wall_left: bool | None
) -> list[str] | None:
    """``[row, column]`` directions of a mammogram, or None where they cannot be told.

    Row direction (left to right on the image): from the chest wall to the nipple, anterior
    (``A``), when the chest wall is on the image's left, else posterior (``P``). Column
    direction (top to bottom): :data:`_COLUMN_DIRECTION`, e.g. left CC ``A\\R``, right CC
    ``P\\L``, left MLO ``A\\FR``, right MLO ``P\\FL`` in the usual display. Only the chest-wall
    side is read from the pixels; the vertical sense is the standard one (a vertically
    flipped image would get a wrong column direction).
    """
    lat = (laterality or "").strip().upper()
    view_key = (view or "").strip().upper()
    if lat not in ("L", "R") or view_key not in _COLUMN_DIRECTION or chest_wall_left is None:
        return None
    return ["A" if chest_wall_left else "P", _COLUMN_DIRECTION[view_key][lat]]


def seg_patient_orientation(
    source: Any, laterality: str | None, view: str | None, chest_wall_left: bool | None
) -> tuple[list[str] | str, str]:
    """(the SEG's PatientOrientation, where it came from: ``source`` / ``derived`` / ``empty``)."""
    value = source.get("PatientOrientation")
    if value not in (None, "") and is_valid_patient_orientation(value):
        return [str(v) for v in value], "source"
    derived = mammography_patient_orientation(laterality, view, chest_wall_left)
    if derived is not None:
        return derived, "derived"
    return "", "empty"


def calcification_concepts() -> tuple[Any, Any]:
    """(SegmentedPropertyCategory, SegmentedPropertyType) of the MC segment."""
    from pydicom.sr.codedict import codes

    return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.PathologicCalcification


def seg_bytes(
    source_path: Path,
    mask: np.ndarray,
    algorithm: dict[str, Any],
    series_number: int = 9001,
    *,
    laterality: str | None = None,
    view: str | None = None,
    chest_wall_left: bool | None = None,
) -> bytes:
    """A DICOM SEG (Part 10 bytes) of ``mask`` (bool, the source's Rows x Columns).

    ``algorithm``: ``name``, ``version``, and optionally ``model_sha256``, ``method``,
    ``threshold`` (recorded as algorithm parameters when not None). ``laterality``, ``view``
    (as the reader found them, tags or file name) and ``chest_wall_left`` (the breast mask's
    side) derive the PatientOrientation when the source has no valid one
    (:func:`seg_patient_orientation`). A library warning while building names the source
    (:func:`mcgenref.io.library_warnings.attributed_to`).
    Raises InputError (one line) when the SEG cannot be built from this source.
    """
    with attributed_to(source_path):
        return _seg_bytes(source_path, mask, algorithm, series_number,
                          laterality, view, chest_wall_left)


def _seg_bytes(
    source_path: Path, mask: np.ndarray, algorithm: dict[str, Any], series_number: int,
    laterality: str | None, view: str | None, chest_wall_left: bool | None,
) -> bytes:
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
        # General Image Module, Type 2C (no Image Orientation (Patient) here): highdicom leaves
        # it out, which dciodvfy reports as a missing attribute
        seg.PatientOrientation, _ = seg_patient_orientation(source, laterality, view, chest_wall_left)
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is one line about this input
        raise InputError(
            f"cannot build DICOM SEG for {source_path}: {_one_line(exc)}"
        ) from None
