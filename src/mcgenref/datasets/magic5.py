"""The MAGIC-5 microcalcification ROIs: 60 x 60 px crops with and without an MC cluster.

8-bit PGM crops of digitised film from the MAGIC-5 (INFN) database (Retico et al., Nucl. Instr.
Meth. A 569, 2006), in ``<root>/magic5-microcal/{calcification,normal}/``. The films were
digitised at 85 um (from the database's publications; the files do not record it), so a crop
is about 5 x 5 mm. Labels are per crop; no MC is outlined.

Names: the first 4 characters are the case; ``<region>.pgm_N.pgm`` are several shifted windows
of one region, so crops are NOT independent: resample, split and bootstrap by case, and count
a region once (:func:`one_crop_per_region`).

The calcification crops are development data (realism at 85 um, ROI-level evaluation): never
train a segmentor on them, that would use real labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcgenref.datasets.paths import data_root
from mcgenref.errors import InputError

#: Pixel pitch of the MAGIC-5 digitisation (mm), from the database's publications.
MAGIC5_PIXEL_SPACING_MM = 0.085
#: The two crop classes (sub-folders).
MAGIC5_CLASSES = ("calcification", "normal")


def magic5_dir(root: Path | str | None = None) -> Path:
    """``<root>/magic5-microcal`` with ``root`` defaulting to :func:`data_root`."""
    return Path(root if root is not None else data_root()) / "magic5-microcal"


def case_id(path: Path | str) -> str:
    """The case of a crop: the first 4 characters of its file name."""
    return Path(path).name[:4]


def region_id(path: Path | str) -> str:
    """The region of a crop: its name up to the first ``.pgm`` (shifted windows share it)."""
    return Path(path).name.split(".pgm")[0]


def list_crops(cls: str, root: Path | str | None = None) -> list[Path]:
    """Sorted crop files of class ``cls`` (``"calcification"`` or ``"normal"``)."""
    if cls not in MAGIC5_CLASSES:
        raise InputError(f"unknown MAGIC-5 class {cls!r}; expected one of {MAGIC5_CLASSES}")
    folder = magic5_dir(root) / cls
    if not folder.is_dir():
        raise InputError(f"MAGIC-5 crops not found at {folder}; set MCGENREF_DATA")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".pgm")


def one_crop_per_region(paths: list[Path]) -> list[Path]:
    """The first crop (by name) of each region, so that overlapping windows count once."""
    seen: dict[str, Path] = {}
    for p in sorted(paths):
        seen.setdefault(region_id(p), p)
    return sorted(seen.values())


def read_crop(path: Path | str) -> np.ndarray:
    """A crop as float32 on the fixed 8-bit scale ``v = x / 255`` (film: dense = bright)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise InputError(f"{path}: expected an 8-bit grey PGM, got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32) / 255.0
