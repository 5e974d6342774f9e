"""Self-describing model folders and training-state checkpoints, with no pickle anywhere.

A **model folder** holds two files:

- ``model.safetensors``: the state dict (``_orig_mod.`` / ``module.`` prefixes from
  ``torch.compile`` / DDP stripped), tensors only, so loading runs no code;
- ``model.json``::

    {"kind": "mcgenref-segmentor", "format_version": 1, "software": "mcgenref 0.1.0",
     "created": "<UTC ISO time>", "model": {<SegmentorConfig>},
     "tensor_contract": {...}, "weights": {"file": "model.safetensors", "sha256": "...",
     "bytes": N, "tensors": K, "parameters": P}, "extra": {...}}

  ``extra`` is whatever the writer knows about the conventions the model expects; the
  trainer stores ``pixel_spacing_mm``, ``intensity`` (the normalisation rule),
  ``patch_size_px``, ``size_multiple`` and a ``training`` summary there (the segmentor's
  ``threshold_logit``; the generator's :class:`~mcgenref.models.generator.GeneratorContract`:
  ``residual_scale``...). A calibrated segmentor also has an ``operating_point``.

**Contracts.** What a user of a model needs from its ``model.json`` is read once, typed:
:func:`load_segmentor` / :func:`segmentor_contract` give a :class:`SegmentorContract`
(pixel spacing, intensity percentiles, size multiple, operating point), and
:func:`load_generator` / :func:`generator_contract` the generator's
:class:`~mcgenref.models.generator.GeneratorContract`. A key the contract needs that is
missing or malformed is one line of :class:`~mcgenref.errors.InputError` naming the file and
the key, never a silent default.

:func:`load_model` refuses pickles (``.pt``, ``.pth``, ``.ckpt``...), checks the sha256 of the
weights against ``model.json`` *before* parsing them, and turns every defect (missing file,
truncation, corruption, wrong kind, shapes that do not fit the described network) into one
line of :class:`~mcgenref.errors.InputError`.

A **training state** (for ``--resume``) is a pair ``training_state.safetensors`` (every
tensor: model, EMA, optimizer moments) + ``training_state.json`` (step, scheduler, scaler,
optimizer hyper-parameters, the safetensors' sha256). Folders are written beside their
destination and renamed into place (:func:`mcgenref.io.atomic.staged_directory`), so a
crash or a full disk mid-write leaves the previous folder intact.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mcgenref
from mcgenref.config import from_dict, to_dict
from mcgenref.errors import ConfigError, InputError
from mcgenref.io.atomic import staged_directory, write_bytes_atomic, write_json_atomic
from mcgenref.models.generator import GeneratorConfig, GeneratorContract, build_generator
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor, size_multiple

__all__ = [
    "GENERATOR_KIND",
    "MODEL_FORMAT_VERSION",
    "MODEL_KIND",
    "OperatingPoint",
    "SegmentorContract",
    "clean_state_dict",
    "find_training_state",
    "flatten_optimizer_state",
    "generator_contract",
    "input_size_multiple",
    "load_generator",
    "load_model",
    "load_segmentor",
    "load_training_state",
    "read_model_meta",
    "save_model",
    "save_training_state",
    "segmentor_contract",
    "trained_pixel_spacing_mm",
    "unflatten_optimizer_state",
    "write_model_files",
]

MODEL_KIND = "mcgenref-segmentor"
GENERATOR_KIND = "mcgenref-generator"
MODEL_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
STATE_KIND = "mcgenref-training-state"
#: Training states written before the generator existed carry this kind; still readable.
_LEGACY_STATE_KINDS = ("mcgenref-segmentor-training-state",)


@dataclass(frozen=True)
class _Kind:
    """What a model folder of one ``kind`` holds: its config class, builder and contract."""

    name: str  # for messages: "segmentor"
    config_cls: type
    build: Callable[[Any], nn.Module]
    contract: Callable[[Any], dict[str, Any]]


def _segmentor_contract(config: SegmentorConfig) -> dict[str, Any]:
    return {
        "input": "float32 [B, 1, H, W], normalised intensity (0 ~ 1st, 1 ~ 99th percentile "
                 "inside the breast); H, W multiples of size_multiple",
        "output": "float32 [B, 1, H, W] logits; sigmoid gives the MC probability",
        "size_multiple": size_multiple(config),
    }


def _generator_contract(config: GeneratorConfig) -> dict[str, Any]:
    return {
        "input": "x_t float32 [B, 1, H, W] (t = 0 noise, t = 1 data), t float32 [B] in [0, 1], "
                 "cond {seed_map [B, 1, H, W] in [0, 1], background [B, 1, H, W] normalised "
                 "intensity}; H, W multiples of size_multiple",
        "output": "float32 [B, 1, H, W], the velocity dx_t/dt",
        "size_multiple": config.size_multiple,
    }


_KINDS: dict[str, _Kind] = {
    MODEL_KIND: _Kind("segmentor", SegmentorConfig, build_segmentor, _segmentor_contract),
    GENERATOR_KIND: _Kind("generator", GeneratorConfig, build_generator, _generator_contract),
}


def _kind_of(model_config: Any) -> str:
    for kind, spec in _KINDS.items():
        if isinstance(model_config, spec.config_cls):
            return kind
    raise TypeError(f"no model kind for a {type(model_config).__name__}")
STATE_FORMAT_VERSION = 1
STATE_JSON = "training_state.json"
STATE_WEIGHTS = "training_state.safetensors"

#: File endings of pickle-based checkpoints: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".pt.tar")
_PREFIXES = ("_orig_mod.", "module.")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies with ``torch.compile`` / DDP wrapper prefixes stripped."""
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safetensors_bytes(tensors: dict[str, torch.Tensor], kind: str) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"kind": kind, "software": f"mcgenref {mcgenref.__version__}"})


