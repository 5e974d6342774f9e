"""The image-formation model: render drawn MCs into a (normalised) background.

For each MC of a :class:`~mcgenref.synthesis.geometry.SampleParams`, everything happens in a
small window around it (never on the whole patch; only the background high-pass used for the
local noise is filtered once, over the MCs' bounding box), so a 256x256 patch with ~20 MCs
renders in about 3 ms on one core at 0.1 mm (~0.15 ms per MC; ~0.25 ms per MC at 0.05 mm):

1. **Thickness.** The MC is a 3-D object given by its calcium thickness along the beam,
   t(x, y) in mm: an ellipsoid (``punctate``, ``round_oval``); an ellipsoid with an outline
   perturbed by harmonics of order 2-4, or a union of 2-4 small ellipsoidal fragments
   (``pleomorphic``); a thin tube along a short bent polyline, possibly with a side branch
   (``fine_linear``). t is evaluated at ``supersample`` x ``supersample`` points per pixel
   and box-integrated to the pixel grid: the partial-volume thickness (mean thickness over
   the pixel) and the coverage (fraction of the pixel inside the MC's footprint).
2. **Contrast** (Beer-Lambert, log domain): ``s = attenuation_per_mm * t * m(b)`` with
   ``m(b) = clip(1 - density_damping * b, min_modulation, 1)`` and ``b`` the local
   background (Gaussian mean at ``local_mean_sigma_mm``): dense, bright tissue lowers the
   contrast.
3. **Blur.** The detector PSF, a Gaussian of sigma ``psf_sigma_mm`` converted to px per axis
   (row and column spacings may differ), applied to the MC's window padded by the kernel
   radius; the discrete kernel is normalised and has the PSF's variance (a 3-tap kernel
   when sigma < 0.8 px, where a sampled Gaussian would blur too little), so the total signal
   is preserved exactly when the MC is inside the image.
4. **Noise.** Signal-dependent (quantum-like) noise inside the MC:
   ``std = noise_gain * local_noise * sqrt(s_blurred / peak)``, where ``local_noise`` is
   1.4826 x the MAD of the background's high-pass (background - Gaussian at
   ``highpass_sigma_mm``) in a ``local_window_mm`` window around the MC (floored at
   ``min_local_noise``). Drawn from ``np.random.default_rng(noise_seed)`` in MC order, so
   the output is byte-for-byte deterministic.
5. **Mask (exact, from the geometry).** A pixel is in an MC's mask when its coverage is
   >= ``mask.coverage_threshold``; an MC smaller than a pixel (no pixel reaches the
   threshold) gets the single pixel of its largest coverage (``mask.label_subpixel_mcs``),
   so a visible MC is never maskless. An MC whose CNR = peak of its blurred, noise-free
   signal / local noise is below ``mask.min_cnr`` is rendered into the image but LEFT OUT
   of the mask (``visible=False``): the segmentor must not be taught to see what cannot be
   seen. The mask is the union over visible MCs, exactly 0/1.

Positions follow ``docs/architecture.md``: ``[row, col]``, x = column, y = row, pixel centres
at integer coordinates; spacing ``(row, col)`` in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mcgenref.synthesis.config import MCConfig, SynthesisConfig
from mcgenref.synthesis.geometry import MCParams, SampleParams

__all__ = ["MCRecord", "RenderResult", "mc_thickness", "render_sample", "thickness_window"]

_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class MCRecord:
    """What was rendered for one MC (``x`` = column, ``y`` = row)."""

    index: int  # position in SampleParams.mcs
    cluster_id: int  # -1: isolated
    morphology: str
    x_px: float
    y_px: float
    x_mm: float
    y_mm: float
    size_mm: float
    peak_contrast: float  # peak of the blurred noise-free signal (normalised units)
    local_background: float  # b, the local Gaussian mean of the background
    local_noise: float  # robust std of the background's high-pass around the MC
    cnr: float  # peak_contrast / local_noise
    visible: bool  # cnr >= mask.min_cnr (only visible MCs are in the mask)
    n_mask_px: int  # pixels this MC put in the mask (0 when invisible)


@dataclass
class RenderResult:
    """A rendered sample: ``image = background + signal + noise``."""

    image: np.ndarray  # float32 (H, W)
    mask: np.ndarray  # uint8 (H, W), exactly 0/1
    signal: np.ndarray  # float32 (H, W), noise-free blurred MC signal
    mcs: tuple[MCRecord, ...]


# --------------------------------------------------------------------------- MC thickness


def _ellipsoid(u: np.ndarray, v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    q = (u / a) ** 2 + (v / b) ** 2
    return 2.0 * c * np.sqrt(np.maximum(1.0 - q, 0.0))


def _segment_distance2(u: np.ndarray, v: np.ndarray, p0: tuple[float, float],
                       p1: tuple[float, float]) -> np.ndarray:
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    ll = du * du + dv * dv
    if ll == 0.0:
        return (u - p0[0]) ** 2 + (v - p0[1]) ** 2
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / ll, 0.0, 1.0)
    return (u - p0[0] - t * du) ** 2 + (v - p0[1] - t * dv) ** 2


class _Shape:
    """The thickness function of one MC in its own frame (u along the major axis, mm)."""

    def __init__(self, mc: MCParams, mcc: MCConfig) -> None:
        a, b, c = mc.axes_mm
        self.a, self.b, self.c = a, b, c
        self.kind = mc.morphology
        if self.kind in ("punctate", "round_oval"):
            self.bound = a
            return
        srng = np.random.default_rng(mc.shape_seed)
        if self.kind == "pleomorphic":
            if srng.random() < mcc.pleomorphic_fragment_prob:
                self.kind = "fragments"
                self.blobs = []
                bound = 0.0
                for _ in range(int(srng.integers(2, 5))):
                    ak = a * srng.uniform(0.35, 0.6)
                    bk = ak * srng.uniform(0.6, 1.0)
                    ck = c * srng.uniform(0.6, 1.0) * ak / a
                    rho = srng.uniform(0.0, 1.0) ** 0.5
                    phi = srng.uniform(0.0, 2.0 * math.pi)
                    cu, cv = (a - ak) * rho * math.cos(phi), (b - min(bk, b)) * rho * math.sin(phi)
                    th = srng.uniform(0.0, math.pi)
                    self.blobs.append((cu, cv, ak, bk, ck, math.cos(th), math.sin(th)))
                    bound = max(bound, math.hypot(cu, cv) + ak)
                self.bound = bound
            else:
                amp = mcc.pleomorphic_harmonic_amplitude
                self.harmonics = [(k, srng.uniform(0.0, amp), srng.uniform(0.0, 2 * math.pi))
                                  for k in (2, 3, 4)]
                self.bound = a * (1.0 + sum(h[1] for h in self.harmonics))
            return
        if self.kind == "fine_linear":
            n_seg = int(srng.integers(2, 4))
            us = np.linspace(-a, a, n_seg + 1)
            vs = 0.12 * a * srng.standard_normal(n_seg + 1)
            vs -= np.linspace(vs[0], vs[-1], n_seg + 1) * 0.5  # keep the cast roughly centred
            pts = [(float(uu), float(vv)) for uu, vv in zip(us, vs)]
            self.segments = list(zip(pts[:-1], pts[1:]))
            if srng.random() < mcc.linear_branch_prob:
                j = int(srng.integers(1, n_seg)) if n_seg > 1 else 0
                start = pts[j]
                ang = srng.choice([-1.0, 1.0]) * math.radians(srng.uniform(25.0, 50.0))
                length = 2.0 * a * srng.uniform(0.3, 0.6)
                end = (start[0] + length * math.cos(ang), start[1] + length * math.sin(ang))
                self.segments.append((start, end))
            self.bound = max(math.hypot(*p) for seg in self.segments for p in seg) + b
            return
        raise ValueError(f"unknown morphology {mc.morphology!r}")

    def thickness(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a, b, c = self.a, self.b, self.c
        if self.kind in ("punctate", "round_oval"):
            return _ellipsoid(u, v, a, b, c)
        if self.kind == "fragments":
            out = None
            for cu, cv, ak, bk, ck, ct, st in self.blobs:
                du, dv = u - cu, v - cv
                t = _ellipsoid(du * ct + dv * st, -du * st + dv * ct, ak, bk, ck)
                out = t if out is None else np.maximum(out, t)
            return out
        if self.kind == "pleomorphic":
            un, vn = u / a, v / b
            q = un * un + vn * vn
            phi = np.arctan2(vn, un)
            r = np.ones_like(phi)
            for k, amp, ph in self.harmonics:
                r += amp * np.cos(k * phi + ph)
            return 2.0 * c * np.sqrt(np.maximum(1.0 - q / (r * r), 0.0))
        # fine_linear: a tube of radius b (depth radius c) along the polyline
        d2 = None
        for p0, p1 in self.segments:
            s = _segment_distance2(u, v, p0, p1)
            d2 = s if d2 is None else np.minimum(d2, s)
        return 2.0 * c * np.sqrt(np.maximum(1.0 - d2 / (b * b), 0.0))


def mc_thickness(mc: MCParams, mcc: MCConfig, dy_mm: np.ndarray, dx_mm: np.ndarray
                 ) -> np.ndarray:
    """Calcium thickness (mm) of ``mc`` at physical offsets from its centre (broadcast)."""
    shape = _Shape(mc, mcc)
    ct, st = math.cos(mc.orientation_rad), math.sin(mc.orientation_rad)
    u = dx_mm * ct + dy_mm * st
    v = -dx_mm * st + dy_mm * ct
    return shape.thickness(u, v)


def thickness_window(mc: MCParams, spacing_mm: tuple[float, float], config: SynthesisConfig
                     ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Partial-volume thickness and coverage of ``mc`` on the pixel grid, locally.

    Returns ``(row0, col0, thickness, coverage)``: the window's top-left pixel (may lie
    outside the image) and two float64 arrays, the mean thickness (mm) over each pixel and
    the fraction of each pixel inside the footprint, from ``supersample``^2 points per pixel.
    """
    shape = _Shape(mc, config.mc)
    sr, sc = spacing_mm
    n = config.supersample
    hr = shape.bound / sr
    hc = shape.bound / sc
    r0 = int(math.floor(mc.centre_row - hr)) - 1
    r1 = int(math.ceil(mc.centre_row + hr)) + 1
    c0 = int(math.floor(mc.centre_col - hc)) - 1
    c1 = int(math.ceil(mc.centre_col + hc)) + 1
    h, w = r1 - r0 + 1, c1 - c0 + 1
    sub = (np.arange(n, dtype=np.float64) + 0.5) / n - 0.5
    rows = (r0 + np.arange(h)[:, None] + sub[None, :]).ravel()
    cols = (c0 + np.arange(w)[:, None] + sub[None, :]).ravel()
    dy = ((rows - mc.centre_row) * sr)[:, None]
    dx = ((cols - mc.centre_col) * sc)[None, :]
    ct, st = math.cos(mc.orientation_rad), math.sin(mc.orientation_rad)
    t = shape.thickness(dx * ct + dy * st, -dx * st + dy * ct)
    t4 = t.reshape(h, n, w, n)
    inv = 1.0 / (n * n)
    thick = t4.sum(axis=(1, 3)) * inv
    cover = (t4 > 0.0).sum(axis=(1, 3)) * inv
    return r0, c0, thick, cover


