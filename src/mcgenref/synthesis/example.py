"""A generated example mammogram with known microcalcification clusters.

The project ships no patient image. :func:`example_mammogram` makes one instead, fully
determined by its seed: a procedural 1/f^beta breast texture inside a half-ellipse against the
chest wall (left edge), dark air around it, and MC clusters injected by the same
image-formation model as the training pairs, with the exact mask of the visible MCs. It is
what ``mcgenref example`` writes and what the README's quick start segments.

The MCs are made somewhat more conspicuous than the calibrated training defaults (attenuation
0.5-0.9 per mm instead of 0.2-0.6, clusters of 8-25 MCs), so that a demonstration shows
something; it is a demonstration image, not a benchmark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcgenref.synthesis.background import procedural_background
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.synthesis.geometry import draw_sample_params
from mcgenref.synthesis.render import render_sample

#: Pixel spacing of the example (mm): that of the shipped model (mini-MIAS film).
EXAMPLE_SPACING_MM = 0.2
EXAMPLE_SHAPE = (1024, 832)


@dataclass(frozen=True)
class ExampleMammogram:
    """``pixels``: uint16 12-bit image (dense bright); ``mask``: uint8 {0, 1} visible MCs;
    ``mcs``: per-MC records (as in a synth manifest); ``spacing_mm``: (row, col)."""

    pixels: np.ndarray
    mask: np.ndarray
    mcs: list[dict[str, Any]]
    spacing_mm: tuple[float, float]


def example_mammogram(seed: int = 0, spacing_mm: float = EXAMPLE_SPACING_MM) -> ExampleMammogram:
    """Generate the example (see the module docstring); the same seed gives the same bytes."""
    scale = EXAMPLE_SPACING_MM / spacing_mm
    shape = (int(round(EXAMPLE_SHAPE[0] * scale)), int(round(EXAMPLE_SHAPE[1] * scale)))
    spacing = (float(spacing_mm), float(spacing_mm))
    ss = np.random.SeedSequence(int(seed))
    texture_ss, params_ss, noise_ss = ss.spawn(3)
    base = SynthesisConfig()
    config = dataclasses.replace(
        base,
        empty_fraction=0.0,
        isolated_fraction=0.0,
        cluster=dataclasses.replace(base.cluster, n_mcs_range=(8, 25), second_cluster_prob=1.0),
        contrast=dataclasses.replace(base.contrast, attenuation_per_mm_range=(0.5, 0.9)),
    )
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    breast = ((rows - shape[0] / 2) / (0.44 * shape[0])) ** 2 + (cols / (0.82 * shape[1])) ** 2 <= 1
    texture = procedural_background(np.random.default_rng(texture_ss), shape, spacing, base.background)
    # fatty periphery, denser centre: tissue brightens towards the chest wall
    density = np.clip(1.0 - cols / (0.82 * shape[1]), 0, 1) ** 0.7
    background = np.where(breast, 0.15 + 0.55 * density + 0.6 * (texture - texture.mean()), -0.6)
    background = background.astype(np.float32)
    # keep MCs well inside the breast (not within 8 mm of the skin)
    from scipy import ndimage

    inner = ndimage.binary_erosion(breast, iterations=max(1, int(8.0 / spacing_mm)))
    params = draw_sample_params(np.random.default_rng(params_ss), shape, spacing, config,
                                allowed=inner)
    result = render_sample(background, spacing, params, config,
                           int(noise_ss.generate_state(1, np.uint32)[0]))
    image = np.where(breast, result.image, background)
    pixels = np.clip((image + 0.6) / 2.2 * 4095.0, 0, 4095).astype(np.uint16)
    mcs = [dataclasses.asdict(m) for m in result.mcs]
    return ExampleMammogram(pixels=pixels, mask=result.mask.astype(np.uint8), mcs=mcs,
                            spacing_mm=spacing)


def _dicom_bytes(example: ExampleMammogram, seed: int) -> bytes:
    from mcgenref.io.dicom_write import dataset_bytes, mammogram_dataset

    ds = mammogram_dataset(
        example.pixels, example.spacing_mm, bits_stored=12,
        uid_entropy=["mcgenref-example", str(seed)],
        PatientName="SYNTHETIC^EXAMPLE", PatientID="MCGENREF-EXAMPLE",
        ImageLaterality="L", ViewPosition="CC",
    )
    return dataset_bytes(ds)


def write_example(path: str | Path, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write the example to ``path`` (``.dcm`` DICOM or ``.png`` 16-bit) and its exact MC mask
    to ``<stem>_truth/<stem>.png`` beside it (the mask-folder format of ``mcgenref evaluate``).
    """
    from mcgenref.errors import ConfigError, OutputError
    from mcgenref.io.atomic import check_writable_dir, write_bytes_atomic, write_png_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".dcm", ".png"):
        raise ConfigError(f"{path}: the example is written as .dcm or .png")
    if seed < 0:
        raise ConfigError("--seed must be non-negative")
    truth_dir = path.parent / f"{path.stem}_truth"
    if not overwrite and (path.exists() or truth_dir.exists()):
        raise OutputError(f"{path} or {truth_dir} exists (use --overwrite)")
    check_writable_dir(path.parent if str(path.parent) else Path("."))
    example = example_mammogram(seed)
    try:
        truth_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {truth_dir}: {exc.strerror or exc}") from None
    write_png_atomic(truth_dir / f"{path.stem}.png", example.mask * 255)
    if suffix == ".dcm":
        write_bytes_atomic(path, _dicom_bytes(example, seed))
    else:
        write_png_atomic(path, example.pixels)
    visible = [m for m in example.mcs if m["visible"]]
    return {"image": str(path), "truth": str(truth_dir), "pixel_spacing_mm": list(example.spacing_mm),
            "n_mcs": len(example.mcs), "n_visible": len(visible)}