def _parse_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(f"{path}: corrupt safetensors file ({exc})") from None


def _read_verified(path: Path, expected_sha: str, expected_bytes: int | None, what: str) -> bytes:
    """Read a file and check its size and sha256 against the record that names it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} file missing: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if expected_bytes is not None and len(data) != expected_bytes:
        state = "truncated" if len(data) < expected_bytes else "longer than recorded"
        raise InputError(
            f"{path}: {what} file is {state} ({len(data)} bytes, expected {expected_bytes}); "
            "the file is damaged, copy it again"
        )
    if _sha256(data) != expected_sha:
        raise InputError(
            f"{path}: sha256 does not match the one recorded beside it; the {what} file is "
            "corrupt or was replaced"
        )
    return data


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} missing: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a JSON text file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _refuse_pickle(path: Path) -> None:
    name = path.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise InputError(f"{path}: pickle files are not loaded, use safetensors (a model folder "
                         "with model.json + model.safetensors)")


# --------------------------------------------------------------------------- model folders


def write_model_files(
    folder: Path,
    model: nn.Module,
    model_config: SegmentorConfig | GeneratorConfig,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.safetensors`` + ``model.json`` into an existing folder; returns the meta.

    The kind (segmentor or generator) follows from the type of ``model_config``. Each file
    is replaced atomically; use :func:`save_model` for an all-or-nothing folder.
    """
    kind = _kind_of(model_config)
    tensors = clean_state_dict(model.state_dict())
    data = _safetensors_bytes(tensors, kind)
    meta = {
        "kind": kind,
        "format_version": MODEL_FORMAT_VERSION,
        "software": f"mcgenref {mcgenref.__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": to_dict(model_config),
        "tensor_contract": _KINDS[kind].contract(model_config),
        "weights": {
            "file": MODEL_WEIGHTS,
            "sha256": _sha256(data),
            "bytes": len(data),
            "tensors": len(tensors),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        "extra": json.loads(json.dumps(extra or {})),
    }
    write_bytes_atomic(folder / MODEL_WEIGHTS, data)
    write_json_atomic(folder / MODEL_JSON, meta)
    return meta


def save_model(
    folder: str | Path,
    model: nn.Module,
    model_config: SegmentorConfig | GeneratorConfig,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a self-describing model folder (see the module docstring), all or nothing.

    Args:
        folder: the model folder to create; an existing non-empty one is refused unless
            ``overwrite`` (then replaced only once the new one is complete).
        model: the network (plain, DDP-wrapped or compiled: prefixes are stripped).
        model_config: the config that rebuilds ``model`` (:func:`build_segmentor` or
            :func:`~mcgenref.models.generator.build_generator`; it also names the kind).
        extra: JSON-able conventions the model expects (pixel spacing, normalisation...).
    """
    folder = Path(folder)
    with staged_directory(folder, overwrite=overwrite) as stage:
        write_model_files(stage, model, model_config, extra)
        stage.chmod(0o755)
    return folder


def _model_json_path(path: Path) -> Path:
    _refuse_pickle(path)
    if path.is_dir():
        return path / MODEL_JSON
    if not path.exists():
        raise InputError(f"model not found: {path}")
    if path.suffix.lower() == ".json":
        return path
    if path.suffix.lower() == ".safetensors":
        return path.with_name(MODEL_JSON)
    raise InputError(
        f"{path}: not a model; give a model folder (model.json + model.safetensors) or its "
        "model.json"
    )


def read_model_meta(path: str | Path, kind: str = MODEL_KIND) -> dict[str, Any]:
    """The checked ``model.json`` of a model folder of ``kind`` (no weights read)."""
    json_path = _model_json_path(Path(path))
    meta = _read_json(json_path, "model.json")
    if meta.get("kind") != kind:
        raise InputError(
            f"{json_path}: not an mcgenref {_KINDS[kind].name} (kind {meta.get('kind')!r}, "
            f"expected {kind!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise InputError(
            f"{json_path}: model format version {version!r} is newer than this mcgenref "
            f"understands ({MODEL_FORMAT_VERSION}); upgrade mcgenref"
        )
    weights = meta.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise InputError(f"{json_path}: model.json has no weights sha256")
    meta["path"] = str(json_path.parent)
    return meta


def load_model(
    path: str | Path, device: str | torch.device = "cpu", kind: str = MODEL_KIND
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its folder (or ``model.json``); returns ``(model.eval(), meta)``.

    ``kind``: :data:`MODEL_KIND` (the segmentor) or :data:`GENERATOR_KIND`; a folder of the
    other kind is refused. The weights' sha256 is verified against ``model.json`` before
    they are parsed. Raises :class:`InputError` with one line for every defect (see the
    module docstring).
    """
    spec = _KINDS[kind]
    meta = read_model_meta(path, kind)
    folder = Path(meta["path"])
    weights = meta["weights"]
    weights_name = str(weights.get("file", MODEL_WEIGHTS))
    weights_path = folder / weights_name
    _refuse_pickle(weights_path)
    if not weights_name.endswith(".safetensors") or Path(weights_name).name != weights_name:
        raise InputError(f"{folder / MODEL_JSON}: weights must be a .safetensors file in the folder")
    try:
        config = from_dict(spec.config_cls, meta.get("model", {}), where="model.json model")
    except ConfigError as exc:
        raise InputError(f"{folder / MODEL_JSON}: {exc}") from None
    data = _read_verified(weights_path, weights["sha256"], weights.get("bytes"), "weights")
    tensors = _parse_safetensors(data, weights_path)
    model = spec.build(config)
    _check_fits(model, tensors, weights_path)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta


def _check_fits(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with the wrong shape (e.g. {k}: {tuple(tensors[k].shape)} vs "
                f"{tuple(expected[k].shape)})"
            )
        raise InputError(
            f"{where}: the weights do not fit the network described in model.json: "
            + "; ".join(parts)
        )


# --------------------------------------------------------------------------- contracts

_MISSING = object()


def _key(meta: Mapping[str, Any], dotted: str) -> Any:
    """``meta["a"]["b"]`` for ``"a.b"``; an InputError naming the file and key if absent."""
    value: Any = meta
    for part in dotted.split("."):
        value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
        if value is _MISSING:
            raise InputError(f"{_json_of(meta)}: model.json has no '{dotted}', which the "
                             "model's contract needs")
    return value


def _json_of(meta: Mapping[str, Any]) -> Path:
    return Path(str(meta.get("path", "."))) / MODEL_JSON


def _number(meta: Mapping[str, Any], dotted: str, cast: type = float) -> Any:
    value = _key(meta, dotted)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{_json_of(meta)}: model.json '{dotted}' must be a number, got {value!r}")
    return cast(value)


def trained_pixel_spacing_mm(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    """``extra.pixel_spacing_mm`` as (row, col) mm; ``None`` where the model records none
    (trained at several spacings: the key is there, its value null)."""
    value = _key(meta, "extra.pixel_spacing_mm")
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                       for v in value)):
        raise InputError(f"{_json_of(meta)}: model.json 'extra.pixel_spacing_mm' must be "
                         f"[row, col] in mm or null, got {value!r}")
    return (float(value[0]), float(value[1]))


def input_size_multiple(meta: Mapping[str, Any]) -> int:
    """Input height and width must be multiples of this (``tensor_contract.size_multiple``,
    which :func:`write_model_files` derives from the network)."""
    value = _number(meta, "tensor_contract.size_multiple", float)
    if value < 1 or value != int(value):
        raise InputError(f"{_json_of(meta)}: model.json 'tensor_contract.size_multiple' must be "
                         f"a positive integer, got {value!r}")
    return int(value)


def _probability(meta: Mapping[str, Any], dotted: str) -> float:
    value = _number(meta, dotted)
    if not 0.0 < value < 1.0:
        raise InputError(f"{_json_of(meta)}: model.json '{dotted}' must be in (0, 1), got {value!r}")
    return value


@dataclass(frozen=True)
class OperatingPoint:
    """The thresholds a segmentor's output is read at.

    Attributes:
        threshold: MC probability threshold of the model: ``operating_point.threshold`` of a
            calibrated model, else the trainer's ``extra.threshold_logit`` as a probability
            (``sigmoid(0) = 0.5`` for the trainer's 0).
        classical_threshold: the classical detector's threshold chosen on the same data by
            the same rule (``operating_point.classical_threshold``); ``None`` if none was.
    """

    threshold: float
    classical_threshold: float | None


@dataclass(frozen=True)
class SegmentorContract:
    """What a segmentor expects of its input and how its output is read (its ``model.json``).

    Attributes:
        name: ``name``, else the folder's name (a label for the outputs' records).
        sha256: of the weights (``weights.sha256``).
        pixel_spacing_mm: (row, col) mm the model was trained at (``extra.pixel_spacing_mm``);
            ``None``: several (images are then segmented at their own spacing).
        intensity_percentiles: (low, high) breast percentiles mapped to 0 and 1
            (``extra.intensity.low_percentile`` / ``high_percentile``).
        size_multiple: input height and width must be multiples of it
            (``tensor_contract.size_multiple``).
        operating_point: see :class:`OperatingPoint`.
    """

    name: str
    sha256: str
    pixel_spacing_mm: tuple[float, float] | None
    intensity_percentiles: tuple[float, float]
    size_multiple: int
    operating_point: OperatingPoint


def segmentor_contract(meta: Mapping[str, Any]) -> SegmentorContract:
    """The :class:`SegmentorContract` of a segmentor's checked ``model.json``
    (:func:`read_model_meta`); one InputError line for a missing or malformed key."""
    if "operating_point" in meta:
        threshold = _probability(meta, "operating_point.threshold")
        point = meta["operating_point"]
        classical = (_probability(meta, "operating_point.classical_threshold")
                     if isinstance(point, Mapping) and "classical_threshold" in point else None)
    else:  # not calibrated: the decision threshold the trainer recorded
        threshold = 1.0 / (1.0 + math.exp(-_number(meta, "extra.threshold_logit")))
        classical = None
    low = _number(meta, "extra.intensity.low_percentile")
    high = _number(meta, "extra.intensity.high_percentile")
    if not 0.0 <= low < high <= 100.0:
        raise InputError(f"{_json_of(meta)}: model.json 'extra.intensity' percentiles must satisfy "
                         f"0 <= low < high <= 100, got {low}, {high}")
    return SegmentorContract(
        name=str(meta.get("name") or Path(str(meta["path"])).name),
        sha256=str(_key(meta, "weights.sha256")),
        pixel_spacing_mm=trained_pixel_spacing_mm(meta),
        intensity_percentiles=(low, high),
        size_multiple=input_size_multiple(meta),
        operating_point=OperatingPoint(threshold=threshold, classical_threshold=classical),
    )


def generator_contract(meta: Mapping[str, Any]) -> GeneratorContract:
    """The :class:`~mcgenref.models.generator.GeneratorContract` of a generator's checked
    ``model.json``; one InputError line for a missing or malformed key."""
    scale = _number(meta, "extra.residual_scale")
    try:
        return GeneratorContract(residual_scale=scale)
    except ValueError as exc:
        raise InputError(f"{_json_of(meta)}: model.json 'extra.residual_scale': {exc}") from None


def load_segmentor(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, SegmentorContract, dict[str, Any]]:
    """A segmentor folder: ``(model.eval(), contract, meta)`` (:func:`load_model`; the
    contract is read before any weights)."""
    contract = segmentor_contract(read_model_meta(path, MODEL_KIND))
    model, meta = load_model(path, device, MODEL_KIND)
    return model, contract, meta


def load_generator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, GeneratorContract, dict[str, Any]]:
    """A generator folder: ``(model.eval(), contract, meta)`` (:func:`load_model`; the
    contract is read before any weights)."""
    meta = read_model_meta(path, GENERATOR_KIND)
    contract = generator_contract(meta)
    model, meta = load_model(path, device, GENERATOR_KIND)
    return model, contract, meta


# --------------------------------------------------------------------------- training state


def flatten_optimizer_state(
    state: dict[str, Any], prefix: str = "optimizer."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = json.loads(json.dumps(state["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars, "indices": [int(i) for i in state["state"]]}


def unflatten_optimizer_state(
    tensors: Mapping[str, torch.Tensor], info: dict[str, Any], prefix: str = "optimizer."
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (a dict for ``load_state_dict``)."""
    state: dict[int, dict[str, Any]] = {int(i): {} for i in info["indices"]}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entry in info["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = []
    for group in info["param_groups"]:
        # JSON turned tuples (AdamW's betas) into lists; give them back their type.
        groups.append({k: tuple(v) if isinstance(v, list) and k != "params" else v
                       for k, v in group.items()})
    return {"state": state, "param_groups": groups}


def save_training_state(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    model: nn.Module | None = None,
    model_config: SegmentorConfig | GeneratorConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a resumable checkpoint folder, replacing the previous one only when complete.

    ``tensors`` go to ``training_state.safetensors``, ``state`` (JSON-able) to
    ``training_state.json`` with the sha256 of the former. If ``model`` is given (the EMA
    network), the folder is also a model folder :func:`load_model` can open.
    """
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    data = _safetensors_bytes(tensors, STATE_KIND)
    record = {
        "kind": STATE_KIND,
        "format_version": STATE_FORMAT_VERSION,
        "software": f"mcgenref {mcgenref.__version__}",
        "tensors": {"file": STATE_WEIGHTS, "sha256": _sha256(data), "bytes": len(data)},
        **json.loads(json.dumps(state)),
    }
    with staged_directory(folder, overwrite=True) as stage:
        write_bytes_atomic(stage / STATE_WEIGHTS, data)
        write_json_atomic(stage / STATE_JSON, record)
        if model is not None and model_config is not None:
            write_model_files(stage, model, model_config, extra)
        stage.chmod(0o755)
    return folder


def find_training_state(folder: str | Path) -> Path | None:
    """The checkpoint folder to resume from: ``folder``, or the previous one a crash during
    the final rename left as ``.NAME.old-PID`` beside it; ``None`` if there is none."""
    folder = Path(folder)
    if (folder / STATE_JSON).is_file():
        return folder
    olds = sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in reversed(olds):
        if (old / STATE_JSON).is_file():
            return old
    return None


def load_training_state(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_training_state` (sha256 checked first)."""
    folder = Path(folder)
    record = _read_json(folder / STATE_JSON, "training state")
    if record.get("kind") not in (STATE_KIND, *_LEGACY_STATE_KINDS):
        raise InputError(f"{folder / STATE_JSON}: not an mcgenref training state")
    if record.get("format_version") != STATE_FORMAT_VERSION:
        raise InputError(f"{folder / STATE_JSON}: unsupported training-state format version")
    info = record["tensors"]
    data = _read_verified(folder / STATE_WEIGHTS, info["sha256"], info.get("bytes"), "training state")
    return _parse_safetensors(data, folder / STATE_WEIGHTS), record
