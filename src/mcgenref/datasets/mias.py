"""The mini-MIAS database: its ``Info.txt``, its calcification clusters, and a split by woman.

mini-MIAS (Suckling et al., 1994) holds 322 scanned-film mammograms, 1024 x 1024 pixels at
200 um, 8-bit. ``Info.txt`` has one row per finding::

    REF TISSUE CLASS [SEVERITY [X Y RADIUS]]

``TISSUE`` is F (fatty), G (fatty-glandular) or D (dense-glandular); ``CLASS`` is one of CALC,
CIRC, SPIC, MISC, ARCH, ASYM, NORM; ``SEVERITY`` is B or M. For CALC rows X, Y, RADIUS are the
centre and enclosing radius of the whole *cluster*, in pixels, with the origin at the
BOTTOM-LEFT corner: image row = 1024 - Y, image column = X. Some rows have no coordinates
(``*NOTE 3*``: calcifications spread over the whole breast) and an image may have several rows.

Only the images present in ``<root>/mini-mias/images/`` count (the copy beside this project has
160 of the 322: 152 normals and 8 with calcification clusters). Film pairs (2k-1, 2k) are the
right and left breast of one woman: split by woman, never by image (:func:`split_by_woman`;
the project's three-way split of the normals into training, calibration and test is
:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`).

The calcification images are development data (realism comparison, operating thresholds);
never train on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcgenref.datasets.paths import data_root
from mcgenref.errors import InputError

#: mini-MIAS pixel size (the 50 um originals were reduced to 200 um), in mm.
MIAS_PIXEL_SPACING_MM = 0.2
#: Every mini-MIAS image is this many pixels high (and wide).
MIAS_IMAGE_SIZE = 1024

_ROW_RE = re.compile(r"^\s*(mdb\d{3})\s+([FGD])\s+([A-Z]{4})\b(.*)$")
_REF_RE = re.compile(r"^mdb(\d{3})$")


@dataclass(frozen=True)
class MiasRecord:
    """One row of ``Info.txt``. Coordinates are as written (origin bottom-left) or ``None``."""

    ref: str
    tissue: str  # "F", "G" or "D"
    cls: str  # "CALC", "CIRC", ..., "NORM"
    severity: str | None = None  # "B" / "M"
    x: int | None = None
    y: int | None = None
    radius: int | None = None

    @property
    def has_location(self) -> bool:
        return self.x is not None and self.y is not None and self.radius is not None


@dataclass(frozen=True)
class MiasCluster:
    """A calcification cluster circle in image coordinates (row down from the top)."""

    ref: str
    centre_row: float
    centre_col: float
    radius_px: float

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of the pixels whose centres are inside the circle."""
        rr, cc = np.ogrid[: shape[0], : shape[1]]
        return (rr - self.centre_row) ** 2 + (cc - self.centre_col) ** 2 <= self.radius_px**2


def parse_info(text: str) -> list[MiasRecord]:
    """Parse ``Info.txt`` (or the database README, whose table has the same rows).

    Lines that are not finding rows (headers, notes, separators) are ignored. A row whose
    coordinates are missing or unreadable (``*NOTE 3*``) keeps its class and severity with
    ``x = y = radius = None``.
    """
    records: list[MiasRecord] = []
    for line in text.splitlines():
        m = _ROW_RE.match(line)
        if not m:
            continue
        ref, tissue, cls, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        tokens = rest.split()
        severity = None
        if tokens and tokens[0] in ("B", "M"):
            severity = tokens.pop(0)
        coords: list[int] = []
        for tok in tokens[:3]:
            if re.fullmatch(r"\d+", tok):
                coords.append(int(tok))
            else:
                break
        if len(coords) == 3:
            x, y, radius = coords
            records.append(MiasRecord(ref, tissue, cls, severity, x, y, radius))
        else:
            records.append(MiasRecord(ref, tissue, cls, severity))
    return records


def mias_dir(root: Path | str | None = None) -> Path:
    """``<root>/mini-mias`` with ``root`` defaulting to :func:`data_root`."""
    return Path(root if root is not None else data_root()) / "mini-mias"


