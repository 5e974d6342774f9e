"""Which segmentor segments an image: ``segment --model auto|coarse|fine|PATH``.

Two segmentors ship with the package: the **coarse** (film) model, trained at 0.2 mm
(``weights/segmentor``), and the **fine** model, trained at 0.1 mm
(``weights/segmentor_fine``; a package may not have it yet). ``--model`` takes

- ``coarse`` or ``fine``: that shipped model for every image (``fine`` not installed: an
  error before any work);
- a model folder (``model.json`` + ``model.safetensors``): that model for every image;
- ``auto`` (the default; ``None`` in the library): **per image**, by :func:`auto_rule`: the
  fine model when the image's pixel spacing (the larger of row and column, as the image is
  segmented: after a ``--pixel-spacing`` override, or the 0.1 mm default of a file that
  records none) is below :data:`FINE_BELOW_MM` = sqrt(0.1 x 0.2) mm = 0.1414 mm, the
  geometric mean of the two models' spacings, i.e. the model whose spacing is nearer in log
  scale (resampling by 2x up or down costs the same); else the coarse model. Exactly at the
  boundary: coarse. A batch may mix spacings, so a batch may use both models. When the fine
  model is not installed, ``auto`` uses the coarse model and says so once per run
  (McGenRefWarning). With ``--refine``, ``auto`` is the coarse model for every image: the
  shipped generator was trained beside the coarse (0.2 mm) segmentor (``--refine --model
  fine`` is an error; a model folder is allowed).

The pipeline resamples every image to the chosen model's spacing, so any choice works on any
image; the rule only picks the model that resamples least. Which model an image got, and
why, is recorded as ``model_choice`` in its ``<stem>_meta.json``
(:meth:`ModelChoice.record`). The threshold is the chosen model's own operating point unless
one is given.

:class:`ModelSelector` is what ``segment`` runs: the interface of
:class:`~mcgenref.inference.segment.Segmenter` that the batch uses (``prepare``, ``detect``,
``config``, :meth:`ModelSelector.done_state`), with one Segmenter per model, each built (its
weights loaded) the first time an image needs it and kept for the run.

This module imports no torch at import time (``mcgenref info`` uses :func:`auto_rule`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcgenref.errors import ConfigError, McGenRefWarning

if TYPE_CHECKING:
    from mcgenref.inference.segment import PreparedImage, SegmentationResult, SegmentConfig, Segmenter
    from mcgenref.models.checkpoint import SegmentorContract

AUTO, COARSE, FINE = "auto", "coarse", "fine"
#: The words ``--model`` takes besides a model folder.
MODEL_KEYWORDS = (AUTO, COARSE, FINE)
#: The two shipped models' training spacings, in mm (their ``model.json``
#: ``extra.pixel_spacing_mm``; tests hold the shipped files to these numbers). They define
#: the rule; the pipeline itself reads each model's spacing from its own ``model.json``.
SHIPPED_SPACING_MM = {COARSE: 0.2, FINE: 0.1}
#: ``auto`` takes the fine model for images whose spacing is below this (mm): the geometric
#: mean of the two models' spacings, sqrt(0.1 x 0.2) = 0.14142 mm.
FINE_BELOW_MM = math.sqrt(SHIPPED_SPACING_MM[COARSE] * SHIPPED_SPACING_MM[FINE])
_SHIPPED_FOLDERS = {COARSE: "segmentor", FINE: "segmentor_fine"}


def shipped_model_path(kind: str) -> Path:
    """The folder of the shipped ``coarse`` (``weights/segmentor``) or ``fine``
    (``weights/segmentor_fine``) segmentor, installed or not."""
    return Path(str(resources.files("mcgenref") / "weights" / _SHIPPED_FOLDERS[kind]))


def is_installed(folder: Path) -> bool:
    """Whether ``folder`` holds a model (``model.json`` and ``model.safetensors``)."""
    return (folder / "model.json").is_file() and (folder / "model.safetensors").is_file()


def _mm(value: float) -> str:
    return f"{value:.4g} mm"


def image_spacing(spacing_mm: float | tuple[float, float] | list[float]) -> float:
    """The one spacing the rule compares: the larger of (row, col) mm (the coarser axis)."""
    if isinstance(spacing_mm, (int, float)):
        return float(spacing_mm)
    return float(max(float(v) for v in spacing_mm))


def auto_rule(spacing_mm: float | tuple[float, float] | list[float]) -> tuple[str, str]:
    """``("fine" | "coarse", reason)``: the rule of ``--model auto`` for an image segmented
    at ``spacing_mm`` (one value or (row, col)), whether or not the fine model is installed.

    Fine when the larger of the two spacings is below :data:`FINE_BELOW_MM`; coarse at and
    above it.
    """
    s = image_spacing(spacing_mm)
    if s < FINE_BELOW_MM:
        return FINE, f"spacing {s:g} mm < {_mm(FINE_BELOW_MM)} -> fine"
    return COARSE, f"spacing {s:g} mm >= {_mm(FINE_BELOW_MM)} -> coarse"


def model_request(model: str | Path | None) -> str | Path:
    """``--model``'s value as the library takes it: ``None`` is ``"auto"``; a ``str`` that is
    one of :data:`MODEL_KEYWORDS` stays that word; any other ``str`` and every ``Path`` is a
    model folder (a folder named ``fine`` in the working directory: pass ``./fine``)."""
    if model is None:
        return AUTO
    if isinstance(model, str) and model in MODEL_KEYWORDS:
        return model
    return Path(model)


#: Why ``--refine`` takes the coarse model (the error of ``--refine --model fine`` and the
#: reason ``auto`` records with ``--refine``).
REFINE_NEEDS_COARSE = (
    f"the shipped generator works with the coarse ({SHIPPED_SPACING_MM[COARSE]:g} mm) "
    "segmentor only (it was trained beside it)"
)


def check_request(request: str | Path, refine: bool = False) -> None:
    """Refuse what no image can be segmented with, before any work.

    Raises:
        ConfigError: ``--refine --model fine``; ``--model fine`` where the fine model is not
            installed.
    """
    if request == FINE and refine:
        raise ConfigError(f"--refine cannot use --model fine: {REFINE_NEEDS_COARSE}; use "
                          "--model coarse or auto, or pass a model folder")
    if request == FINE and not is_installed(shipped_model_path(FINE)):
        raise ConfigError(f"--model fine: the fine model is not installed (no model in "
                          f"{shipped_model_path(FINE)}); use --model coarse or auto")


@dataclass(frozen=True)
class ModelChoice:
    """Which segmentor one image gets, and why.

    Attributes:
        asked: the ``--model`` value: ``auto``, ``coarse``, ``fine`` or the folder given.
        model: ``"shipped coarse"``, ``"shipped fine"`` or the folder given.
        path: the model folder.
        reason: why, e.g. ``"auto: spacing 0.07 mm < 0.1414 mm -> fine"``.
        fell_back: ``auto`` wanted the fine model, which is not installed.
    """

    asked: str
    model: str
    path: Path
    reason: str
    fell_back: bool = False

    def record(self, contract: SegmentorContract) -> dict[str, Any]:
        """``<stem>_meta.json``'s ``model_choice``, with the loaded model's name, weights
        sha256 and training spacing (its contract)."""
        spacing = contract.pixel_spacing_mm
        return {
            "asked": self.asked,
            "model": self.model,
            "name": contract.name,
            "path": str(self.path),
            "sha256": contract.sha256,
            "pixel_spacing_mm": None if spacing is None else list(spacing),
            "reason": self.reason,
        }


def resolve_model(choice: str | Path | None, image_spacing_mm: float | tuple[float, float],
                  *, refine: bool = False) -> ModelChoice:
    """The model ``--model choice`` gives an image segmented at ``image_spacing_mm``.

    ``choice``: see :func:`model_request` (``None`` = ``auto``); ``refine``: ``--refine``
    (``auto`` is then the coarse model). No file is read but the fine folder's presence.

    Raises:
        ConfigError: see :func:`check_request`.
    """
    request = model_request(choice)
    check_request(request, refine)
    if isinstance(request, Path):
        return ModelChoice(str(request), str(request), request, "--model PATH")
    if request != AUTO:
        return ModelChoice(request, f"shipped {request}", shipped_model_path(request),
                           f"--model {request}")
    coarse = shipped_model_path(COARSE)
    if refine:
        return ModelChoice(AUTO, f"shipped {COARSE}", coarse,
                           f"auto with --refine: {REFINE_NEEDS_COARSE} -> coarse")
    kind, why = auto_rule(image_spacing_mm)
    if kind == FINE and not is_installed(shipped_model_path(FINE)):
        return ModelChoice(AUTO, f"shipped {COARSE}", coarse,
                           f"auto: {why}, but the fine model is not installed -> coarse",
                           fell_back=True)
    return ModelChoice(AUTO, f"shipped {kind}", shipped_model_path(kind), f"auto: {why}")


def fallback_warning() -> str:
    """The one warning of a run in which ``auto`` wanted the fine model and it is absent."""
    return (f"the fine model is not installed ({shipped_model_path(FINE)}): --model auto "
            f"segments images finer than {_mm(FINE_BELOW_MM)} with the coarse "
            f"({SHIPPED_SPACING_MM[COARSE]:g} mm) model")


@dataclass(frozen=True)
class SelectedImage:
    """An image :meth:`ModelSelector.prepare` has read and prepared for its model."""

    prepared: PreparedImage
    segmenter: Segmenter
    choice: ModelChoice | None  # None: the classical method (no model)


class ModelSelector:
    """Segments each image with the model ``model`` resolves for it (:func:`resolve_model`).

    Args: as :class:`~mcgenref.inference.segment.Segmenter`'s, with ``model`` in place of
    ``model_path``: ``auto`` / ``None``, ``coarse``, ``fine`` or a model folder (ignored for
    the classical method).

    A fixed choice (``coarse``, ``fine``, a folder, or the classical method) builds its
    Segmenter at once, so a bad model fails before any work, as before. ``auto`` reads both
    shipped models' ``model.json`` at once (a broken one fails before any work) and loads a
    model's weights the first time an image needs it, at most once per run (thread-safe:
    :meth:`prepare` runs in the batch's reader threads).

    Raises:
        ConfigError: see :func:`check_request`; InputError: a bad model folder.
    """

    def __init__(
        self,
        config: SegmentConfig | None = None,
        model: str | Path | None = None,
        device: str = "auto",
        pixel_spacing_mm: float | tuple[float, float] | None = None,
        generator_path: str | Path | None = None,
    ) -> None:
        from mcgenref.inference.segment import SegmentConfig

        self.config = config or SegmentConfig()
        self.request = model_request(model)
        self.device = device
        self.pixel_spacing_mm = pixel_spacing_mm
        self.generator_path = generator_path
        self._segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()
        self._warned = False
        if self.config.method != "model":
            self._segmenter_at(None)
            return
        check_request(self.request, self.config.refine)
        if self.request == AUTO and not self.config.refine:
            from mcgenref.models.checkpoint import read_model_meta, segmentor_contract

            for kind in (COARSE, FINE):
                folder = shipped_model_path(kind)
                if kind == COARSE or is_installed(folder):
                    segmentor_contract(read_model_meta(folder))
        else:
            # one model for every image: the spacing does not matter
            self._segmenter_at(resolve_model(self.request, 1.0, refine=self.config.refine).path)

    def _segmenter_at(self, path: Path | None) -> Segmenter:
        """The Segmenter of the model at ``path`` (``None``: the classical method), built on
        first call."""
        from mcgenref.inference.segment import Segmenter

        key = "classical" if path is None else str(path)
        with self._lock:
            if key not in self._segmenters:
                self._segmenters[key] = Segmenter(
                    self.config, path, self.device, pixel_spacing_mm=self.pixel_spacing_mm,
                    generator_path=self.generator_path)
            return self._segmenters[key]

    def choose(self, spacing_mm: tuple[float, float], warn: bool = True) -> ModelChoice | None:
        """The model for an image segmented at ``spacing_mm`` (``None``: classical method);
        with ``warn``, the fallback of ``auto`` is said once per run."""
        if self.config.method != "model":
            return None
        choice = resolve_model(self.request, spacing_mm, refine=self.config.refine)
        if choice.fell_back and warn:
            with self._lock:
                first, self._warned = not self._warned, True
            if first:
                warnings.warn(fallback_warning(), McGenRefWarning, stacklevel=2)
        return choice

    def segmenter_for(self, spacing_mm: tuple[float, float],
                      warn: bool = True) -> tuple[Segmenter, ModelChoice | None]:
        """The Segmenter (built on first need) and the choice for ``spacing_mm``."""
        choice = self.choose(spacing_mm, warn)
        return self._segmenter_at(None if choice is None else choice.path), choice

    @property
    def loaded(self) -> list[str]:
        """The models built so far (folders; ``classical``), in the order they were built."""
        return list(self._segmenters)

    def prepare(self, path: str | Path, stem: str | None = None) -> SelectedImage:
        """Read the image, choose its model by the spacing read, and prepare it for that
        model (:meth:`~mcgenref.inference.segment.Segmenter.prepare_read`)."""
        from mcgenref.io import read_image

        path = Path(path)
        t0 = time.perf_counter()
        raw, meta = read_image(path, pixel_spacing_mm=self.pixel_spacing_mm)
        read_s = time.perf_counter() - t0
        spacing = (float(meta.pixel_spacing_mm[0]), float(meta.pixel_spacing_mm[1]))
        segmenter, choice = self.segmenter_for(spacing)
        prepared = segmenter.prepare_read(path, raw, meta, stem, read_s=read_s, reuse_raw=True)
        return SelectedImage(prepared, segmenter, choice)

    def detect(self, selected: SelectedImage) -> SegmentationResult:
        """Detect with the image's model; its ``model_choice`` goes into the record."""
        result = selected.segmenter.detect(selected.prepared)
        if selected.choice is None:
            return result
        assert selected.segmenter.contract is not None
        record = selected.choice.record(selected.segmenter.contract)
        return dataclasses.replace(result, meta=dataclasses.replace(result.meta,
                                                                    model_choice=record))

    def segment(self, path: str | Path, stem: str | None = None) -> SegmentationResult:
        """One image end to end: :meth:`prepare` + :meth:`detect`."""
        return self.detect(self.prepare(path, stem))

    def settings_for(self, spacing_mm: tuple[float, float]) -> dict[str, Any]:
        """The settings compared on reruns for an image segmented at ``spacing_mm``: those of
        the model it gets (its weights' sha256 and its threshold among them), so a different
        model choice is a different setting."""
        segmenter, _ = self.segmenter_for(spacing_mm, warn=False)
        return segmenter.settings()

    def done_state(self, out_dir: Path, stem: str) -> bool | None:
        """:func:`~mcgenref.inference.segment.is_done` with the settings this image gets now:
        its model is chosen by the spacing its earlier record was segmented at (the same
        spacing now, unless ``--pixel-spacing`` changed, which is itself another setting)."""
        from mcgenref.errors import InputError
        from mcgenref.inference.segment import is_done
        from mcgenref.io.predictions import read_meta

        try:
            previous = read_meta(out_dir, stem)
        except InputError:
            return None
        if previous.pixel_spacing_mm is None:
            return None  # not a record of ours: redo the image
        return is_done(out_dir, stem, self.settings_for(previous.pixel_spacing_mm),
                       write_seg=self.config.write_seg)
