"""Geometry of synthetic microcalcifications: replayable parameter records and their draw.

A sample is described completely by a :class:`SampleParams` record (plus the background, the
:class:`~mcgenref.synthesis.config.SynthesisConfig` and the noise seed): the MC positions,
sizes, shapes and contrasts are drawn here once, stored as plain numbers, and rendered by
:func:`mcgenref.synthesis.render.render_sample`. The records are frozen dataclasses that
round-trip exactly through JSON (:func:`sample_params_to_dict` /
:func:`sample_params_from_dict`).

Conventions (see ``docs/architecture.md``): positions are in pixels, ``row`` = y, ``col`` = x,
pixel centres at integer coordinates (pixel ``i`` spans ``[i - 0.5, i + 0.5)``), sub-pixel
positions allowed. Every physical size is in millimetres and is converted with the spacing
``(row_spacing, col_spacing)`` only when rendering, so the same MC covers 4x the pixels at
0.1 mm as at 0.2 mm. Angles (``orientation_rad``) are measured in the physical (mm) plane
from the +x (column) axis towards +y (row, i.e. downwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mcgenref.config import from_dict, to_dict
from mcgenref.errors import ConfigError, InputError
from mcgenref.synthesis.config import SynthesisConfig

__all__ = [
    "CLUSTER_PATTERNS",
    "ClusterParams",
    "ClusterPattern",
    "MCParams",
    "MORPHOLOGIES",
    "Morphology",
    "SampleKind",
    "SampleParams",
    "draw_sample_params",
    "sample_params_from_dict",
    "sample_params_to_dict",
]

Morphology = Literal["punctate", "round_oval", "pleomorphic", "fine_linear"]
ClusterPattern = Literal["cloud", "linear", "branching", "segmental"]
SampleKind = Literal["empty", "isolated", "cluster"]

MORPHOLOGIES: tuple[str, ...] = ("punctate", "round_oval", "pleomorphic", "fine_linear")
CLUSTER_PATTERNS: tuple[str, ...] = ("cloud", "linear", "branching", "segmental")


@dataclass(frozen=True)
class MCParams:
    """One microcalcification, in physical units where it matters.

    ``axes_mm`` are three semi-axes: (a, b, c) = in-plane major, in-plane minor, depth (along
    the beam) of the ellipsoid for ``punctate`` / ``round_oval`` / ``pleomorphic``; for
    ``fine_linear`` (a linear cast, possibly branching): (half length, tube radius, tube depth
    radius). ``size_mm`` is the nominal largest diameter (2a). ``shape_seed`` seeds the
    irregular outline of pleomorphic MCs and the polyline/branch of linear ones.
    ``attenuation_per_mm`` is the effective contrast per mm of calcium thickness in
    normalised intensity units (before the local-background modulation).
    """

    centre_row: float  # px, sub-pixel (y)
    centre_col: float  # px, sub-pixel (x)
    size_mm: float  # largest diameter (mm)
    morphology: Morphology
    axes_mm: tuple[float, float, float]  # semi-axes (mm), see the class docstring
    orientation_rad: float  # major axis, from +x (column) towards +y (row), mm plane
    shape_seed: int  # seeds irregular outlines / branching
    attenuation_per_mm: float  # normalised intensity per mm of calcium thickness
    psf_sigma_mm: float  # Gaussian PSF sigma (mm)
    cluster_id: int = -1  # -1: isolated MC

    def __post_init__(self) -> None:
        if self.morphology not in MORPHOLOGIES:
            raise ValueError(f"unknown morphology {self.morphology!r}")
        if len(self.axes_mm) != 3 or min(self.axes_mm) <= 0:
            raise ValueError(f"axes_mm must be three positive semi-axes, got {self.axes_mm}")
        if not self.size_mm > 0:
            raise ValueError(f"size_mm must be > 0, got {self.size_mm}")
        if self.attenuation_per_mm < 0 or self.psf_sigma_mm < 0:
            raise ValueError("attenuation_per_mm and psf_sigma_mm must be >= 0")


@dataclass(frozen=True)
class ClusterParams:
    """A cluster: every one of its MCs lies within ``extent_mm / 2`` of its centre."""

    id: int
    pattern: ClusterPattern
    centre_row: float  # px
    centre_col: float  # px
    extent_mm: float  # largest span (diameter of the disc holding all its MC centres)
    n_mcs: int  # MCs actually placed (may be fewer than drawn when space ran out)
    orientation_rad: float = 0.0  # main axis of linear / branching / segmental patterns


@dataclass(frozen=True)
class SampleParams:
    """Everything drawn for one sample (the noise realisation is fixed by the noise seed)."""

    shape: tuple[int, int]
    spacing_mm: tuple[float, float]  # (row, col)
    kind: SampleKind
    clusters: tuple[ClusterParams, ...]
    mcs: tuple[MCParams, ...]
    noise_gain: float  # gain of the signal-dependent noise (see NoiseConfig)


# --------------------------------------------------------------------------- records <-> JSON


def sample_params_to_dict(params: SampleParams) -> dict[str, Any]:
    """A JSON-able dict of ``params`` (tuples become lists); exact inverse of the reader."""
    return to_dict(params)


def sample_params_from_dict(data: dict[str, Any]) -> SampleParams:
    """Rebuild :class:`SampleParams` from :func:`sample_params_to_dict` output (exactly)."""
    try:
        return from_dict(SampleParams, data, where="sample_params")
    except ConfigError as exc:
        raise InputError(f"invalid sample record: {exc}") from None


# --------------------------------------------------------------------------- drawing helpers


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _choice(rng: np.random.Generator, names: tuple[str, ...], probs: tuple[float, ...]) -> str:
    p = np.asarray(probs, dtype=float)
    p = p / p.sum()
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return names[min(i, len(names) - 1)]


def _draw_mc(rng: np.random.Generator, config: SynthesisConfig, morphology: str, row: float,
             col: float, direction: float | None, attenuation: float, psf_sigma_mm: float,
             cluster_id: int) -> MCParams:
    """Size, shape and contrast of one MC at (row, col)."""
    mcc = config.mc
    if morphology == "fine_linear":
        length = _loguniform(rng, *mcc.linear_length_range_mm)
        width = min(_loguniform(rng, *mcc.linear_width_range_mm), 0.8 * length)
        axes = (0.5 * length, 0.5 * width, 0.5 * width)
        size = length
    else:
        size = mcc.size_median_mm * math.exp(mcc.size_log_sigma * rng.standard_normal())
        size = float(np.clip(size, *mcc.size_range_mm))
        if morphology == "punctate":
            size = min(size, mcc.punctate_max_mm)
            aspect = rng.uniform(*mcc.punctate_aspect_range)
        else:
            aspect = rng.uniform(*mcc.oval_aspect_range)
        a = 0.5 * size
        b = a * aspect
        c = math.sqrt(a * b) * rng.uniform(*mcc.depth_ratio_range)
        axes = (a, b, c)
    if direction is None:
        orientation = rng.uniform(0.0, math.pi)
    else:  # aligned with the duct, with a little scatter
        orientation = direction + 0.2 * rng.standard_normal()
    orientation = float(math.remainder(orientation, math.pi))
    shape_seed = int(rng.integers(0, 2**31 - 1))
    att = attenuation * math.exp(config.contrast.attenuation_jitter_log_sigma
                                 * rng.standard_normal())
    return MCParams(
        centre_row=float(row), centre_col=float(col), size_mm=float(size),
        morphology=morphology,  # type: ignore[arg-type]
        axes_mm=(float(axes[0]), float(axes[1]), float(axes[2])),
        orientation_rad=orientation, shape_seed=shape_seed, attenuation_per_mm=float(att),
        psf_sigma_mm=float(psf_sigma_mm), cluster_id=int(cluster_id),
    )


class _Placer:
    """Bounds, ``allowed`` mask and separation checks for MC centres."""

    def __init__(self, shape: tuple[int, int], spacing: tuple[float, float],
                 config: SynthesisConfig, allowed: np.ndarray | None) -> None:
        self.shape = shape
        self.spacing = spacing
        self.allowed = allowed
        h, w = shape
        self.margin = (
            min(config.edge_margin_mm / spacing[0], (h - 1) / 4.0),
            min(config.edge_margin_mm / spacing[1], (w - 1) / 4.0),
        )
        self.sep = config.cluster.min_separation_factor
        self.placed: list[tuple[float, float, float]] = []  # (y_mm, x_mm, radius_mm)

    def inside(self, row: float, col: float) -> bool:
        h, w = self.shape
        mr, mc = self.margin
        if not (mr <= row <= h - 1 - mr and mc <= col <= w - 1 - mc):
            return False
        if self.allowed is not None:
            return bool(self.allowed[int(round(row)), int(round(col))])
        return True

    def free(self, row: float, col: float, radius_mm: float) -> bool:
        y, x = row * self.spacing[0], col * self.spacing[1]
        for py, px, pr in self.placed:
            if math.hypot(y - py, x - px) < self.sep * (radius_mm + pr):
                return False
        return True

    def add(self, mc: MCParams) -> None:
        self.placed.append((mc.centre_row * self.spacing[0], mc.centre_col * self.spacing[1],
                            0.5 * mc.size_mm))

    def random_position(self, rng: np.random.Generator,
                        keep_out: list[tuple[float, float, float]] | None = None,
                        box_margin: tuple[float, float] | None = None,
                        ) -> tuple[float, float] | None:
        """A uniformly random allowed (row, col), ``box_margin`` px from the border if possible."""
        h, w = self.shape
        mr, mc = box_margin if box_margin is not None else self.margin
        r0, r1 = int(math.ceil(mr)), int(math.floor(h - 1 - mr))
        c0, c1 = int(math.ceil(mc)), int(math.floor(w - 1 - mc))
        if r0 > r1 or c0 > c1:
            return None
        if self.allowed is not None:
            idx = np.flatnonzero(self.allowed[r0:r1 + 1, c0:c1 + 1])
            if idx.size == 0:
                return None
        for _ in range(50):
            if self.allowed is not None:
                k = int(idx[int(rng.integers(0, idx.size))])
                row = r0 + k // (c1 - c0 + 1) + rng.uniform(-0.5, 0.5)
                col = c0 + k % (c1 - c0 + 1) + rng.uniform(-0.5, 0.5)
                row = float(np.clip(row, r0, r1))
                col = float(np.clip(col, c0, c1))
            else:
                row = rng.uniform(r0, r1)
                col = rng.uniform(c0, c1)
            if keep_out:
                y, x = row * self.spacing[0], col * self.spacing[1]
                if any(math.hypot(y - ky, x - kx) < kr for ky, kx, kr in keep_out):
                    continue
            if self.allowed is None or self.allowed[int(round(row)), int(round(col))]:
                return float(row), float(col)
        return None


def _pattern_sampler(rng: np.random.Generator, pattern: str, radius: float):
    """A function drawing one MC offset (u, v, direction) in the cluster frame (mm).

    ``u`` runs along the cluster's main axis; ``direction`` is the local duct direction in
    that frame (None for clouds).
    """
    if pattern == "cloud":
        aspect = rng.uniform(0.6, 1.0)  # round to mildly oval groups

        def draw() -> tuple[float, float, float | None]:
            s = 0.5 * radius  # truncated (by the caller) Gaussian: denser in the middle
            return s * rng.standard_normal(), aspect * s * rng.standard_normal(), None

        return draw
    if pattern == "linear":
        curvature = rng.uniform(-0.15, 0.15)  # gently curved duct

        def draw() -> tuple[float, float, float | None]:
            u = rng.uniform(-radius, radius)
            v = curvature * (u * u - radius * radius / 3.0) / radius
            v += 0.05 * radius * rng.standard_normal()
            return u, v, math.atan(2.0 * curvature * u / radius)

        return draw
    # branching and segmental: a set of straight duct segments ((u0, v0), (u1, v1))
    segments: list[tuple[float, float, float, float]] = []
    if pattern == "branching":
        segments.append((-radius, 0.0, radius, 0.0))  # trunk
        for _ in range(int(rng.integers(1, 4))):
            u0 = rng.uniform(-0.6, 0.6) * radius
            ang = rng.choice([-1.0, 1.0]) * math.radians(rng.uniform(20.0, 50.0))
            length = rng.uniform(0.3, 0.8) * radius
            segments.append((u0, 0.0, u0 + length * math.cos(ang), length * math.sin(ang)))
    elif pattern == "segmental":
        half = math.radians(rng.uniform(15.0, 30.0))  # ducts diverging from the apex
        n_rays = int(rng.integers(3, 6))
        for k in range(n_rays):
            ang = -half + 2.0 * half * (k + rng.uniform(0.25, 0.75)) / n_rays
            segments.append((-radius, 0.0, -radius + 2.0 * radius * math.cos(ang),
                             2.0 * radius * math.sin(ang)))
    else:
        raise ValueError(f"unknown cluster pattern {pattern!r}")
    lengths = np.array([math.hypot(s[2] - s[0], s[3] - s[1]) for s in segments])
    cdf = np.cumsum(lengths / lengths.sum())

    def draw() -> tuple[float, float, float | None]:
        i = min(int(np.searchsorted(cdf, rng.random(), side="right")), len(segments) - 1)
        u0, v0, u1, v1 = segments[i]
        t = rng.uniform(0.05 if pattern == "segmental" else 0.0, 1.0)
        ang = math.atan2(v1 - v0, u1 - u0)
        jitter = 0.04 * radius * rng.standard_normal()
        u = u0 + t * (u1 - u0) - jitter * math.sin(ang)
        v = v0 + t * (v1 - v0) + jitter * math.cos(ang)
        return u, v, ang

    return draw


def _draw_cluster(rng: np.random.Generator, cid: int, placer: _Placer, config: SynthesisConfig,
                  attenuation: float, psf_sigma_mm: float
                  ) -> tuple[ClusterParams | None, list[MCParams]]:
    cc = config.cluster
    sr, sc = placer.spacing
    h, w = placer.shape
    lo, hi = cc.n_mcs_range
    n_target = int(math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))
    n_target = min(max(n_target, lo), hi)
    pattern = _choice(rng, CLUSTER_PATTERNS, cc.pattern_probs)
    extent = _loguniform(rng, *cc.extent_mm_range)
    # room for n MCs of typical size without overlap (~0.8 mm per sqrt(MC)), within limits
    extent = min(max(extent, 0.8 * math.sqrt(n_target)), cc.extent_mm_range[1])
    patch_mm = min((h - 1) * sr, (w - 1) * sc) - 2.0 * config.edge_margin_mm
    extent = min(extent, max(patch_mm, 0.25 * min((h - 1) * sr, (w - 1) * sc)))
    radius = 0.5 * extent
    orientation = rng.uniform(-math.pi, math.pi)
    # centre: the whole cluster inside the patch (with margin) when possible
    box = (placer.margin[0] + radius / sr, placer.margin[1] + radius / sc)
    centre = placer.random_position(rng, box_margin=box)
    if centre is None:
        centre = placer.random_position(rng)
    if centre is None:
        return None, []
    crow, ccol = centre
    draw = _pattern_sampler(rng, pattern, radius)
    dominant = _choice(rng, MORPHOLOGIES, config.mc.morphology_probs)
    ductal = pattern != "cloud"
    cos_t, sin_t = math.cos(orientation), math.sin(orientation)
    mcs: list[MCParams] = []
    for _ in range(30 * n_target):
        if len(mcs) >= n_target:
            break
        u, v, direction = draw()
        if math.hypot(u, v) > radius:
            continue
        dx = u * cos_t - v * sin_t
        dy = u * sin_t + v * cos_t
        row, col = crow + dy / sr, ccol + dx / sc
        if not placer.inside(row, col):
            continue
        if rng.random() < cc.morphology_homogeneity:
            morph = dominant
        else:
            morph = _choice(rng, MORPHOLOGIES, config.mc.morphology_probs)
        hint = orientation + direction if (ductal and direction is not None) else None
        mc = _draw_mc(rng, config, morph, row, col, hint, attenuation, psf_sigma_mm, cid)
        if not placer.free(row, col, 0.5 * mc.size_mm):
            continue
        placer.add(mc)
        mcs.append(mc)
    if not mcs:
        return None, []
    cluster = ClusterParams(
        id=int(cid), pattern=pattern, centre_row=float(crow),  # type: ignore[arg-type]
        centre_col=float(ccol), extent_mm=float(extent), n_mcs=len(mcs),
        orientation_rad=float(orientation),
    )
    return cluster, mcs


def draw_sample_params(rng: np.random.Generator, shape: tuple[int, int],
                       spacing_mm: tuple[float, float], config: SynthesisConfig, *,
                       allowed: np.ndarray | None = None,
                       kind: SampleKind | None = None) -> SampleParams:
    """Draw the geometry and contrast of one synthetic sample.

    The sample is MC-free with probability ``config.empty_fraction``, has isolated MCs only
    with probability ``config.isolated_fraction``, and otherwise one cluster (two with
    ``config.cluster.second_cluster_prob``) plus a few isolated MCs kept clear of the
    clusters. ``kind`` forces the kind instead (the draw that would choose it is still made,
    so the rest of the stream is the same): :func:`mcgenref.synthesis.sample.generate_sample`
    uses it to draw a patch's MCs again when none of them came out visible. Every size is drawn in mm; positions are in px for ``shape`` at ``spacing_mm``
    (row, col). ``allowed`` (bool, ``shape``) restricts MC centres (and cluster centres) to
    its True pixels, e.g. the breast; when it leaves no room, fewer (possibly no) MCs are
    placed, and ``ClusterParams.n_mcs`` records how many were. The PSF sigma, the noise gain
    and the base attenuation are drawn once per sample (one detector, one exposure).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator")
    shape = (int(shape[0]), int(shape[1]))
    if len(shape) != 2 or min(shape) < 4:
        raise ValueError(f"shape must be two sizes >= 4, got {shape}")
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != shape:
            raise ValueError(f"allowed has shape {allowed.shape}, expected {shape}")

    if kind is not None and kind not in ("empty", "isolated", "cluster"):
        raise ValueError(f"unknown sample kind {kind!r}")
    u = rng.random()  # drawn even when ``kind`` is forced: the rest of the stream stays put
    if kind is None:
        if u < config.empty_fraction:
            kind = "empty"
        elif u < config.empty_fraction + config.isolated_fraction:
            kind = "isolated"
        else:
            kind = "cluster"
    noise_gain = float(rng.uniform(*config.noise.gain_range))
    psf_sigma = float(rng.uniform(*config.psf.sigma_mm_range))
    attenuation = _loguniform(rng, *config.contrast.attenuation_per_mm_range)
    if kind == "empty":
        return SampleParams(shape=shape, spacing_mm=spacing, kind="empty", clusters=(), mcs=(),
                            noise_gain=noise_gain)

    placer = _Placer(shape, spacing, config, allowed)
    clusters: list[ClusterParams] = []
    mcs: list[MCParams] = []
    if kind == "cluster":
        n_clusters = 2 if rng.random() < config.cluster.second_cluster_prob else 1
        for _ in range(n_clusters):
            cluster, cmcs = _draw_cluster(rng, len(clusters), placer, config, attenuation,
                                          psf_sigma)
            if cluster is not None:
                clusters.append(cluster)
                mcs.extend(cmcs)
        n_iso = int(rng.integers(config.extra_isolated_range[0],
                                 config.extra_isolated_range[1] + 1))
    else:
        n_iso = int(rng.integers(max(1, config.isolated_count_range[0]),
                                 config.isolated_count_range[1] + 1))
    # isolated MCs stay clear of the clusters (1 mm beyond their extent)
    keep_out = [(c.centre_row * spacing[0], c.centre_col * spacing[1], 0.5 * c.extent_mm + 1.0)
                for c in clusters]
    for _ in range(n_iso):
        for _try in range(10):
            pos = placer.random_position(rng, keep_out=keep_out)
            if pos is None:
                break
            morph = _choice(rng, MORPHOLOGIES, config.mc.morphology_probs)
            mc = _draw_mc(rng, config, morph, pos[0], pos[1], None, attenuation, psf_sigma, -1)
            if placer.free(pos[0], pos[1], 0.5 * mc.size_mm):
                placer.add(mc)
                mcs.append(mc)
                break
    return SampleParams(shape=shape, spacing_mm=spacing, kind=kind,  # type: ignore[arg-type]
                        clusters=tuple(clusters), mcs=tuple(mcs), noise_gain=noise_gain)
