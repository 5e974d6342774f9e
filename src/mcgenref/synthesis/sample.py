"""One synthetic sample: seeds, the record that describes it, and replay.

Randomness is split so that every part can be replayed on its own. A sample's integer
``seed`` (derived from the run's base seed and the sample index by :func:`sample_seed`) feeds a
:class:`numpy.random.SeedSequence` whose three children draw, in this order:

1. the background (which negative and where, or the procedural texture),
2. the MC parameters (:func:`~mcgenref.synthesis.geometry.draw_sample_params`),
3. the noise (the ``noise_seed`` given to :func:`~mcgenref.synthesis.render.render_sample`).

The record holds the seed, the background's source, every drawn parameter, the per-MC
results and the sha256 of the synthesis config. :func:`replay_sample` rebuilds the pair from
the record alone (plus the config it names and, for real backgrounds, the negative image
file) without drawing anything again; :func:`generate_sample` with the same seed gives the
same bytes too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcgenref.config import to_dict
from mcgenref.errors import ConfigError
from mcgenref.synthesis.background import procedural_background
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.geometry import (
    draw_sample_params,
    sample_params_from_dict,
    sample_params_to_dict,
)
from mcgenref.synthesis.patches import NegativePatchSampler
from mcgenref.synthesis.render import render_sample


@dataclass(frozen=True)
class Sample:
    """A synthetic pair.

    image: float32 [H, W], normalised intensity (see docs/architecture.md), MCs added.
    mask: uint8 [H, W] in {0, 1}: pixels of the visible MCs.
    record: JSON-able description (see module docstring).
    background: float32 [H, W], the same patch before the MCs were added (what the
        generator's observation is built from); ``None`` when not known.
    """

    image: np.ndarray
    mask: np.ndarray
    record: dict[str, Any]
    background: np.ndarray | None = None


def config_sha256(config: SynthesisConfig) -> str:
    """A stable fingerprint of a synthesis config (sorted-key JSON)."""
    text = json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run with ``base_seed`` (independent streams)."""
    if base_seed < 0 or index < 0:
        raise ConfigError("seeds and sample indices must be non-negative")
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) >> 1) << 31 | int(state[1]) >> 1  # 62-bit, JSON-safe


def _children(seed: int) -> tuple[np.random.SeedSequence, ...]:
    return tuple(np.random.SeedSequence(int(seed)).spawn(3))


def _procedural(source: dict[str, Any], shape: tuple[int, int], config: SynthesisConfig) -> np.ndarray:
    rng = np.random.default_rng(int(source["seed"]))
    spacing = (float(source["spacing_mm"][0]), float(source["spacing_mm"][1]))
    return procedural_background(rng, shape, spacing, config.background)


def generate_sample(
    seed: int,
    config: SynthesisConfig,
    sampler: NegativePatchSampler | None = None,
    procedural_spacing_mm: tuple[float, float] = (0.1, 0.1),
    index: int | None = None,
) -> Sample:
    """Draw and render one sample.

    Args:
        seed: the sample's seed (see :func:`sample_seed`).
        config: the synthesis config.
        sampler: real negative backgrounds; ``None`` uses procedural power-law backgrounds
            at ``procedural_spacing_mm`` (row, col).
        index: stored in the record (the sample's position in its data set).
    """
    source_ss, params_ss, noise_ss = _children(seed)
    size = config.patch_size_px
    if sampler is not None:
        if sampler.patch_size_px != size:
            raise ConfigError(
                f"sampler patch size {sampler.patch_size_px} != config patch size {size}"
            )
        background, allowed, source = sampler.draw(np.random.default_rng(source_ss))
        spacing = (float(source["spacing_mm"][0]), float(source["spacing_mm"][1]))
    else:
        spacing = (float(procedural_spacing_mm[0]), float(procedural_spacing_mm[1]))
        source = {
            "kind": "procedural",
            "seed": int(source_ss.generate_state(1, np.uint32)[0]),
            "spacing_mm": list(spacing),
        }
        background = _procedural(source, (size, size), config)
        allowed = None
    params = draw_sample_params(
        np.random.default_rng(params_ss), background.shape, spacing, config, allowed=allowed
    )
    noise_seed = int(noise_ss.generate_state(1, np.uint32)[0])
    return _render(seed, index, source, background, spacing, params, noise_seed, config)


def _render(
    seed: int,
    index: int | None,
    source: dict[str, Any],
    background: np.ndarray,
    spacing: tuple[float, float],
    params: Any,
    noise_seed: int,
    config: SynthesisConfig,
) -> Sample:
    result = render_sample(background, spacing, params, config, noise_seed)
    mcs = [dataclasses.asdict(mc) for mc in result.mcs]
    record = {
        "index": index,
        "seed": int(seed),
        "noise_seed": noise_seed,
        "source": source,
        "spacing_mm": list(spacing),
        "shape": list(background.shape),
        "config_sha256": config_sha256(config),
        "n_mcs": len(mcs),
        "n_visible": int(sum(1 for m in mcs if m["visible"])),
        "mask_pixels": int(result.mask.sum()),
        "params": sample_params_to_dict(params),
        "mcs": mcs,
    }
    record = json.loads(json.dumps(record, default=_json_default))
    return Sample(image=result.image, mask=result.mask, record=record,
                  background=np.asarray(background, dtype=np.float32))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def replay_sample(
    record: dict[str, Any],
    config: SynthesisConfig,
    sampler: NegativePatchSampler | None = None,
) -> Sample:
    """Rebuild a sample from its record without drawing anything again.

    ``config`` must be the one the record was made with (checked by sha256). For a real
    background, ``sampler`` must be able to prepare the record's source image (same patch
    size and sampler config); the image is re-read if the sampler does not hold it.
    """
    if record.get("config_sha256") != config_sha256(config):
        raise ConfigError("the record was made with a different synthesis config")
    source = record["source"]
    shape = (int(record["shape"][0]), int(record["shape"][1]))
    spacing = (float(record["spacing_mm"][0]), float(record["spacing_mm"][1]))
    if source["kind"] == "procedural":
        background = _procedural(source, shape, config)
    else:
        if sampler is None:
            raise ConfigError("replaying a sample on a real negative needs a patch sampler")
        background, _ = sampler.patch_from_record(source)
    params = sample_params_from_dict(record["params"])
    return _render(
        int(record["seed"]), record.get("index"), source, background, spacing, params,
        int(record["noise_seed"]), config,
    )