# --------------------------------------------------------------------------- local helpers


def _psf_kernel(sigma_px: float) -> np.ndarray:
    """A normalised 1-D kernel with variance sigma_px^2 (exact for small sigma)."""
    if sigma_px <= 0.0:
        return np.ones(1)
    if sigma_px < 0.8:
        p = 0.5 * sigma_px * sigma_px
        return np.array([p, 1.0 - 2.0 * p, p])
    radius = int(math.ceil(4.0 * sigma_px))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    return k / k.sum()


def _conv_matrix(kernel: np.ndarray, n: int) -> np.ndarray:
    """Full (zero-padded) convolution with ``kernel`` as an (n + len - 1, n) matrix."""
    k = len(kernel)
    d = np.arange(n + k - 1)[:, None] - np.arange(n)[None, :]
    ok = (d >= 0) & (d < k)
    return np.where(ok, kernel[np.clip(d, 0, k - 1)], 0.0)


def _blur(arr: np.ndarray, kr: np.ndarray, kc: np.ndarray) -> np.ndarray:
    """Full convolution (zero outside, output grown by the kernel radii): sum preserved."""
    out = arr
    if len(kr) > 1:
        out = _conv_matrix(kr, out.shape[0]) @ out
    if len(kc) > 1:
        out = out @ _conv_matrix(kc, out.shape[1]).T
    return out


