"""On-the-fly datasets (no duplicates across workers) and the on-disk writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mcgenref.config import from_dict
from mcgenref.errors import OutputError
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.dataset import (
    SynthRunConfig,
    SyntheticMCDataset,
    SyntheticMCStream,
    intensity_to_png,
    png_to_intensity,
    write_dataset,
)

CFG = SynthesisConfig(patch_size_px=48)
RUN = SynthRunConfig(synthesis=CFG, preview_count=2)


def test_png_mapping_round_trip() -> None:
    v = np.linspace(-0.4, 1.9, 101, dtype=np.float32)
    assert np.abs(png_to_intensity(intensity_to_png(v)) - v).max() < 2e-5


def test_map_dataset_is_deterministic_per_index() -> None:
    ds = SyntheticMCDataset(4, base_seed=3, config=CFG)
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (1, 48, 48)
    assert not torch.equal(ds[1]["image"], ds[2]["image"])
    assert set(torch.unique(a["mask"]).tolist()) <= {0.0, 1.0}
    with pytest.raises(IndexError):
        ds.sample(4)


def test_stream_splits_workers_without_duplicates() -> None:
    single = [int(x["index"]) for x in SyntheticMCStream(1, CFG, stop=8)]
    assert single == list(range(8))
    loader = DataLoader(SyntheticMCStream(1, CFG, stop=8), batch_size=None, num_workers=2)
    items = list(loader)
    assert sorted(int(x["index"]) for x in items) == list(range(8))
    ref = {int(x["index"]): x for x in SyntheticMCStream(1, CFG, stop=8)}
    for x in items:  # a worker makes exactly what a single process makes for that index
        assert torch.equal(x["image"], ref[int(x["index"])]["image"])


def test_stream_ranks_and_resume() -> None:
    r0 = [int(x["index"]) for x in SyntheticMCStream(0, CFG, stop=10, rank=0, world_size=2)]
    r1 = [int(x["index"]) for x in SyntheticMCStream(0, CFG, stop=10, rank=1, world_size=2)]
    assert r0 == [0, 2, 4, 6, 8] and r1 == [1, 3, 5, 7, 9]
    resumed = [int(x["index"]) for x in SyntheticMCStream(0, CFG, start=6, stop=9)]
    assert resumed == [6, 7, 8]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_write_dataset_layout_and_determinism(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", 5, 11, RUN)
    b = write_dataset(tmp_path / "b", 5, 11, RUN)
    assert _digest(a) == _digest(b)
    names = sorted(p.name for p in (a / "images").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    records = [json.loads(line) for line in (a / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(5))
    for r in records:
        img = np.asarray(Image.open(a / r["image"]))
        mask = np.asarray(Image.open(a / r["mask"]))
        assert img.dtype == np.uint16 and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert int((mask > 0).sum()) == r["mask_pixels"]
    # config.json is the --config format and round-trips
    cfg = from_dict(SynthRunConfig, json.loads((a / "config.json").read_text()))
    assert cfg == RUN
    assert (a / "preview.png").is_file() and (a / "dataset.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # dataset.json counts the empty masks and how they came about, from the records
    masks = json.loads((a / "dataset.json").read_text())["masks"]
    assert masks["empty_masks"] == sum(r["mask_pixels"] == 0 for r in records)
    assert masks["empty_masks"] == masks["drawn_empty"] + masks["redraws_exhausted"]
    assert masks["redraws"] == sum(r["redraws"] for r in records)
    assert masks["configured_empty_fraction"] == CFG.empty_fraction


def test_write_dataset_refuses_non_empty_and_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_dataset(out, 2, 0, RUN)
    assert (out / "keep.txt").read_text() == "mine"
    write_dataset(out, 2, 0, RUN, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.jsonl").exists()
