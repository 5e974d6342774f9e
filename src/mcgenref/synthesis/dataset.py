"""Synthetic pairs for training: on the fly (torch datasets) or written to disk.

On the fly (the default for training): sample ``i`` of a run is always
``generate_sample(sample_seed(base_seed, i), ...)``, whichever process makes it. So

- :class:`SyntheticMCDataset` (map-style, finite) gives the same sample for an index in any
  worker, and the DataLoader's sampler hands each index to exactly one worker;
- :class:`SyntheticMCStream` (iterable, endless) splits the index stream by DataLoader worker
  and by distributed rank (index ``start + k`` goes to stream ``k mod (workers * ranks)``), so
  no two workers or ranks ever make the same sample, and ``start`` resumes a run exactly.

On disk (:func:`write_dataset`): ``images/NNNNNN.png`` (16-bit; intensity mapping below),
``masks/NNNNNN.png`` (8-bit, 0 and 255 only), ``manifest.jsonl`` (one record per sample, see
:mod:`mcgenref.synthesis.sample`), ``config.json`` (the resolved run config, the same format
``--config`` accepts), ``dataset.json`` (provenance, the intensity mapping and ``masks``: how
many masks are empty, how many patches were drawn empty, redrawn or left exhausted) and
``preview.png``. The folder is built beside its destination and moved into place only when
complete.

PNG intensity mapping: normalised intensity ``v`` is stored as
``round(clip((v - PNG_VALUE_MIN) / (PNG_VALUE_MAX - PNG_VALUE_MIN), 0, 1) * 65535)`` and read
back by :func:`png_to_intensity`. The range [-0.5, 2.0] holds the breast's 1st-99th
percentile span [0, 1] with room for the brightest tissue plus MC signal, at a step of
3.8e-5, far below the image noise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

import mcgenref
from mcgenref.config import to_dict
from mcgenref.errors import ConfigError
from mcgenref.io.atomic import (
    staged_directory,
    write_bytes_atomic,
    write_json_atomic,
    write_png_atomic,
)
from mcgenref.io.display import display_uint8
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.patches import NegativePatchSampler, PatchSamplerConfig
from mcgenref.synthesis.sample import Sample, generate_sample, sample_seed

PNG_VALUE_MIN = -0.5
PNG_VALUE_MAX = 2.0


@dataclass(frozen=True)
class SynthRunConfig:
    """Everything ``mcgenref synth`` needs besides its inputs (the ``--config`` JSON format).

    Attributes:
        synthesis: the image-formation model.
        patches: how negative patches are cut.
        procedural_spacing_mm: pixel spacing (row, col) of procedural backgrounds, used when
            no negatives are given; 0.1 mm is a typical FFDM detector.
        preview_count: samples shown in ``preview.png``.
    """

    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    patches: PatchSamplerConfig = field(default_factory=PatchSamplerConfig)
    procedural_spacing_mm: tuple[float, float] = (0.1, 0.1)
    preview_count: int = 6

    def __post_init__(self) -> None:
        from mcgenref.io.spacing import validate_spacing

        validate_spacing(self.procedural_spacing_mm)
        if not 0 <= self.preview_count <= 100:
            raise ValueError("preview_count must be between 0 and 100")


def intensity_to_png(image: np.ndarray) -> np.ndarray:
    scaled = (image.astype(np.float64) - PNG_VALUE_MIN) / (PNG_VALUE_MAX - PNG_VALUE_MIN)
    return np.round(np.clip(scaled, 0.0, 1.0) * 65535.0).astype(np.uint16)


def png_to_intensity(png: np.ndarray) -> np.ndarray:
    return (png.astype(np.float32) / 65535.0) * (PNG_VALUE_MAX - PNG_VALUE_MIN) + PNG_VALUE_MIN


def _to_tensors(sample: Sample) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32))[None],
        "mask": torch.from_numpy(sample.mask.astype(np.float32))[None],
        "seed": sample.record["seed"],
        "index": sample.record["index"],
    }


class SyntheticMCDataset(Dataset):
    """A finite, indexable set of synthetic pairs made on demand (e.g. a validation set).

    Items are dicts: ``image`` float32 [1, H, W], ``mask`` float32 [1, H, W] in {0, 1},
    ``seed`` and ``index`` (ints).
    """

    def __init__(
        self,
        length: int,
        base_seed: int,
        config: SynthesisConfig,
        sampler: NegativePatchSampler | None = None,
        procedural_spacing_mm: tuple[float, float] = (0.1, 0.1),
    ) -> None:
        self.length = int(length)
        self.base_seed = int(base_seed)
        self.config = config
        self.sampler = sampler
        self.procedural_spacing_mm = procedural_spacing_mm

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return generate_sample(
            sample_seed(self.base_seed, index), self.config, self.sampler,
            self.procedural_spacing_mm, index=index,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _to_tensors(self.sample(index))


class SyntheticMCStream(IterableDataset):
    """An endless stream of synthetic pairs, split across workers and ranks (no duplicates).

    Args:
        start: the first sample index (to resume a run: the number of samples already used).
        rank, world_size: this process's share in distributed training; by default read
            from ``torch.distributed`` when it is initialised, else (0, 1).
        stop: optional end index (exclusive), for tests and finite runs.
    """

    def __init__(
        self,
        base_seed: int,
        config: SynthesisConfig,
        sampler: NegativePatchSampler | None = None,
        procedural_spacing_mm: tuple[float, float] = (0.1, 0.1),
        start: int = 0,
        stop: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.base_seed = int(base_seed)
        self.config = config
        self.sampler = sampler
        self.procedural_spacing_mm = procedural_spacing_mm
        self.start = int(start)
        self.stop = stop
        if rank is None or world_size is None:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank, world_size = dist.get_rank(), dist.get_world_size()
            else:
                rank, world_size = 0, 1
        self.rank, self.world_size = int(rank), int(world_size)

    def indices(self) -> Iterator[int]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        streams = n_workers * self.world_size
        stream = self.rank * n_workers + worker
        index = self.start + stream
        while self.stop is None or index < self.stop:
            yield index
            index += streams

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in self.indices():
            sample = generate_sample(
                sample_seed(self.base_seed, index), self.config, self.sampler,
                self.procedural_spacing_mm, index=index,
            )
            yield _to_tensors(sample)


def contact_sheet(samples: list[Sample], gap: int = 4) -> np.ndarray:
    """RGB uint8 sheet: one row per sample with image | mask | overlay (mask outline in red)."""
    from scipy import ndimage

    tiles = []
    for s in samples:
        gray = display_uint8(s.image)
        img = np.repeat(gray[..., None], 3, axis=2)
        mask = np.repeat((s.mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        overlay = img.copy()
        m = s.mask.astype(bool)
        edge = m & ~ndimage.binary_erosion(m)
        overlay[edge | (m & (s.mask.sum() < 50))] = (255, 40, 40)
        row = [img, mask, overlay]
        h = gray.shape[0]
        spacer = np.full((h, gap, 3), 255, np.uint8)
        tiles.append(np.concatenate([row[0], spacer, row[1], spacer, row[2]], axis=1))
    width = max(t.shape[1] for t in tiles)
    rows = []
    for t in tiles:
        pad = np.full((t.shape[0], width - t.shape[1], 3), 255, np.uint8)
        rows.append(np.concatenate([t, pad], axis=1))
        rows.append(np.full((gap, width, 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def write_dataset(
    out: str | Path,
    count: int,
    base_seed: int,
    run_config: SynthRunConfig,
    sampler: NegativePatchSampler | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``count`` samples to the folder ``out`` (layout in the module docstring).

    The folder appears only when complete; on any error nothing is left behind and an
    existing ``out`` is untouched. The same arguments give byte-identical files.
    """
    if count < 1:
        raise ConfigError("--count must be at least 1")
    if count > 999_999:
        raise ConfigError("--count must be at most 999999")
    out = Path(out)
    with staged_directory(out, overwrite=overwrite) as stage:
        (stage / "images").mkdir()
        (stage / "masks").mkdir()
        preview: list[Sample] = []
        fallback: list[Sample] = []
        lines = []
        masks = {"empty_masks": 0, "drawn_empty": 0, "redraws_exhausted": 0, "redraws": 0,
                 "background_redraws": 0}
        for index in range(count):
            sample = generate_sample(
                sample_seed(base_seed, index), run_config.synthesis, sampler,
                run_config.procedural_spacing_mm, index=index,
            )
            name = f"{index:06d}.png"
            write_png_atomic(stage / "images" / name, intensity_to_png(sample.image))
            write_png_atomic(stage / "masks" / name, (sample.mask > 0).astype(np.uint8) * 255)
            record = dict(sample.record)
            record["image"] = f"images/{name}"
            record["mask"] = f"masks/{name}"
            lines.append(json.dumps(record, sort_keys=False))
            masks["empty_masks"] += int(record["mask_pixels"] == 0)
            masks["drawn_empty"] += int(record["params"]["kind"] == "empty")
            masks["redraws_exhausted"] += int(record["redraws_exhausted"])
            masks["redraws"] += int(record["redraws"])
            masks["background_redraws"] += int(record["background_redraws"])
            # the preview prefers samples with visible MCs, and shows others if there are none
            if sample.record["n_visible"] > 0 and len(preview) < run_config.preview_count:
                preview.append(sample)
            elif len(fallback) < run_config.preview_count:
                fallback.append(sample)
            if progress is not None:
                progress(index + 1)
        write_bytes_atomic(stage / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
        write_json_atomic(stage / "config.json", to_dict(run_config))
        write_json_atomic(
            stage / "dataset.json",
            {
                "format_version": 1,
                "software": f"mcgenref {mcgenref.__version__}",
                "count": count,
                "base_seed": base_seed,
                "backgrounds": "negatives" if sampler is not None else "procedural",
                "negatives": sampler.describe() if sampler is not None else None,
                "png_intensity_mapping": {
                    "value_min": PNG_VALUE_MIN,
                    "value_max": PNG_VALUE_MAX,
                    "rule": "png = round(clip((v - value_min) / (value_max - value_min), 0, 1) * 65535)",
                },
                "mask_values": [0, 255],
                # empty masks = drawn empty + exhausted redraws (see mcgenref.synthesis.sample)
                "masks": {**masks, "empty_fraction": masks["empty_masks"] / count,
                          "configured_empty_fraction": run_config.synthesis.empty_fraction},
            },
        )
        preview = (preview + fallback)[: run_config.preview_count]
        if preview:
            write_png_atomic(stage / "preview.png", contact_sheet(preview))
        for d in ("images", "masks"):
            os.chmod(stage / d, 0o755)
        os.chmod(stage, 0o755)
    return out