def read_info(root: Path | str | None = None) -> list[MiasRecord]:
    """The records of ``<root>/mini-mias/Info.txt``."""
    path = mias_dir(root) / "Info.txt"
    if not path.is_file():
        raise InputError(f"mini-MIAS Info.txt not found at {path}; set MCGENREF_DATA")
    return parse_info(path.read_text(encoding="latin-1"))


def image_path(ref: str, root: Path | str | None = None) -> Path:
    """Path of the image of ``ref`` (PNG in ``images/``; falls back to ``pgm-originals/``)."""
    d = mias_dir(root)
    for cand in (d / "images" / f"{ref}.png", d / "images" / f"{ref}.pgm",
                 d / "pgm-originals" / f"{ref}.pgm"):
        if cand.is_file():
            return cand
    raise InputError(f"mini-MIAS image {ref} not found under {d}")


def present_refs(root: Path | str | None = None) -> set[str]:
    """Refs whose image is in ``<root>/mini-mias/images/``."""
    d = mias_dir(root) / "images"
    if not d.is_dir():
        return set()
    return {p.stem for p in d.iterdir() if p.suffix.lower() in (".png", ".pgm") and
            _REF_RE.match(p.stem)}


def _refs_of_class(cls: str, root, records: Sequence[MiasRecord] | None,
                   present: Iterable[str] | None) -> list[str]:
    recs = records if records is not None else read_info(root)
    have = set(present) if present is not None else present_refs(root)
    return sorted({r.ref for r in recs if r.cls == cls and r.ref in have})


def normal_refs(root: Path | str | None = None, *, records: Sequence[MiasRecord] | None = None,
                present: Iterable[str] | None = None) -> list[str]:
    """Sorted refs of the NORM images that are present."""
    return _refs_of_class("NORM", root, records, present)


def calc_refs(root: Path | str | None = None, *, records: Sequence[MiasRecord] | None = None,
              present: Iterable[str] | None = None) -> list[str]:
    """Sorted refs of the CALC images that are present (development data: never train on them)."""
    return _refs_of_class("CALC", root, records, present)


def cluster_from_record(rec: MiasRecord, image_height: int = MIAS_IMAGE_SIZE) -> MiasCluster:
    """The cluster circle of a located record, with the y flip (row = height - Y)."""
    if not rec.has_location:
        raise InputError(f"{rec.ref}: record has no location")
    return MiasCluster(rec.ref, float(image_height - rec.y), float(rec.x), float(rec.radius))


def calc_clusters(root: Path | str | None = None, *,
                  records: Sequence[MiasRecord] | None = None,
                  present: Iterable[str] | None = None,
                  image_height: int = MIAS_IMAGE_SIZE) -> list[MiasCluster]:
    """Every located CALC cluster of the present images (an image may have several)."""
    recs = records if records is not None else read_info(root)
    have = set(present) if present is not None else present_refs(root)
    return [cluster_from_record(r, image_height) for r in recs
            if r.cls == "CALC" and r.has_location and r.ref in have]


def woman_id(ref: str) -> int:
    """The woman of a film: films 2k-1 (right) and 2k (left) belong to woman k."""
    m = _REF_RE.match(ref)
    if not m:
        raise InputError(f"not a mini-MIAS reference: {ref!r} (expected mdbNNN)")
    n = int(m.group(1))
    if n < 1:
        raise InputError(f"not a mini-MIAS reference: {ref!r}")
    return (n + 1) // 2


def split_by_woman(refs: Iterable[str], fraction_test: float,
                   seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, test) split of ``refs`` that never separates the films of a woman.

    Women are shuffled with ``numpy.random.default_rng(seed)`` and the first
    ``round(fraction_test * n_women)`` of them go to the test side. Both lists are sorted.
    """
    if not 0.0 <= fraction_test <= 1.0:
        raise InputError(f"fraction_test must be in [0, 1], got {fraction_test}")
    refs = sorted(set(refs))
    women = sorted({woman_id(r) for r in refs})
    order = np.random.default_rng(seed).permutation(len(women))
    n_test = int(round(fraction_test * len(women)))
    test_women = {women[i] for i in order[:n_test]}
    train = [r for r in refs if woman_id(r) not in test_women]
    test = [r for r in refs if woman_id(r) in test_women]
    return train, test