def _clip_window(r0: int, c0: int, h: int, w: int, shape: tuple[int, int]
                 ) -> tuple[slice, slice, slice, slice] | None:
    """Image and window slices of the part of a window that lies inside the image."""
    ir0, ic0 = max(r0, 0), max(c0, 0)
    ir1, ic1 = min(r0 + h, shape[0]), min(c0 + w, shape[1])
    if ir0 >= ir1 or ic0 >= ic1:
        return None
    return (slice(ir0, ir1), slice(ic0, ic1),
            slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))


def _local_mean(bg: np.ndarray, row: float, col: float, sigma_r: float, sigma_c: float) -> float:
    """Gaussian-weighted mean of ``bg`` around (row, col) (weights renormalised at borders)."""
    h, w = bg.shape
    rr = int(math.ceil(3.0 * sigma_r)) + 1
    rc = int(math.ceil(3.0 * sigma_c)) + 1
    ri, ci = int(round(row)), int(round(col))
    r0, r1 = max(ri - rr, 0), min(ri + rr + 1, h)
    c0, c1 = max(ci - rc, 0), min(ci + rc + 1, w)
    if r0 >= r1 or c0 >= c1:
        return float(np.mean(bg))
    wr = np.exp(-0.5 * ((np.arange(r0, r1) - row) / sigma_r) ** 2)
    wc = np.exp(-0.5 * ((np.arange(c0, c1) - col) / sigma_c) ** 2)
    region = bg[r0:r1, c0:c1].astype(np.float64, copy=False)
    return float(wr @ region @ wc / (wr.sum() * wc.sum()))


