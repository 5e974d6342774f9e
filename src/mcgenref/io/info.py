"""``mcgenref info``: what the reader makes of a file, without segmenting it.

:func:`describe_image` reads the file exactly as ``mcgenref segment`` does
(:func:`mcgenref.io.read_image`, so a bad file fails with the same one-line error) and returns
a JSON-able record of what was read, assumed and converted; :func:`info_text` lays it out for
people. The record's keys are :data:`INFO_KEYS`; ``mcgenref info`` adds ``auto_model``
(which model ``segment --model auto`` would pick, and why: computed by
:func:`mcgenref.workflows.auto_model_line`, since io does not import inference), which
:func:`info_text` shows when present.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.errors import McGenRefWarning
from mcgenref.io.library_warnings import attributed_to, library_warning_line
from mcgenref.io.readers import read_image

#: Keys of a :func:`describe_image` record, in display order.
INFO_KEYS = (
    "file", "format", "transfer_syntax", "sop_class", "rows", "columns", "pixel_spacing_mm",
    "spacing_source", "photometric_interpretation", "inverted", "bits_stored",
    "modality_lut_applied", "modality_lut", "voi_lut_in_file", "voi_lut_applied",
    "presentation_intent", "modality", "laterality", "laterality_from", "view", "view_from",
    "magnification_factor", "magnification_view", "patient_orientation",
    "patient_orientation_valid", "value_range", "warnings",
)


def _dicom_header(path: Path) -> dict[str, Any]:
    """Facts of the DICOM header that ImageMeta does not keep (the file was already read)."""
    import pydicom

    from mcgenref.io.dicom_seg import is_valid_patient_orientation

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    sop = ds.get("SOPClassUID")
    modality_lut = [k for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence") if k in ds]
    voi = [k for k in ("WindowCenter", "WindowWidth", "VOILUTSequence", "VOILUTFunction") if k in ds]
    orientation = ds.get("PatientOrientation")
    orientation_text = None
    if isinstance(orientation, str):
        orientation_text = orientation or None
    elif orientation is not None:
        orientation_text = "\\".join(str(v) for v in orientation)
    return {
        "transfer_syntax": getattr(ts, "name", None) or (str(ts) if ts else None),
        "sop_class": getattr(sop, "name", None) or (str(sop) if sop else None),
        "modality_lut": modality_lut,
        "voi_lut_in_file": voi,
        "patient_orientation": orientation_text,
        "patient_orientation_valid": (None if orientation_text is None
                                      else is_valid_patient_orientation(orientation)),
        "laterality_tag": bool(ds.get("ImageLaterality") or ds.get("Laterality")),
        "view_tag": bool(ds.get("ViewPosition")),
    }


def describe_image(path: str | Path,
                   pixel_spacing_mm: float | tuple[float, float] | None = None) -> dict[str, Any]:
    """What the reader sees in ``path``: one record with the keys :data:`INFO_KEYS`.

    ``warnings`` holds the reader's warnings and, as ``FILE: LIBRARY: ...`` lines, those of
    the libraries it called; they are collected, not re-emitted (not thread-safe: it swaps
    the process's warning filters while reading, as ``warnings.catch_warnings`` does).
    ``voi_lut_in_file``, ``modality_lut``, ``patient_orientation`` and the ``*_from`` keys
    are DICOM facts (None for other formats). Raises InputError / ConfigError exactly as
    :func:`mcgenref.io.read_image`.
    """
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, meta = read_image(path, pixel_spacing_mm=pixel_spacing_mm)
        header = _dicom_header(path) if meta.format == "dicom" else {}
    notes = list(meta.warnings)
    with attributed_to(path):
        for w in caught:
            if not issubclass(w.category, McGenRefWarning):
                line = library_warning_line(w.message, w.filename)
                if line not in notes:
                    notes.append(line)

    def origin(found: str | None, from_tag: bool) -> str | None:
        if found is None:
            return None
        return "tag" if from_tag else "file name"

    return {
        "file": str(path),
        "format": meta.format,
        "transfer_syntax": header.get("transfer_syntax"),
        "sop_class": header.get("sop_class"),
        "rows": meta.rows,
        "columns": meta.columns,
        "pixel_spacing_mm": list(meta.pixel_spacing_mm),
        "spacing_source": meta.spacing_source,
        "photometric_interpretation": meta.photometric_interpretation,
        "inverted": meta.inverted,
        "bits_stored": meta.bits_stored,
        "modality_lut_applied": meta.modality_lut_applied,
        "modality_lut": header.get("modality_lut"),
        "voi_lut_in_file": header.get("voi_lut_in_file"),
        "voi_lut_applied": meta.voi_lut_applied,
        "presentation_intent": meta.presentation_intent,
        "modality": meta.modality,
        "laterality": meta.laterality,
        "laterality_from": origin(meta.laterality, bool(header.get("laterality_tag"))),
        "view": meta.view,
        "view_from": origin(meta.view, bool(header.get("view_tag"))),
        "magnification_factor": meta.magnification_factor,
        "magnification_view": any("magnification view" in n for n in meta.warnings),
        "patient_orientation": header.get("patient_orientation"),
        "patient_orientation_valid": header.get("patient_orientation_valid"),
        "value_range": [float(np.min(image)), float(np.max(image))],
        "warnings": notes,
    }


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def info_text(record: dict[str, Any]) -> str:
    """A :func:`describe_image` record as aligned ``label  value`` lines under the file name."""
    r = record
    fmt = str(r["format"]).upper()
    if r.get("transfer_syntax"):
        fmt += f", {r['transfer_syntax']}"
    if r.get("sop_class"):
        fmt += f", {r['sop_class']}"
    spacing = " x ".join(f"{v:g}" for v in r["pixel_spacing_mm"])
    source = {"default": "default: none recorded", "user": "given with --pixel-spacing"}.get(
        r["spacing_source"], f"from {r['spacing_source']}")
    photometric = (f"{r['photometric_interpretation']} "
                   f"({'inverted' if r['inverted'] else 'not inverted'})")
    if r["format"] == "dicom":
        lut = ", ".join(r["modality_lut"]) if r["modality_lut"] else "none (identity)"
        lut += " (applied)" if r["modality_lut_applied"] else ""
        voi = ", ".join(r["voi_lut_in_file"]) if r["voi_lut_in_file"] else "none in the file"
    else:
        lut, voi = "n/a", "n/a"
    voi += " (never applied)"

    def found(value: Any, origin: str | None) -> str:
        return "not recorded" if value is None else f"{value} ({origin})"

    mag = _yes_no(bool(r["magnification_view"]))
    mag += (f", factor {r['magnification_factor']:g}" if r["magnification_factor"] is not None
            else ", factor not recorded")
    rows = [
        ("format", fmt),
        ("size", f"{r['rows']} x {r['columns']} px (rows x columns)"),
        ("pixel spacing", f"{spacing} mm (row, column; {source})"),
        ("photometric", photometric),
        ("bits stored", "n/a" if r["bits_stored"] is None else str(r["bits_stored"])),
        ("modality LUT", lut),
        ("VOI LUT / window", voi),
        ("presentation intent", r["presentation_intent"] or "not recorded"),
        ("modality", r["modality"] or "not recorded"),
        ("laterality", found(r["laterality"], r["laterality_from"])),
        ("view", found(r["view"], r["view_from"])),
        ("magnification view", mag),
    ]
    if r["format"] == "dicom":
        po = r["patient_orientation"]
        if po is None:
            po_text = "not recorded"
        elif r["patient_orientation_valid"]:
            po_text = f"{po} (copied to a SEG)"
        else:
            po_text = f"{po!r} (malformed: not copied to a SEG)"
        rows.append(("patient orientation", po_text))
    rows.append(("values read", f"{r['value_range'][0]:g} to {r['value_range'][1]:g} (dense bright)"))
    if r.get("auto_model"):  # added by mcgenref.workflows.run_info (the rule is inference's)
        rows.append(("auto model", f"{r['auto_model']['model']} ({r['auto_model']['reason']})"))
    width = max(len(label) for label, _ in rows)
    lines = [str(r["file"])] + [f"  {label:<{width}}  {value}" for label, value in rows]
    if r["warnings"]:
        lines += [f"  {'warnings':<{width}}  {r['warnings'][0]}"]
        lines += [f"  {'':<{width}}  {w}" for w in r["warnings"][1:]]
    else:
        lines += [f"  {'warnings':<{width}}  none"]
    return "\n".join(lines)
