"""Ground truth for evaluation: masks, MC points and cluster circles, per image.

Conventions (docs/architecture.md): arrays ``[row, col]``; ``x`` = column, ``y`` = row,
origin top-left, in pixels. Every reader returns ``{stem: GroundTruth}``.

Readers
-------
* :func:`read_mask_folder` - a folder of ``<stem>.png`` or ``<stem>_mask.png`` masks, any
  nonzero pixel is MC (``_mask.png`` wins when both exist). An empty mask is a normal image.
* :func:`read_inbreast_xml` - INbreast XML (Apple plist) files, one per image, the stem being
  the file name without ``.xml``. Each image's ``ROIs`` have a ``Name`` and ``Point_px``, a list
  of ``"(x, y)"`` strings. ROIs whose name starts with "calcification" (any case): a one-point
  ROI is one MC at that point; a multi-point ROI is an outline, filled as a polygon into the
  mask, and its vertex centroid is added as an MC point. ROIs whose name contains "cluster"
  become cluster circles (centre = vertex centroid, radius = farthest vertex). Other ROIs (Mass,
  Spiculated Region, ...) are ignored. An XML with no ROI at all is a normal image.
  The mask needs the image shape (not stored in the XML): it is drawn by
  :meth:`GroundTruth.with_shape` (one-point MCs are drawn as their single pixel).
* :func:`read_mias_info` - mini-MIAS ``Info.txt``: CALC rows with coordinates -> cluster
  circles (row = H - Y, col = X, with H the image height read from ``images/<ref>.png`` next to
  ``Info.txt`` when present, else 1024); NORM -> normal image; images whose rows are all of
  other classes (CIRC, SPIC, ...) are left out (neither normal nor usable). A CALC row without
  coordinates (``*NOTE 3*``) gives an abnormal image with no circle for that row.
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from mcgenref.errors import ConfigError, InputError

#: The formats :func:`read_truth` understands.
TRUTH_FORMATS = ("masks", "inbreast", "mias")

_NUM = r"([-+0-9.eE]+)"
_POINT_RE = re.compile(rf"^\s*\(?\s*{_NUM}\s*,\s*{_NUM}\s*(?:,\s*[-+0-9.eE]+\s*)?\)?\s*$")


@dataclass(frozen=True)
class ClusterCircle:
    """A labelled cluster: centre ``(row, col)`` and radius, in pixels."""

    row: float
    col: float
    radius_px: float

    def in_mm(self, spacing: tuple[float, float]) -> tuple[float, float, float]:
        """``(y_mm, x_mm, radius_mm)``; radius_mm = radius_px * sqrt(row_sp * col_sp).

        Exact for isotropic pixels (a circle in pixels is an ellipse in mm otherwise; the
        geometric mean keeps its area).
        """
        sr, sc = float(spacing[0]), float(spacing[1])
        return self.row * sr, self.col * sc, self.radius_px * float(np.sqrt(sr * sc))


@dataclass
class GroundTruth:
    """The annotations of one image.

    ``mask``: bool ``[row, col]`` MC mask or ``None``. ``points``: ``(N, 2)`` float MC centres
    ``(row, col)`` in pixels or ``None`` (unknown, as for mini-MIAS). ``clusters``: labelled
    cluster circles, ``None`` when the source has no cluster labels. ``is_normal``: the image is
    known to have no MC. ``polygons``: MC outlines ``(K, 2)`` ``(row, col)`` not yet drawn into
    ``mask`` (INbreast, until :meth:`with_shape`). ``shape``: ``(rows, cols)`` when known.
    """

    stem: str
    mask: np.ndarray | None = None
    points: np.ndarray | None = None
    clusters: list[ClusterCircle] | None = None
    is_normal: bool = False
    polygons: list[np.ndarray] = field(default_factory=list)
    shape: tuple[int, int] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def has_objects(self) -> bool:
        """True when MC-level truth exists (points, a mask, or outlines to draw)."""
        return self.points is not None or self.mask is not None or bool(self.polygons)

    def with_shape(self, shape: tuple[int, int]) -> GroundTruth:
        """A copy whose ``mask`` is drawn for ``shape`` (polygons filled, one-point MCs as a pixel).

        Only for truths whose objects are points/outlines without a mask (INbreast). A mask that
        exists must already have ``shape`` (else :class:`InputError`).
        """
        shape = (int(shape[0]), int(shape[1]))
        if self.mask is not None:
            if self.mask.shape != shape:
                raise InputError(f"{self.stem}: truth mask is {self.mask.shape[0]}x"
                                 f"{self.mask.shape[1]} but the image is {shape[0]}x{shape[1]}")
            return replace(self, shape=shape)
        if not self.polygons and self.points is None:
            return replace(self, shape=shape)
        mask = np.zeros(shape, dtype=bool)
        for poly in self.polygons:
            rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=shape)
            mask[rr, cc] = True
        n_outside = 0
        if self.points is not None and len(self.points):
            r = np.rint(self.points[:, 0]).astype(int)
            c = np.rint(self.points[:, 1]).astype(int)
            ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
            n_outside = int((~ok).sum())
            mask[r[ok], c[ok]] = True
        notes = list(self.notes)
        if n_outside:
            notes.append(f"{n_outside} truth point(s) outside the {shape[0]}x{shape[1]} image")
        return replace(self, mask=mask, shape=shape, notes=notes)

    def object_points(self) -> np.ndarray | None:
        """MC centres ``(N, 2)`` (row, col): ``points`` if given, else mask component centroids.

        Components are 8-connected. ``None`` when the image has no MC-level truth.
        """
        if self.points is not None:
            return self.points
        if self.mask is not None:
            return mask_centroids(self.mask)
        return None


def mask_centroids(mask: np.ndarray) -> np.ndarray:
    """Centroids ``(N, 2)`` (row, col) of the 8-connected components of ``mask``."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2))
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    area = np.bincount(lab, minlength=n + 1)[1:]
    row = np.bincount(lab, weights=rr, minlength=n + 1)[1:] / area
    col = np.bincount(lab, weights=cc, minlength=n + 1)[1:] / area
    return np.stack([row, col], axis=1)


