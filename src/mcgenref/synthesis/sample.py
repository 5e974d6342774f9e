"""One synthetic sample: seeds, the record that describes it, and replay.

Randomness is split so that every part can be replayed on its own. A sample's integer
``seed`` (derived from the run's base seed and the sample index by :func:`sample_seed`) feeds a
:class:`numpy.random.SeedSequence` whose three children draw, in this order:

1. the background (which negative and where, or the procedural texture),
2. the MC parameters (:func:`~mcgenref.synthesis.geometry.draw_sample_params`),
3. the noise (the ``noise_seed`` given to :func:`~mcgenref.synthesis.render.render_sample`).

Empty masks as configured: ``SynthesisConfig.empty_fraction`` is the share of patches with no
VISIBLE MC. A non-empty patch (kind ``isolated`` or ``cluster``) whose MCs all came out
invisible (CNR below ``mask.min_cnr``) is drawn again (:func:`draw_patch`): new MCs of the same
kind on the same background, up to ``mc_draws_per_background`` draws, then a new background
too, up to ``max_backgrounds`` backgrounds. Redraws come from ``SeedSequence.spawn`` children of
the background and MC-parameter children, so they are fixed by the sample's seed. The record
says how many were made (``redraws``: MC draws after the first; ``background_redraws``) and
whether the patch still had no visible MC at the bounds (``redraws_exhausted``: it is kept,
with an empty mask); its ``source`` and ``params`` are those of the kept draw.

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
    SampleKind,
    SampleParams,
    draw_sample_params,
    sample_params_from_dict,
    sample_params_to_dict,
)
from mcgenref.synthesis.patches import NegativePatchSampler
from mcgenref.synthesis.render import RenderResult, render_sample


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
    """Draw and render one sample (drawn again while a non-empty patch shows no visible MC).

    Args:
        seed: the sample's seed (see :func:`sample_seed`).
        config: the synthesis config.
        sampler: real negative backgrounds; ``None`` uses procedural power-law backgrounds
            at ``procedural_spacing_mm`` (row, col).
        index: stored in the record (the sample's position in its data set).
    """
    if sampler is not None and sampler.patch_size_px != config.patch_size_px:
        raise ConfigError(
            f"sampler patch size {sampler.patch_size_px} != config patch size "
            f"{config.patch_size_px}"
        )
    drawn = draw_patch(seed, config, sampler, procedural_spacing_mm)
    return _sample(seed, index, drawn, config)


@dataclass(frozen=True)
class PatchDraw:
    """The kept draw of a sample (background and MCs) and how it was reached.

    ``redraws`` counts the MC draws made after the first one, ``background_redraws`` the
    backgrounds drawn after the first one; ``exhausted`` marks a non-empty patch that still
    has no visible MC when the bounds are reached (it is kept, with an empty mask).
    """

    background: np.ndarray
    source: dict[str, Any]
    spacing: tuple[float, float]
    params: SampleParams
    result: RenderResult
    noise_seed: int
    redraws: int = 0
    background_redraws: int = 0
    exhausted: bool = False


def _draw_background(
    ss: np.random.SeedSequence,
    config: SynthesisConfig,
    sampler: NegativePatchSampler | None,
    procedural_spacing_mm: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any], tuple[float, float]]:
    """(background, allowed mask or None, source record, spacing) drawn from ``ss``."""
    if sampler is not None:
        background, allowed, source = sampler.draw(np.random.default_rng(ss))
        spacing = (float(source["spacing_mm"][0]), float(source["spacing_mm"][1]))
        return background, allowed, source, spacing
    spacing = (float(procedural_spacing_mm[0]), float(procedural_spacing_mm[1]))
    source = {
        "kind": "procedural",
        "seed": int(ss.generate_state(1, np.uint32)[0]),
        "spacing_mm": list(spacing),
    }
    size = config.patch_size_px
    return _procedural(source, (size, size), config), None, source, spacing


def _n_visible(result: RenderResult) -> int:
    return sum(1 for mc in result.mcs if mc.visible)


def draw_patch(
    seed: int,
    config: SynthesisConfig,
    sampler: NegativePatchSampler | None = None,
    procedural_spacing_mm: tuple[float, float] = (0.1, 0.1),
) -> PatchDraw:
    """Draw the background and MCs of sample ``seed``, drawing again while none is visible.

    Draw 0 uses the seed's background and MC-parameter children themselves, so a patch that
    needs no redraw is the one the seed has always given. While a non-empty draw has no
    visible MC, its MCs are drawn again (same kind) from the MC child's
    ``spawn``-ed children, ``config.mc_draws_per_background`` draws per background; then the
    background too is drawn again, from the background child's ``spawn``-ed children, up to
    ``config.max_backgrounds`` backgrounds. An ``empty`` draw is never redrawn.
    """
    source_ss, params_ss, noise_ss = _children(seed)
    noise_seed = int(noise_ss.generate_state(1, np.uint32)[0])
    per_background = config.mc_draws_per_background
    n_draws = per_background * config.max_backgrounds
    background_children = source_ss.spawn(config.max_backgrounds - 1)
    mc_children = params_ss.spawn(n_draws - 1)
    kind: SampleKind | None = None
    for draw in range(n_draws):
        b, first_on_background = divmod(draw, per_background)
        if first_on_background == 0:
            ss = source_ss if b == 0 else background_children[b - 1]
            background, allowed, source, spacing = _draw_background(
                ss, config, sampler, procedural_spacing_mm)
        ss = params_ss if draw == 0 else mc_children[draw - 1]
        params = draw_sample_params(np.random.default_rng(ss), background.shape, spacing,
                                    config, allowed=allowed, kind=kind)
        result = render_sample(background, spacing, params, config, noise_seed)
        if params.kind == "empty" or _n_visible(result) > 0:
            break
        kind = params.kind
    exhausted = params.kind != "empty" and _n_visible(result) == 0
    return PatchDraw(background, source, spacing, params, result, noise_seed,
                     redraws=draw, background_redraws=b, exhausted=exhausted)


def _sample(seed: int, index: int | None, drawn: PatchDraw, config: SynthesisConfig) -> Sample:
    result, params, background = drawn.result, drawn.params, drawn.background
    mcs = [dataclasses.asdict(mc) for mc in result.mcs]
    record = {
        "index": index,
        "seed": int(seed),
        "noise_seed": drawn.noise_seed,
        "source": drawn.source,
        "spacing_mm": list(drawn.spacing),
        "shape": list(background.shape),
        "config_sha256": config_sha256(config),
        "n_mcs": len(mcs),
        "n_visible": int(sum(1 for m in mcs if m["visible"])),
        "mask_pixels": int(result.mask.sum()),
        "redraws": int(drawn.redraws),
        "background_redraws": int(drawn.background_redraws),
        "redraws_exhausted": bool(drawn.exhausted),
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
    noise_seed = int(record["noise_seed"])
    result = render_sample(background, spacing, params, config, noise_seed)
    # records written before redraws existed have none of these keys: they made none
    drawn = PatchDraw(background, source, spacing, params, result, noise_seed,
                      redraws=int(record.get("redraws", 0)),
                      background_redraws=int(record.get("background_redraws", 0)),
                      exhausted=bool(record.get("redraws_exhausted", False)))
    return _sample(int(record["seed"]), record.get("index"), drawn, config)
