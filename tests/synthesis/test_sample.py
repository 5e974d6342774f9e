"""Seeds, records and replay: the same seed gives the same bytes; a record rebuilds its sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcgenref.errors import ConfigError
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.patches import NegativePatchSampler
from mcgenref.synthesis.sample import config_sha256, generate_sample, replay_sample, sample_seed

CFG = SynthesisConfig(patch_size_px=64, empty_fraction=0.0)


def test_sample_seed_is_stable_and_distinct() -> None:
    assert sample_seed(0, 0) == sample_seed(0, 0)
    seeds = {sample_seed(b, i) for b in range(3) for i in range(200)}
    assert len(seeds) == 600
    assert all(0 <= s < 2**62 for s in seeds)
    with pytest.raises(ConfigError):
        sample_seed(-1, 0)


def test_same_seed_same_bytes_procedural() -> None:
    a = generate_sample(123, CFG, procedural_spacing_mm=(0.1, 0.1), index=4)
    b = generate_sample(123, CFG, procedural_spacing_mm=(0.1, 0.1), index=4)
    c = generate_sample(124, CFG, procedural_spacing_mm=(0.1, 0.1), index=4)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert a.record == b.record
    assert a.image.tobytes() != c.image.tobytes()
    assert a.image.dtype == np.float32 and a.image.shape == (64, 64)
    assert set(np.unique(a.mask)) <= {0, 1}


def test_record_is_json_and_complete() -> None:
    s = generate_sample(7, CFG, index=0)
    text = json.dumps(s.record)
    rec = json.loads(text)
    assert rec["seed"] == 7 and rec["index"] == 0
    assert rec["source"]["kind"] == "procedural"
    assert rec["config_sha256"] == config_sha256(CFG)
    assert rec["n_mcs"] == len(rec["mcs"])
    assert rec["n_visible"] == sum(m["visible"] for m in rec["mcs"])
    assert rec["mask_pixels"] == int(s.mask.sum())
    for mc in rec["mcs"]:
        # mm = px * spacing (x = column uses the column spacing)
        assert mc["x_mm"] == pytest.approx(mc["x_px"] * 0.1, abs=1e-6)
        assert mc["y_mm"] == pytest.approx(mc["y_px"] * 0.1, abs=1e-6)


def test_replay_from_record_alone_procedural() -> None:
    s = generate_sample(99, CFG, index=3)
    record = json.loads(json.dumps(s.record))  # as read back from manifest.jsonl
    r = replay_sample(record, CFG)
    assert r.image.tobytes() == s.image.tobytes()
    assert r.mask.tobytes() == s.mask.tobytes()
    other = SynthesisConfig(patch_size_px=64, empty_fraction=0.5)
    with pytest.raises(ConfigError, match="different synthesis config"):
        replay_sample(record, other)


def test_replay_on_real_negative(phantom_folder) -> None:
    paths = sorted(phantom_folder.glob("*.png"))
    sampler = NegativePatchSampler(paths, 64, pixel_spacing_mm=0.2)
    s = generate_sample(5, CFG, sampler, index=0)
    assert s.record["source"]["kind"] == "negative"
    assert s.record["spacing_mm"] == [0.2, 0.2]
    # a fresh sampler over the same file rebuilds the identical sample
    fresh = NegativePatchSampler([s.record["source"]["path"]], 64, pixel_spacing_mm=0.2)
    r = replay_sample(json.loads(json.dumps(s.record)), CFG, fresh)
    assert r.image.tobytes() == s.image.tobytes()
    assert r.mask.tobytes() == s.mask.tobytes()
    with pytest.raises(ConfigError, match="sampler"):
        replay_sample(s.record, CFG)