class _LocalNoise:
    """1.4826 x MAD of the background's high-pass (bg - Gaussian) in a window around an MC.

    The high-pass is computed once, on the bounding box of all the MCs' windows padded by the
    Gaussian's (truncated) radius, so each window's values are exactly those a per-window
    filter would give, at a fraction of the cost.
    """

    def __init__(self, bg: np.ndarray, centres: list[tuple[float, float]],
                 spacing: tuple[float, float], config: SynthesisConfig) -> None:
        nc = config.noise
        self.floor = nc.min_local_noise
        self.shape = bg.shape
        h, w = bg.shape
        sr, sc = spacing
        self.half_r = max(int(math.ceil(0.5 * nc.local_window_mm / sr)), 2)
        self.half_c = max(int(math.ceil(0.5 * nc.local_window_mm / sc)), 2)
        self.hp = None
        if not centres:
            return
        s_r, s_c = nc.highpass_sigma_mm / sr, nc.highpass_sigma_mm / sc
        pad_r, pad_c = int(math.ceil(3.0 * s_r)), int(math.ceil(3.0 * s_c))
        rows = [int(round(r)) for r, _ in centres]
        cols = [int(round(c)) for _, c in centres]
        r0 = min(max(min(rows) - self.half_r - pad_r, 0), h - 1)
        r1 = max(min(max(rows) + self.half_r + pad_r + 1, h), r0 + 1)
        c0 = min(max(min(cols) - self.half_c - pad_c, 0), w - 1)
        c1 = max(min(max(cols) + self.half_c + pad_c + 1, w), c0 + 1)
        region = bg[r0:r1, c0:c1].astype(np.float64)
        self.hp = region - ndimage.gaussian_filter(region, (s_r, s_c), mode="reflect",
                                                   truncate=3.0)
        self.r0, self.c0 = r0, c0

    def __call__(self, row: float, col: float) -> float:
        if self.hp is None:
            return self.floor
        h, w = self.shape
        ri, ci = int(round(row)), int(round(col))
        ir0, ir1 = max(ri - self.half_r, self.r0), min(ri + self.half_r + 1, h)
        ic0, ic1 = max(ci - self.half_c, self.c0), min(ci + self.half_c + 1, w)
        if ir1 - ir0 < 2 or ic1 - ic0 < 2:
            return self.floor
        inner = self.hp[ir0 - self.r0:ir1 - self.r0, ic0 - self.c0:ic1 - self.c0].ravel()
        med = _median(inner)
        mad = _median(np.abs(inner - med))
        return max(_MAD_TO_STD * mad, self.floor)


def _median(x: np.ndarray) -> float:
    n = x.size
    k = n // 2
    if n % 2:
        return float(np.partition(x, k)[k])
    part = np.partition(x, (k - 1, k))
    return 0.5 * float(part[k - 1] + part[k])


# --------------------------------------------------------------------------- render