# ---------------------------------------------------------------------------------------------
# mask folders


def _read_png_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read mask {path}: {exc}") from None
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    return arr != 0


def read_mask_folder(path: str | Path) -> dict[str, GroundTruth]:
    """Masks ``<stem>.png`` or ``<stem>_mask.png`` in ``path`` (not recursive); nonzero = MC.

    When both ``a.png`` and ``a_mask.png`` exist, ``a_mask.png`` is the mask of ``a`` (``a.png``
    is then taken to be the image). Files of a prediction folder that are not masks
    (``*_prob.png``, ``*_breast.png``) are skipped. ``is_normal`` = the mask is empty.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"mask folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    chosen: dict[str, Path] = {}
    for p in files:
        name = p.stem
        if name.endswith(("_prob", "_breast")):
            continue
        if name.endswith("_mask"):
            chosen[name[: -len("_mask")]] = p
    for p in files:
        name = p.stem
        if name.endswith(("_prob", "_breast", "_mask")):
            continue
        chosen.setdefault(name, p)
    if not chosen:
        raise InputError(f"no mask PNG (<stem>.png or <stem>_mask.png) in {folder}")
    out: dict[str, GroundTruth] = {}
    for stem, p in sorted(chosen.items()):
        mask = _read_png_mask(p)
        out[stem] = GroundTruth(stem=stem, mask=mask, is_normal=not bool(mask.any()),
                                shape=(int(mask.shape[0]), int(mask.shape[1])),
                                source=str(p))
    return out


# ---------------------------------------------------------------------------------------------
# INbreast


def parse_point(text: str) -> tuple[float, float]:
    """``"(x, y)"`` -> ``(x, y)`` floats (x = column, y = row). A third value (z) is ignored."""
    m = _POINT_RE.match(str(text))
    if not m:
        raise ValueError(f"not an '(x, y)' point: {text!r}")
    return float(m.group(1)), float(m.group(2))


def _inbreast_one(path: Path) -> GroundTruth:
    stem = path.stem
    try:
        with open(path, "rb") as fh:
            doc = plistlib.load(fh)
    except Exception as exc:  # noqa: BLE001 - plistlib/expat raise many types for bad files
        raise InputError(f"cannot read INbreast XML {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Images"), list):
        raise InputError(f"{path} is not an INbreast annotation plist (no 'Images' list)")
    points: list[tuple[float, float]] = []
    polygons: list[np.ndarray] = []
    clusters: list[ClusterCircle] = []
    n_rois = 0
    for image in doc["Images"]:
        if not isinstance(image, dict):
            continue
        for roi in image.get("ROIs", []) or []:
            if not isinstance(roi, dict):
                continue
            n_rois += 1
            name = str(roi.get("Name", "")).strip().lower()
            raw = roi.get("Point_px", []) or []
            try:
                xy = np.array([parse_point(s) for s in raw], dtype=float).reshape(-1, 2)
            except ValueError as exc:
                raise InputError(f"{path}: ROI {roi.get('Name')!r}: {exc}") from None
            if len(xy) == 0:
                continue
            rc = xy[:, ::-1]  # (x, y) -> (row, col)
            if name.startswith("calcification"):
                if len(rc) == 1:
                    points.append((rc[0, 0], rc[0, 1]))
                else:
                    polygons.append(rc)
                    points.append((float(rc[:, 0].mean()), float(rc[:, 1].mean())))
            elif "cluster" in name:
                centre = rc.mean(axis=0)
                radius = float(np.max(np.hypot(*(rc - centre).T))) if len(rc) > 1 else 0.0
                clusters.append(ClusterCircle(float(centre[0]), float(centre[1]), radius))
    pts = np.array(points, dtype=float).reshape(-1, 2)
    return GroundTruth(stem=stem, points=pts, polygons=polygons, clusters=clusters,
                       is_normal=n_rois == 0, source=str(path))


def _xml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"INbreast annotations {path} not found")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    if not files and (path / "AllXML").is_dir():
        files = sorted(p for p in (path / "AllXML").iterdir()
                       if p.is_file() and p.suffix.lower() == ".xml")
    return files


def read_inbreast_xml(path: str | Path,
                      image_shape: tuple[int, int] | None = None) -> dict[str, GroundTruth]:
    """INbreast XML annotations: one ``.xml`` file, or a folder of them (or its ``AllXML/``).

    See the module docstring for the ROI rules. With ``image_shape`` the masks are drawn now
    (same shape for every image); otherwise call :meth:`GroundTruth.with_shape` later.
    """
    files = _xml_files(Path(path))
    if not files:
        raise InputError(f"no INbreast .xml annotation file in {path}")
    out: dict[str, GroundTruth] = {}
    for f in files:
        gt = _inbreast_one(f)
        out[gt.stem] = gt.with_shape(image_shape) if image_shape is not None else gt
    return out


# ---------------------------------------------------------------------------------------------
# mini-MIAS


def _image_height(folder: Path, ref: str) -> tuple[int, int] | None:
    for cand in (folder / "images" / f"{ref}.png", folder / "images" / f"{ref}.pgm",
                 folder / f"{ref}.png", folder / f"{ref}.pgm"):
        if cand.is_file():
            try:
                with Image.open(cand) as im:
                    w, h = im.size
                return int(h), int(w)
            except (OSError, UnidentifiedImageError):
                return None
    return None


def read_mias_info(path: str | Path) -> dict[str, GroundTruth]:
    """mini-MIAS ``Info.txt`` (the file, or the folder holding it) -> ground truth per image.

    CALC rows with ``X Y RADIUS`` -> :class:`ClusterCircle` ``(row = H - Y, col = X, radius)``
    where ``H`` is the height of ``images/<ref>.png`` next to ``Info.txt`` (1024 when absent).
    NORM -> ``is_normal``. Images with only other classes are left out. ``points`` stays
    ``None`` (mini-MIAS has no MC-level labels).
    """
    from mcgenref.datasets.mias import MIAS_IMAGE_SIZE, parse_info

    p = Path(path)
    info = p / "Info.txt" if p.is_dir() else p
    if not info.is_file():
        raise InputError(f"mini-MIAS Info.txt not found at {info}")
    try:
        records = parse_info(info.read_text(encoding="latin-1"))
    except OSError as exc:
        raise InputError(f"cannot read {info}: {exc.strerror or exc}") from None
    if not records:
        raise InputError(f"{info} has no mini-MIAS rows (REF TISSUE CLASS ...)")
    folder = info.parent
    by_ref: dict[str, list] = {}
    for r in records:
        by_ref.setdefault(r.ref, []).append(r)
    out: dict[str, GroundTruth] = {}
    for ref, recs in sorted(by_ref.items()):
        classes = {r.cls for r in recs}
        if "CALC" not in classes and "NORM" not in classes:
            continue
        shape = _image_height(folder, ref)
        height = shape[0] if shape is not None else MIAS_IMAGE_SIZE
        if "CALC" in classes:
            circles = [ClusterCircle(float(height - r.y), float(r.x), float(r.radius))
                       for r in recs if r.cls == "CALC" and r.has_location]
            notes = []
            if any(r.cls == "CALC" and not r.has_location for r in recs):
                notes.append("a CALC row has no location (not counted as a labelled cluster)")
            if shape is None:
                notes.append(f"image not found next to Info.txt: y flip with height {height}")
            out[ref] = GroundTruth(stem=ref, clusters=circles, is_normal=False, shape=shape,
                                   source=str(info), notes=notes)
        else:
            out[ref] = GroundTruth(stem=ref, clusters=[], is_normal=True, shape=shape,
                                   source=str(info))
    return out


# ---------------------------------------------------------------------------------------------
# detection and dispatch


def detect_truth_format(path: str | Path) -> str:
    """Guess ``"masks"``, ``"inbreast"`` or ``"mias"`` from ``path``.

    A ``.xml`` file or a folder with ``.xml`` files (or ``AllXML/``) -> inbreast; a ``.txt`` file
    or a folder with ``Info.txt`` -> mias; a folder with ``.png`` files -> masks.
    """
    p = Path(path)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".xml":
            return "inbreast"
        if suffix == ".txt":
            return "mias"
        raise InputError(f"cannot tell the ground-truth format of {p} (use --truth-format)")
    if not p.is_dir():
        raise InputError(f"ground truth {p} not found")
    names = [q.name for q in p.iterdir()]
    if any(n.lower().endswith(".xml") for n in names) or (p / "AllXML").is_dir():
        return "inbreast"
    if "Info.txt" in names:
        return "mias"
    if any(n.lower().endswith(".png") for n in names):
        return "masks"
    raise InputError(f"cannot tell the ground-truth format of {p}: no .png mask, .xml or "
                     "Info.txt (use --truth-format)")


def read_truth(path: str | Path, truth_format: str | None = None) -> dict[str, GroundTruth]:
    """Read ground truth in ``truth_format`` (one of :data:`TRUTH_FORMATS`; detected if None)."""
    fmt = detect_truth_format(path) if truth_format is None else truth_format.lower()
    if fmt == "masks":
        return read_mask_folder(path)
    if fmt == "inbreast":
        return read_inbreast_xml(path)
    if fmt == "mias":
        return read_mias_info(path)
    raise ConfigError(f"unknown truth format {truth_format!r}; "
                      f"use one of {', '.join(TRUTH_FORMATS)}")


__all__: Sequence[str] = (
    "TRUTH_FORMATS", "ClusterCircle", "GroundTruth", "mask_centroids", "read_mask_folder",
    "parse_point", "read_inbreast_xml", "read_mias_info", "detect_truth_format", "read_truth",
)
