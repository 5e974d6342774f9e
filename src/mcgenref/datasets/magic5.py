"""The MAGIC-5 microcalcification ROIs: 60 x 60 px crops with and without an MC cluster.

8-bit PGM crops of digitised film from the MAGIC-5 (INFN) database (Retico et al., Nucl. Instr.
Meth. A 569, 2006), in ``<root>/magic5-microcal/{calcification,normal}/``. The films were
digitised at 85 um (from the database's publications; the files do not record it), so a crop
is about 5 x 5 mm. Labels are per crop; no MC is outlined.

Names: the first 4 characters are the case; ``<region>.pgm_N.pgm`` are several shifted windows
of one region, so crops are NOT independent: resample, split and bootstrap by case, and count
a region once (:func:`one_crop_per_region`).

ROI folders (any ``normal/`` + ``calcification/`` pair, MAGIC-5 style, as ``evaluate`` reads
them): :func:`is_roi_folder`, :func:`list_roi_crops` (:class:`RoiCrop`: path, label, case), and
the development / test split by case (:func:`split_cases`, :func:`split_crops`, seed
:data:`DEFAULT_SPLIT_SEED`) on whose development half ROI mode's intensity rule was chosen.

The calcification crops are development data (realism at 85 um, ROI-level evaluation): never
train a segmentor on them, that would use real labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------------------
# ROI folders and the development / test split by case

#: The two label folders of a MAGIC-5-style ROI folder, and the label of each.
LABEL_FOLDERS = {"normal": 0, "calcification": 1}
#: The split that chose ROI mode's normalisation rule (development) and reports it (test).
DEFAULT_SPLIT_SEED = 0
DEFAULT_TEST_FRACTION = 0.5
IMAGE_SUFFIXES = (".pgm", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class RoiCrop:
    """One crop: its file, its label (1 = calcification), its case."""

    path: Path
    label: int
    case: str

    @property
    def stem(self) -> str:
        return self.path.stem


def is_roi_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder with ``normal/`` and ``calcification/`` subfolders."""
    p = Path(path)
    return p.is_dir() and all((p / name).is_dir() for name in LABEL_FOLDERS)


def list_roi_crops(folder: str | Path | None = None) -> list[RoiCrop]:
    """The crops of a MAGIC-5-style folder (``normal/``, ``calcification/``), sorted by label and
    name; ``None``: ``<data root>/magic5-microcal``.

    Raises:
        InputError: no such folder, a label folder missing, or no crop at all.
    """
    root = Path(folder) if folder is not None else magic5_dir()
    if not is_roi_folder(root):
        raise InputError(f"{root}: not a ROI folder (needs normal/ and calcification/ subfolders)")
    crops = [
        RoiCrop(p, label, case_id(p))
        for name, label in LABEL_FOLDERS.items()
        for p in sorted((root / name).iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not crops:
        raise InputError(f"{root}: no image in normal/ or calcification/")
    return crops


def split_cases(cases: Iterable[str], labels: Iterable[int] | None = None,
                test_fraction: float = DEFAULT_TEST_FRACTION,
                seed: int = DEFAULT_SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Deterministic (development, test) split of cases, never separating a case's crops.

    ``cases`` and ``labels`` are per crop. Cases are stratified by the labels they hold
    (normal only, calcification only, both) so both sides get normal and calcification crops:
    within each stratum the sorted cases are shuffled with ``numpy.random.default_rng(seed)``
    and the first ``round(test_fraction * n)`` go to the test side. Both lists are sorted.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError(f"test_fraction must be in [0, 1], got {test_fraction}")
    cases = list(cases)
    labels = [0] * len(cases) if labels is None else list(labels)
    if len(labels) != len(cases):
        raise ValueError("cases and labels differ in length")
    held: dict[str, set[int]] = {}
    for c, lab in zip(cases, labels):
        held.setdefault(c, set()).add(int(lab))
    rng = np.random.default_rng(seed)
    test: set[str] = set()
    for stratum in sorted({tuple(sorted(v)) for v in held.values()}):
        members = sorted(c for c, v in held.items() if tuple(sorted(v)) == stratum)
        order = rng.permutation(len(members))
        test.update(members[i] for i in order[: int(round(test_fraction * len(members)))])
    return sorted(c for c in held if c not in test), sorted(test)


def split_crops(crops: Sequence[RoiCrop], test_fraction: float = DEFAULT_TEST_FRACTION,
                seed: int = DEFAULT_SPLIT_SEED) -> tuple[list[RoiCrop], list[RoiCrop]]:
    """(development, test) crops by :func:`split_cases`."""
    _, test = split_cases([c.case for c in crops], [c.label for c in crops], test_fraction, seed)
    test_set = set(test)
    return ([c for c in crops if c.case not in test_set], [c for c in crops if c.case in test_set])