def render_sample(background: np.ndarray, spacing_mm: tuple[float, float],
                  params: SampleParams, config: SynthesisConfig, noise_seed: int
                  ) -> RenderResult:
    """Insert the MCs of ``params`` into ``background`` (normalised float32, 2-D).

    Physics and the mask rule are in the module docstring. In short: per MC, partial-volume
    thickness at ``supersample``x sub-pixel resolution in a small window, Beer-Lambert
    contrast damped on dense (bright) local background, PSF blur (sum-preserving), and
    signal-dependent noise matched to the local background noise. The mask holds the pixels
    covered >= ``coverage_threshold`` by a *visible* MC (CNR >= ``min_cnr``; an MC smaller
    than a pixel gets its largest-coverage pixel); invisible MCs are in the image and the
    signal but not in the mask. Same inputs and ``noise_seed`` give byte-identical arrays.
    """
    bg = np.asarray(background)
    if bg.ndim != 2:
        raise ValueError(f"background must be 2-D, got shape {bg.shape}")
    if tuple(bg.shape) != tuple(params.shape):
        raise ValueError(f"background shape {bg.shape} != params.shape {params.shape}")
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    if any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(spacing, params.spacing_mm)):
        raise ValueError(f"spacing {spacing} != params.spacing_mm {params.spacing_mm}")
    shape = (int(bg.shape[0]), int(bg.shape[1]))
    sr, sc = spacing
    rng = np.random.default_rng(noise_seed)
    signal = np.zeros(shape, dtype=np.float64)
    noise = np.zeros(shape, dtype=np.float64)
    mask = np.zeros(shape, dtype=np.uint8)
    cc = config.contrast
    add_noise = config.noise.enabled and params.noise_gain > 0.0
    records: list[MCRecord] = []
    noise_of = _LocalNoise(bg, [(m.centre_row, m.centre_col) for m in params.mcs], spacing,
                           config)

    for index, mc in enumerate(params.mcs):
        r0, c0, thick, cover = thickness_window(mc, spacing, config)
        b = _local_mean(bg, mc.centre_row, mc.centre_col,
                        cc.local_mean_sigma_mm / sr, cc.local_mean_sigma_mm / sc)
        m = cc.modulation(b)
        s = (mc.attenuation_per_mm * m) * thick
        kr = _psf_kernel(mc.psf_sigma_mm / sr)
        kc = _psf_kernel(mc.psf_sigma_mm / sc)
        s_blur = _blur(s, kr, kc)
        br0, bc0 = r0 - len(kr) // 2, c0 - len(kc) // 2
        local_noise = noise_of(mc.centre_row, mc.centre_col)

        peak = 0.0
        clip = _clip_window(br0, bc0, s_blur.shape[0], s_blur.shape[1], shape)
        if clip is not None:
            isl_r, isl_c, wsl_r, wsl_c = clip
            part = s_blur[wsl_r, wsl_c]
            peak = float(part.max())
            signal[isl_r, isl_c] += part
        if add_noise:
            z = rng.standard_normal(s_blur.shape)
            if clip is not None and peak > 0.0:
                std = (params.noise_gain * local_noise) * np.sqrt(
                    np.maximum(s_blur[wsl_r, wsl_c], 0.0) / peak)
                noise[isl_r, isl_c] += z[wsl_r, wsl_c] * std
        cnr = peak / local_noise
        visible = bool(peak > 0.0 and cnr >= config.mask.min_cnr)

        n_mask = 0
        if visible:
            clip_m = _clip_window(r0, c0, cover.shape[0], cover.shape[1], shape)
            if clip_m is not None:
                isl_r, isl_c, wsl_r, wsl_c = clip_m
                cov = cover[wsl_r, wsl_c]
                own = cov >= config.mask.coverage_threshold
                if not own.any() and config.mask.label_subpixel_mcs and cov.max() > 0.0:
                    own.flat[int(np.argmax(cov))] = True
                n_mask = int(own.sum())
                mask[isl_r, isl_c] |= own.astype(np.uint8)

        records.append(MCRecord(
            index=index, cluster_id=mc.cluster_id, morphology=mc.morphology,
            x_px=mc.centre_col, y_px=mc.centre_row,
            x_mm=mc.centre_col * sc, y_mm=mc.centre_row * sr, size_mm=mc.size_mm,
            peak_contrast=peak, local_background=b, local_noise=local_noise, cnr=cnr,
            visible=visible, n_mask_px=n_mask,
        ))

    image = (bg.astype(np.float64) + signal + noise).astype(np.float32)
    return RenderResult(image=image, mask=mask, signal=signal.astype(np.float32),
                        mcs=tuple(records))
