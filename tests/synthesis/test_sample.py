"""Seeds, records and replay: the same seed gives the same bytes; a record rebuilds its sample;
the share of empty masks is the configured one (redraws)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from mcgenref.errors import ConfigError
from mcgenref.synthesis.config import (
    BackgroundConfig,
    ClusterConfig,
    MaskConfig,
    SynthesisConfig,
)
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


# --------------------------------------------------------------------------- empty as configured

#: Procedural backgrounds with film-like pixel noise (the default procedural texture is far
#: noisier at pixel scale than real film, so that most MCs on it are invisible): here a patch
#: with MCs can nearly always show a visible one, and the test checks the mechanism. Small
#: patches and clusters keep 1000 samples to a few seconds.
QUIET = BackgroundConfig(std_range=(0.01, 0.02), white_noise_std_range=(0.002, 0.004))
SMALL = SynthesisConfig(patch_size_px=32, background=QUIET,
                        cluster=ClusterConfig(n_mcs_range=(3, 8), extent_mm_range=(2.0, 5.0)))


def test_empty_fraction_holds_on_1000_patches() -> None:
    n = 1000
    records = [generate_sample(sample_seed(0, i), SMALL, procedural_spacing_mm=(0.2, 0.2)).record
               for i in range(n)]
    empty = sum(r["mask_pixels"] == 0 for r in records)
    lo, hi = stats.binom.interval(0.999, n, SMALL.empty_fraction)
    assert lo <= empty <= hi, (empty, lo, hi)
    # an empty mask is a patch drawn empty or one whose redraws ran out, nothing else
    drawn_empty = sum(r["params"]["kind"] == "empty" for r in records)
    exhausted = sum(r["redraws_exhausted"] for r in records)
    assert empty == drawn_empty + exhausted
    assert all(r["n_visible"] > 0 for r in records
               if r["params"]["kind"] != "empty" and not r["redraws_exhausted"])
    assert all(r["redraws"] == 0 for r in records if r["params"]["kind"] == "empty")
    # without redraws (draw 0 is the same draw) the share is far outside the bounds
    without = drawn_empty + sum(r["redraws"] > 0 or r["redraws_exhausted"] for r in records)
    assert without > hi + 50, without


def test_redrawn_sample_is_recorded_and_replays_byte_exact() -> None:
    seeds = (sample_seed(1, i) for i in range(400))
    s = next(x for x in (generate_sample(seed, SMALL, procedural_spacing_mm=(0.2, 0.2))
                         for seed in seeds) if x.record["redraws"] > 0)
    rec = json.loads(json.dumps(s.record))
    assert rec["n_visible"] > 0 and not rec["redraws_exhausted"] and s.mask.any()
    assert rec["params"]["kind"] != "empty"
    again = generate_sample(rec["seed"], SMALL, procedural_spacing_mm=(0.2, 0.2))
    assert again.image.tobytes() == s.image.tobytes() and again.record == s.record
    r = replay_sample(rec, SMALL)
    assert r.image.tobytes() == s.image.tobytes()
    assert r.mask.tobytes() == s.mask.tobytes()
    assert r.record == s.record


def test_a_sample_that_needs_no_redraw_is_the_one_the_seed_always_gave() -> None:
    once = dataclasses.replace(SMALL, mc_draws_per_background=1, max_backgrounds=1)
    checked = 0
    for i in range(60):
        s = generate_sample(sample_seed(2, i), SMALL, procedural_spacing_mm=(0.2, 0.2))
        if s.record["redraws"] == 0:
            t = generate_sample(sample_seed(2, i), once, procedural_spacing_mm=(0.2, 0.2))
            assert t.image.tobytes() == s.image.tobytes()
            assert t.record["params"] == s.record["params"]
            checked += 1
    assert checked >= 15


def test_background_redraw_and_exhaustion_are_recorded(phantom_folder) -> None:
    # nothing can be visible: every bound is reached, the last draw is kept and marked
    hopeless = dataclasses.replace(SMALL, empty_fraction=0.0, mask=MaskConfig(min_cnr=1e9),
                                   mc_draws_per_background=3, max_backgrounds=2)
    s = generate_sample(11, hopeless, procedural_spacing_mm=(0.2, 0.2))
    rec = s.record
    assert rec["redraws_exhausted"] and rec["n_visible"] == 0 and not s.mask.any()
    assert rec["redraws"] == 5 and rec["background_redraws"] == 1
    assert rec["n_mcs"] > 0
    first = generate_sample(11, dataclasses.replace(hopeless, max_backgrounds=1),
                            procedural_spacing_mm=(0.2, 0.2))
    assert rec["source"]["seed"] != first.record["source"]["seed"]  # a new background
    assert replay_sample(json.loads(json.dumps(rec)), hopeless).image.tobytes() == s.image.tobytes()
    # the same on a real negative: the kept patch's source is recorded and replays
    sampler = NegativePatchSampler(sorted(phantom_folder.glob("*.png")), 32, pixel_spacing_mm=0.2)
    t = generate_sample(11, hopeless, sampler)
    assert t.record["background_redraws"] == 1 and t.record["redraws_exhausted"]
    fresh = NegativePatchSampler([t.record["source"]["path"]], 32, pixel_spacing_mm=0.2)
    assert replay_sample(t.record, hopeless, fresh).image.tobytes() == t.image.tobytes()
