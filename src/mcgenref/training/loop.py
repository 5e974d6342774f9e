"""The training loop shared by the segmentor and the generator (one loop, two tasks).

:func:`run_training` is one loop you can read top to bottom: data, model, optimiser, EMA,
then ``for step in ...``: the task's loss, backward, AdamW, EMA update, and every so often a
validation metric, a log line and a checkpoint. At the end the EMA weights are exported as a
self-describing model folder. What differs between networks is a :class:`Task`: how to build
the network, turn a synthetic sample into tensors, compute the loss and the validation metric
(:mod:`mcgenref.training.segmentor`, :mod:`mcgenref.training.generator`).

Run folder (``out_dir``)::

    config.json      the resolved config (the format --config accepts)
    run.json         negatives, pixel spacing, world size, software version
    log.jsonl        one line per log step: step, loss, lr, <the task's metric> (or null), seconds
    checkpoint/      training state for --resume (also a loadable model folder of the EMA)
    model/           the final EMA model (model.json + model.safetensors)

Exact resume. Every random choice is a function of the step, so a checkpoint needs no RNG
state: the training samples of step ``s`` on rank ``r`` are indices
``(s * world_size + r) * batch_size + j`` of the synthetic stream (a sample is a pure function
of its index, :func:`mcgenref.synthesis.sample.sample_seed`), the torch RNG (dropout) is
reseeded from ``(seed, s, r)`` before each step, and the task's own draws (flow noise and
times) come from a CPU ``torch.Generator`` seeded the same way (:func:`step_generator`). A
map-style dataset with a batch sampler (rather than the iterable
:class:`~mcgenref.synthesis.dataset.SyntheticMCStream`) keeps that order whatever
``num_workers`` is: the DataLoader returns batches of a map-style dataset in sampler order,
while an iterable stream's worker round-robin makes the consumed prefix depend on the number
of workers. On CPU in deterministic mode, an interrupted run resumed with ``resume=True``
ends with bit-identical weights to an uninterrupted one.

Distributed: started by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) the function
joins the process group (gloo on CPU, nccl on CUDA), wraps the network in
DistributedDataParallel and gives each rank its own samples; ``batch_size`` is per process.
Only rank 0 writes files, logs and shows progress.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import mcgenref
from mcgenref.config import load_config, to_dict
from mcgenref.errors import ConfigError, InputError, McGenRefError, OutputError
from mcgenref.io.atomic import check_writable_dir, write_bytes_atomic, write_json_atomic
from mcgenref.models.checkpoint import (
    find_training_state,
    flatten_optimizer_state,
    load_training_state,
    save_model,
    save_training_state,
    unflatten_optimizer_state,
)
from mcgenref.runtime import (
    Autocast,
    Distributed,
    process_group_backend,
    resolve_device,
    setup_distributed,
    share_error,
    teardown_distributed,
)
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.patches import (
    HardNegativePatchSampler,
    NegativePatchSampler,
    PatchSamplerConfig,
    read_hard_negatives,
)
from mcgenref.synthesis.sample import Sample, generate_sample, sample_seed

# Autocast and resolve_device live in mcgenref.runtime; named here for the tasks' modules
__all__ = [
    "Autocast", "LoopConfig", "Task", "TaskName", "lr_at", "resolve_device", "run_training",
    "step_generator", "task_class",
]


@dataclass(frozen=True)
class LoopConfig:
    """The settings every trainer shares (each task's config adds ``model`` and its own).

    Attributes:
        synthesis: the synthetic data; ``synthesis.patch_size_px`` is the training patch
            side and must be a multiple of the network's size multiple.
        patches: how negative patches are cut.
        procedural_spacing_mm: pixel spacing (row, col) of procedural backgrounds.
        procedural_fraction: fraction of training samples on procedural backgrounds even
            when negatives are given (more texture variety); without negatives all are.
        steps: optimiser steps in the run (the length of the cosine schedule).
        batch_size: samples per step *per process*.
        lr: peak learning rate of AdamW, reached after ``warmup_steps`` (linear warm-up),
            then cosine decay to ``lr * min_lr_fraction`` at ``steps``.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip_norm: clip the gradient's global norm (``None``: no clipping).
        ema_decay: decay of the exponential moving average of the weights (parameters and
            float buffers); it warms up as ``min(ema_decay, (1 + t) / (10 + t))``.
        val_size: samples in the fixed validation set (synthetic, ``val_seed``; on the
            negatives when given).
        val_seed: base seed of the validation set, distinct from ``seed`` so validation
            samples are never training samples.
        val_every, checkpoint_every, log_every: in steps (the last step always does all).
        num_workers: DataLoader worker processes making samples (0: in the main process).
        seed: base seed of the training samples, the initial weights and dropout.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.
        amp: mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16 with
            loss scaling), ``"bf16"``, ``"fp16"`` or ``"none"``. CPU always trains in fp32.
        init_from: a model folder (model.json + model.safetensors) of the same network
            whose weights start the run (fine-tuning); ``None``: fresh weights from ``seed``.
            Its path and weights sha256 are recorded in model.json (``extra.training``).
        hard_negatives_path: a hard-negative file (:func:`mcgenref.synthesis.patches.read_hard_negatives`:
            places on the negatives where a model found false candidates, e.g. mined by
            ``recipes/mine_hard_negatives.py``); ``None``: none.
        hard_negative_fraction: share of each training batch cut around those places
            (:class:`~mcgenref.synthesis.patches.HardNegativePatchSampler`): the first
            ``round(hard_negative_fraction * batch_size)`` samples of every batch. Synthetic
            MCs are inserted into them as into any patch (``synthesis.empty_fraction``
            applies); the point is that the tissue around a false candidate is seen as
            background. Validation never uses them (it stays comparable across runs).
    """

    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    patches: PatchSamplerConfig = field(default_factory=PatchSamplerConfig)
    procedural_spacing_mm: tuple[float, float] = (0.1, 0.1)
    procedural_fraction: float = 0.0
    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_fraction: float = 0.01
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip_norm: float | None = 1.0
    ema_decay: float = 0.999
    val_size: int = 64
    val_seed: int = 1_000_003
    val_every: int = 500
    checkpoint_every: int = 1000
    log_every: int = 10
    num_workers: int = 2
    seed: int = 0
    deterministic: bool = False
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"
    init_from: str | None = None
    hard_negatives_path: str | None = None
    hard_negative_fraction: float = 0.0

    def network_size_multiple(self) -> int:
        """Patch sides must be multiples of this (the network's total stride)."""
        return 1

    def __post_init__(self) -> None:
        from mcgenref.io.spacing import validate_spacing

        validate_spacing(self.procedural_spacing_mm)
        multiple = self.network_size_multiple()
        if self.synthesis.patch_size_px % multiple:
            raise ValueError(
                f"synthesis.patch_size_px {self.synthesis.patch_size_px} must be a multiple of "
                f"{multiple} (the product of the network's strides)"
            )
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("warmup_steps", "val_size", "num_workers", "seed", "val_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError("min_lr_fraction must be in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if not 0.0 <= self.procedural_fraction <= 1.0:
            raise ValueError("procedural_fraction must be in [0, 1]")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError("grad_clip_norm must be > 0 (or null)")
        if not 0.0 <= self.hard_negative_fraction <= 1.0:
            raise ValueError("hard_negative_fraction must be in [0, 1]")
        if self.hard_negative_fraction > 0 and self.hard_negatives_path is None:
            raise ValueError("hard_negative_fraction > 0 needs hard_negatives_path")


class Task(ABC):
    """What one kind of network needs from the loop (see the module docstring).

    Class attributes: ``config_cls`` (the run config, a :class:`LoopConfig` with a ``model``
    field), ``metric`` (the validation metric's key in log.jsonl and the summary, e.g.
    ``val_dice``), ``metric_label`` (for the progress bar), ``n_totals``.
    """

    config_cls: ClassVar[type]
    metric: ClassVar[str]
    metric_label: ClassVar[str]
    n_totals: ClassVar[int]  # length of :meth:`validation_totals`' vector

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised network (from the global torch RNG, seeded by the loop)."""

    @abstractmethod
    def item(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        """The tensors of one synthetic sample (a pure function of ``sample`` and ``index``)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        """The training loss of one batch (already on the device); random draws come from
        ``generator`` (a CPU generator seeded by the step and rank)."""

    @abstractmethod
    def validation_totals(self, model: nn.Module, batch: dict[str, torch.Tensor],
                          generator: torch.Generator, autocast: Autocast) -> torch.Tensor:
        """Float64 sums over one validation batch, summed over batches and ranks by the loop;
        draws from ``generator`` (seeded by the batch's position in the validation set)."""

    @abstractmethod
    def metric_value(self, totals: torch.Tensor) -> float:
        """The validation metric from the summed totals."""

    def extra(self) -> dict[str, Any]:
        """Task-specific conventions for model.json's ``extra``."""
        return {}


def step_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of training step/rank ``index`` (or validation batch) of a run."""
    return torch.Generator().manual_seed(sample_seed(seed, index))


def lr_at(step: int, config: LoopConfig, total_steps: int) -> float:
    """Learning rate of (0-based) step ``step``: linear warm-up, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    low = config.lr * config.min_lr_fraction
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.lerp_(m, 1.0 - decay)
        else:  # BatchNorm's num_batches_tracked
            e.copy_(m)


# --------------------------------------------------------------------------- data


class _Samples(Dataset):
    """Sample ``index`` of the run with base seed ``seed`` (a pure function of it), as the
    task's tensors, on a negative or a procedural background."""

    def __init__(self, task: Task, sampler: NegativePatchSampler | None, seed: int,
                 procedural_fraction: float, hard_sampler: HardNegativePatchSampler | None = None,
                 hard_per_batch: int = 0) -> None:
        self.task = task
        self.config = task.config
        self.sampler = sampler
        self.seed = seed
        self.procedural_fraction = procedural_fraction
        self.hard_sampler = hard_sampler
        self.hard_per_batch = hard_per_batch if hard_sampler is not None else 0

    def hard_negative(self, index: int) -> bool:
        """The first ``hard_per_batch`` samples of every batch (:class:`_StepBatches`: a
        batch's indices start at a multiple of ``batch_size``) are cut around hard negatives."""
        return index % self.config.batch_size < self.hard_per_batch

    def __len__(self) -> int:
        return 2**62

    def procedural(self, index: int) -> bool:
        if self.sampler is None:
            return True
        if self.procedural_fraction <= 0.0:
            return False
        draw = np.random.default_rng([self.seed, index, 0x5EED]).random()
        return bool(draw < self.procedural_fraction)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.hard_negative(index):
            sampler = self.hard_sampler
        else:
            sampler = None if self.procedural(index) else self.sampler
        sample = generate_sample(
            sample_seed(self.seed, index), self.config.synthesis, sampler,
            self.config.procedural_spacing_mm, index=index,
        )
        return self.task.item(sample, index)


class _StepBatches(Sampler[list[int]]):
    """The sample indices of each step ``start_step <= s < stop_step`` on one rank."""

    def __init__(self, start_step: int, stop_step: int, batch_size: int, rank: int, world_size: int) -> None:
        self.start_step, self.stop_step = start_step, stop_step
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.stop_step):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def _validation_batches(
    task: Task, sampler: NegativePatchSampler | None, rank: int, world_size: int
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """This rank's share of the fixed validation set, made once and kept in memory, as
    (index of the batch's first sample, batch)."""
    config = task.config
    dataset = _Samples(task, sampler, config.val_seed, 0.0)
    indices = list(range(rank, config.val_size, world_size))
    batches = []
    for k in range(0, len(indices), config.batch_size):
        chunk = [dataset[i] for i in indices[k : k + config.batch_size]]
        batches.append((indices[k], {key: torch.stack([c[key] for c in chunk]) for key in chunk[0]}))
    return batches


@torch.no_grad()
def _validate(
    task: Task, model: nn.Module, batches: list[tuple[int, dict[str, torch.Tensor]]],
    device: torch.device, autocast: Autocast, world_size: int,
) -> float:
    """The task's metric over the whole validation set (all ranks)."""
    model.eval()
    totals = torch.zeros(task.n_totals, dtype=torch.float64, device=device)
    for first, batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        part = task.validation_totals(model, batch, step_generator(task.config.val_seed, first), autocast)
        totals = totals + part.to(device, torch.float64)
    if world_size > 1:
        dist.all_reduce(totals)
    return task.metric_value(totals.cpu())


# --------------------------------------------------------------------------- setup helpers


def _model_extra(task: Task, sampler: NegativePatchSampler | None) -> dict[str, Any]:
    """The conventions the model expects, stored in model.json's ``extra``."""
    config = task.config
    if sampler is None:
        spacings = {tuple(config.procedural_spacing_mm)}
    else:
        spacings = {tuple(n.spacing_mm) for n in sampler.negatives}
        if config.procedural_fraction > 0:
            spacings.add(tuple(config.procedural_spacing_mm))
    return {
        "pixel_spacing_mm": list(next(iter(spacings))) if len(spacings) == 1 else None,
        "pixel_spacings_mm_seen": sorted(list(s) for s in spacings),
        "intensity": {
            "rule": "v = (x - low) / (high - low) inside the breast",
            "low_percentile": config.patches.low_percentile,
            "high_percentile": config.patches.high_percentile,
            "exclude_pectoral": config.patches.exclude_pectoral,
        },
        "patch_size_px": config.synthesis.patch_size_px,
        "size_multiple": config.network_size_multiple(),
        **task.extra(),
    }


def _hard_negatives(
    config: LoopConfig, sampler: NegativePatchSampler | None
) -> tuple[HardNegativePatchSampler | None, dict[str, Any] | None]:
    """The hard-negative sampler of the run and its record (path, sha256, centres used)."""
    if config.hard_negatives_path is None or config.hard_negative_fraction <= 0:
        return None, None
    if sampler is None:
        raise ConfigError("hard negatives need negatives (they are places on them)")
    path = Path(config.hard_negatives_path)
    centres = read_hard_negatives(path)
    hard = HardNegativePatchSampler(sampler, centres)
    return hard, {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "fraction": config.hard_negative_fraction,
        **hard.describe(),
    }


def _load_initial_weights(net: nn.Module, config: LoopConfig) -> dict[str, Any]:
    """Copy the weights of the model folder ``config.init_from`` into ``net``; the folder's
    network must be the config's (``model.json`` ``model`` equal to ``config.model``)."""
    from mcgenref.models.checkpoint import GENERATOR_KIND, MODEL_KIND, load_model
    from mcgenref.models.segmentor import SegmentorConfig

    kind = MODEL_KIND if isinstance(config.model, SegmentorConfig) else GENERATOR_KIND
    try:
        model, meta = load_model(config.init_from, "cpu", kind)
    except InputError as exc:
        raise ConfigError(f"init_from: {exc}") from None
    if meta.get("model") != json.loads(json.dumps(to_dict(config.model))):
        raise ConfigError(f"init_from {config.init_from}: its network (model.json 'model') "
                          "differs from the config's 'model'")
    net.load_state_dict(model.state_dict())
    return {"path": str(Path(meta["path"]).resolve()), "weights_sha256": meta["weights"]["sha256"]}


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after the checkpoint (an interrupted run logged past it)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    write_bytes_atomic(path, ("\n".join(keep) + "\n").encode() if keep else b"")


def _progress_bar(enabled: bool, metric_label: str):
    from mcgenref.progress import progress_bar

    return progress_bar(
        "training", "loss {task.fields[loss]}  " + metric_label + " {task.fields[metric]}", enabled
    )


def _spacing_pair(value: Any) -> tuple[float, float] | None:
    from mcgenref.io.spacing import validate_spacing

    return None if value is None else validate_spacing(value)


def _prepare_run_folder(
    config_cls: type, out_dir: Path, config: Any, negatives: list[str] | None,
    pixel_spacing_mm: Any, resume: bool, steps: int | None, check_empty: bool = True,
) -> tuple[Any, list[str] | None, Any, Path | None]:
    """Resolve the config and inputs of a new or resumed run; returns the checkpoint to load."""
    checkpoint = find_training_state(out_dir / "checkpoint") if resume else None
    if checkpoint is None:
        if check_empty and not resume and out_dir.is_dir() and any(out_dir.iterdir()):
            raise OutputError(
                f"run folder {out_dir} exists and is not empty (use --resume to continue it, "
                "or choose a new --out)"
            )
        config = config or config_cls()
        if not negatives and pixel_spacing_mm is not None:
            # as in `mcgenref synth`: without negatives the spacing is the procedural one
            config = dataclasses.replace(config, procedural_spacing_mm=_spacing_pair(pixel_spacing_mm))
    else:
        stored = load_config(config_cls, out_dir / "config.json")
        try:
            run = json.loads((out_dir / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot resume: {out_dir / 'run.json'} is unreadable ({exc})") from None
        if config is not None and dataclasses.replace(config, steps=stored.steps) != stored:
            raise ConfigError(
                f"the config differs from {out_dir / 'config.json'}; resume without --config "
                "(only --steps may change)"
            )
        if negatives is not None and negatives != run["negatives"]:
            raise ConfigError(f"--negatives differ from the run's ({out_dir / 'run.json'})")
        negatives = run["negatives"]
        stored_spacing = run["pixel_spacing_mm"]
        if isinstance(stored_spacing, list):
            stored_spacing = tuple(stored_spacing)
        if pixel_spacing_mm is not None and _spacing_pair(pixel_spacing_mm) != _spacing_pair(stored_spacing):
            raise ConfigError(f"--pixel-spacing differs from the run's ({out_dir / 'run.json'})")
        pixel_spacing_mm = stored_spacing
        config = stored
    if steps is not None:
        if steps < 1:
            raise ConfigError("--steps must be at least 1")
        config = dataclasses.replace(config, steps=steps)
    return config, negatives, pixel_spacing_mm, checkpoint


# --------------------------------------------------------------------------- the loop


TaskName = Literal["segmentor", "generator"]


def task_class(task: TaskName | type[Task]) -> type[Task]:
    """The :class:`Task` that ``task`` names (a :class:`Task` subclass is returned as is)."""
    if isinstance(task, type) and issubclass(task, Task):
        return task
    # imported here: each task's module imports this one, and training one network need not
    # import the other's stack
    if task == "segmentor":
        from mcgenref.training.segmentor import SegmentorTask

        return SegmentorTask
    if task == "generator":
        from mcgenref.training.generator import GeneratorTask

        return GeneratorTask
    raise ValueError(f"unknown training task {task!r}: expected 'segmentor' or 'generator'")


def run_training(
    task: TaskName | type[Task],
    out_dir: str | Path,
    negatives: Sequence[str | Path] | None = None,
    config: LoopConfig | None = None,
    *,
    device: str | torch.device = "auto",
    steps: int | None = None,
    resume: bool = False,
    pixel_spacing_mm: float | tuple[float, float] | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Train a network on synthetic MCs; write the run folder (module docstring).

    The one way to train in the library, for both networks; ``mcgenref train-segmentor`` and
    ``train-generator`` call it (through :func:`mcgenref.workflows.run_train`).

    Args:
        task: ``"segmentor"`` (:class:`~mcgenref.training.segmentor.SegmentorTask`),
            ``"generator"`` (:class:`~mcgenref.training.generator.GeneratorTask`) or a
            :class:`Task` subclass (see :func:`task_class`).
        out_dir: the run folder; must be new or empty unless ``resume``.
        negatives: normal mammograms (files or folders) for backgrounds; ``None`` or empty
            trains on procedural backgrounds only. On resume ``None`` reuses the run's.
        config: the run config, an instance of the task's ``config_cls``
            (:class:`~mcgenref.training.segmentor.TrainSegmentorConfig`,
            :class:`~mcgenref.training.generator.TrainGeneratorConfig`); ``None`` means the
            defaults, or, with ``resume``, the run's own ``config.json`` (a different config is
            refused when resuming).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        steps: overrides ``config.steps`` (the schedule's length).
        resume: continue from ``out_dir/checkpoint`` (a fresh start if there is none yet).
        pixel_spacing_mm: spacing of the negatives where their files record none; without
            negatives, that of the procedural backgrounds.
        progress: show a progress bar (rank 0 only).
        stop_at_step: stop after this step as if interrupted (a checkpoint is written, no
            final model): for time-limited jobs, and to test resuming.

    Returns:
        A summary: ``run_dir``, ``model_dir`` (``None`` if stopped early), ``step``,
        ``steps``, ``loss``, the task's metric (``val_dice`` for the segmentor: Dice at
        probability 0.5; ``val_loss`` for the generator: the validation rectified-flow loss,
        lower is better), ``val_history`` [(step, metric)], ``seconds``,
        ``steps_per_second`` (this session), ``device``, ``world_size``, ``resumed_from``.

    Raises:
        ValueError: ``task`` names no task.
        TypeError: ``config`` is not the task's config class.
        McGenRefError: bad input (its subclasses; one line each).
    """
    from mcgenref.io import list_images

    task_cls = task_class(task)
    if config is not None and not isinstance(config, task_cls.config_cls):
        raise TypeError(
            f"config is a {type(config).__name__}; the {task_cls.__name__} trains with a "
            f"{task_cls.config_cls.__name__}"
        )

    out_dir = Path(out_dir)
    paths = [str(p) for p in list_images([Path(p) for p in negatives])] if negatives else None
    ddp = setup_distributed(process_group_backend(str(device)))
    main_process = ddp.is_main
    error: McGenRefError | None = None
    try:
        device = resolve_device(device, ddp.local_rank)
        config, paths, pixel_spacing_mm, checkpoint = _prepare_run_folder(
            task_cls.config_cls, out_dir, config, paths, pixel_spacing_mm, resume, steps, check_empty=main_process
        )
        if main_process:
            check_writable_dir(out_dir)
    except McGenRefError as exc:
        error = exc
    # some checks run on rank 0 only (the run folder): every rank learns of a failure
    error = share_error(error, ddp)
    if error is not None:
        teardown_distributed(ddp, synchronised=False)
        raise error
    total_steps = config.steps
    autocast = Autocast.for_device(device, config.amp)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    # the global torch RNG is used (init, dropout) but restored for the caller afterwards
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    finished = False
    try:
        with torch.random.fork_rng(devices=rng_devices):
            summary = _train(task_cls(config), paths, pixel_spacing_mm, out_dir, device, ddp, autocast,
                             checkpoint, total_steps, progress, stop_at_step)
        if main_process:
            # folders left by a process killed while it wrote a checkpoint (the run is
            # finished or stopped cleanly now, so nothing else is writing them)
            for stale in (*out_dir.glob(".checkpoint.partial-*"), *out_dir.glob(".checkpoint.old-*"),
                          *out_dir.glob(".model.partial-*")):
                shutil.rmtree(stale, ignore_errors=True)
        finished = True
        return summary
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        # after a normal end the ranks wait for each other before the group goes
        teardown_distributed(ddp, synchronised=finished)


def _train(
    task: Task, paths: list[str] | None, pixel_spacing_mm: Any, out_dir: Path,
    device: torch.device, ddp: Distributed, autocast: Autocast, checkpoint: Path | None,
    total_steps: int, progress: bool, stop_at_step: int | None,
) -> dict[str, Any]:
    config = task.config
    main_process = ddp.is_main
    session_start = time.perf_counter()

    # ---- data: negatives (or procedural), training samples by step, fixed validation set
    sampler = None
    if paths:
        sampler = NegativePatchSampler(
            paths, config.synthesis.patch_size_px, config.patches, pixel_spacing_mm=pixel_spacing_mm
        )
    val_batches = _validation_batches(task, sampler, ddp.rank, ddp.world_size)
    hard_sampler, hard_record = _hard_negatives(config, sampler)

    # ---- model, EMA, optimiser, loss scaling
    torch.manual_seed(config.seed)
    net = task.build().to(device)
    init_record = None
    if config.init_from is not None:
        init_record = _load_initial_weights(net, config)
    ema = copy.deepcopy(net).requires_grad_(False)
    model = nn.parallel.DistributedDataParallel(net) if ddp.world_size > 1 else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast.dtype == torch.float16)

    # ---- resume: everything else is a function of the step
    step, seconds_before, val_history, resumed_from = 0, 0.0, [], None
    if checkpoint is not None:
        tensors, record = load_training_state(checkpoint)
        if record["world_size"] != ddp.world_size:
            raise ConfigError(
                f"the run was trained with {record['world_size']} process(es); resume it with "
                f"the same number (got {ddp.world_size})"
            )
        net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, record["optimizer"]))
        if record.get("scaler"):
            scaler.load_state_dict(record["scaler"])
        step, seconds_before = record["step"], record["seconds"]
        val_history = [tuple(v) for v in record["val_history"]]
        resumed_from = step

    # ---- run folder (rank 0)
    log_path = out_dir / "log.jsonl"
    if resumed_from is not None and hard_record is not None:
        before = json.loads((out_dir / "run.json").read_text()).get("hard_negatives") or {}
        if before.get("sha256") != hard_record["sha256"]:
            raise ConfigError(f"{config.hard_negatives_path} changed since the run started; "
                              "resume with the same hard-negative file")
    if main_process:
        write_json_atomic(out_dir / "config.json", to_dict(config))
        write_json_atomic(out_dir / "run.json", {
            "software": f"mcgenref {mcgenref.__version__}",
            "negatives": paths,
            "pixel_spacing_mm": pixel_spacing_mm,
            "world_size": ddp.world_size,
            "device": device.type,
            "amp": str(autocast.dtype).replace("torch.", "") if autocast.enabled else "none",
            "init_from": init_record,
            "hard_negatives": hard_record,
        })
        if resumed_from is not None:
            _truncate_log(log_path, step)
        elif log_path.exists():
            log_path.unlink()
    extra = _model_extra(task, sampler)

    def save_checkpoint() -> None:
        opt_tensors, opt_info = flatten_optimizer_state(optimizer.state_dict())
        tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
        tensors |= opt_tensors
        state = {
            "step": step,
            "samples_seen": step * config.batch_size * ddp.world_size,
            "seconds": seconds,
            "world_size": ddp.world_size,
            "optimizer": opt_info,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "val_history": val_history,
        }
        save_training_state(out_dir / "checkpoint", tensors, state, ema, config.model,
                            {**extra, "training": {"step": step, "ema": True, "init_from": init_record,
                                                   "hard_negatives": hard_record}})

    stop = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    hard_per_batch = round(config.hard_negative_fraction * config.batch_size)
    loader = DataLoader(
        _Samples(task, sampler, config.seed, config.procedural_fraction, hard_sampler, hard_per_batch),
        batch_sampler=_StepBatches(step, stop, config.batch_size, ddp.rank, ddp.world_size),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )
    loss_sum = torch.zeros((), device=device)
    loss_count, last_loss, val_metric = 0, float("nan"), (val_history[-1][1] if val_history else None)
    seconds = seconds_before
    first_step = step

    with _progress_bar(progress and main_process, task.metric_label) as bar:
        bar_task = bar.add_task("train", total=total_steps, completed=step, loss="-",
                                metric=f"{val_metric:.3f}" if val_metric is not None else "-")
        for batch in loader:
            # ---- one optimisation step
            torch.manual_seed(sample_seed(config.seed, step * ddp.world_size + ddp.rank))
            lr = lr_at(step, config, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            model.train()
            loss = task.loss(
                model, batch, step_generator(config.seed, step * ddp.world_size + ddp.rank), autocast
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            _ema_update(ema, net, min(config.ema_decay, (1 + step) / (10 + step)))
            loss_sum += loss.detach()
            loss_count += 1

            # ---- every so often: validation, log line, checkpoint
            last = step == stop
            do_val = step % config.val_every == 0 or last
            do_ckpt = step % config.checkpoint_every == 0 or last
            if do_val:
                val_metric = _validate(task, ema, val_batches, device, autocast, ddp.world_size)
                val_history.append((step, val_metric))
            if step % config.log_every == 0 or do_val or do_ckpt:
                if ddp.world_size > 1:
                    dist.all_reduce(loss_sum)
                    loss_sum /= ddp.world_size
                last_loss = float(loss_sum) / loss_count
                loss_sum.zero_()
                loss_count = 0
                seconds = seconds_before + time.perf_counter() - session_start
                if main_process:
                    with log_path.open("a") as fh:
                        fh.write(json.dumps({
                            "step": step, "loss": round(last_loss, 6), "lr": lr,
                            task.metric: round(val_metric, 6) if do_val else None,
                            "seconds": round(seconds, 3),
                        }) + "\n")
                bar.update(bar_task, completed=step, loss=f"{last_loss:.4f}",
                           metric=f"{val_metric:.3f}" if val_metric is not None else "-")
            if do_ckpt and main_process:
                save_checkpoint()

    # ---- the result: the EMA weights as a self-describing model folder
    model_dir = None
    if step >= total_steps and main_process:
        extra["training"] = {
            "steps": step, "batch_size": config.batch_size, "world_size": ddp.world_size,
            task.metric: val_metric, "seed": config.seed, "ema_decay": config.ema_decay,
            "backgrounds": "negatives" if sampler is not None else "procedural",
            "init_from": init_record,
            "hard_negatives": None if hard_record is None else {
                **hard_record, "per_batch": hard_per_batch,
            },
        }
        model_dir = save_model(out_dir / "model", ema, config.model, extra, overwrite=True)
    session_seconds = time.perf_counter() - session_start
    return {
        "run_dir": str(out_dir),
        "model_dir": str(model_dir) if model_dir is not None else None,
        "step": step,
        "steps": total_steps,
        "loss": last_loss,
        task.metric: val_metric,
        "val_history": [list(v) for v in val_history],
        "seconds": seconds_before + session_seconds,
        "steps_per_second": (step - first_step) / session_seconds if session_seconds > 0 else 0.0,
        "device": str(device),
        "world_size": ddp.world_size,
        "resumed_from": resumed_from,
    }
