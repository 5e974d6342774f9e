"""Features of bright spots (real or synthetic microcalcifications) and of backgrounds.

Used by ``benchmarks/realism.py`` to compare synthetic MCs with the real ones inside the
calcification clusters of mini-MIAS, and procedural backgrounds with real normal tissue.
Every size is in millimetres and converted with the image's pixel spacing ``(row, col)``;
intensities are the normalised ones of :class:`mcgenref.io.normalize.Normalization`
(0 ~ 1st, 1 ~ 99th percentile inside the breast; MCs are bright).

Detector
    The benchmark finds spots with the project's one DoG detector,
    :func:`mcgenref.spots.find_spot_candidates`. It finds MCs and, just as happily, noise and
    texture peaks; that is why the benchmark also runs it on normal tissue, as the reference
    for "what a peak with no MC looks like".

Measurement (:func:`measure_spots`), per position
    * the position is refined to the brightest pixel of its 3 x 3 neighbourhood, then to a
      sub-pixel centre by a per-axis parabola through that pixel and its neighbours;
    * ``background``: median of the pixels in the annulus ``annulus_mm`` (0.6-1.2 mm);
    * ``contrast``: the brightest pixel minus ``background``;
    * ``noise``: 1.4826 x MAD of a high-pass image (image minus its Gaussian blur with
      ``noise_sigma_mm``) in the annulus, divided by the high-pass filter's gain for white noise
      so that it estimates the per-pixel noise standard deviation of white noise;
    * ``cnr`` = contrast / noise;
    * ``profile``: mean over 16 angles of the cubic-spline interpolated image minus background,
      at radii ``PROFILE_RADII_MM`` (0-1 mm in 0.1 mm steps), centred on the sub-pixel centre;
    * ``fwhm_mm``: twice the radius where the (finely sampled) profile first falls to half its
      centre value, linearly interpolated; NaN when the centre value is not positive or the
      profile never halves within ``max_fwhm_radius_mm``.

Background statistic (:func:`power_spectrum_slope`)
    beta of P(f) ~ 1/f^beta fitted (least squares in log-log) over a band of radial frequencies
    in cycles/mm on a Hann-windowed, mean-removed patch. If the synthesis package provides
    :func:`mcgenref.synthesis.background.power_spectrum_slope`, that one is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mcgenref.errors import InputError
from mcgenref.spots import sigma_px, spacing_pair

#: Radii (mm) at which :func:`measure_spots` samples the radial profile.
PROFILE_RADII_MM = np.round(np.arange(0.0, 1.0001, 0.1), 3)
#: Fine radial grid (mm) used for the FWHM crossing.
_FINE_STEP_MM = 0.01
_N_ANGLES = 16

#: Default frequency band (cycles/mm) for beta: above the breast-size/windowing range and
#: below the film-grain / quantisation noise floor of 200 um scanned film (Nyquist 2.5 c/mm).
DEFAULT_BETA_BAND_CPMM = (0.1, 0.8)


def _highpass_gain(sigma_px: tuple[float, float]) -> float:
    """Std of (I - G*I) for unit white noise: sqrt(sum((delta - g)^2))."""
    r = [int(np.ceil(4 * s)) + 1 for s in sigma_px]
    delta = np.zeros((2 * r[0] + 1, 2 * r[1] + 1), dtype=np.float64)
    delta[r[0], r[1]] = 1.0
    g = ndimage.gaussian_filter(delta, sigma_px, mode="constant")
    return float(np.sqrt(np.sum((delta - g) ** 2)))


def measure_spots(image_norm: np.ndarray, spacing_mm, positions, *,
                  annulus_mm: tuple[float, float] = (0.6, 1.2),
                  noise_sigma_mm: float = 0.2,
                  radii_mm: Sequence[float] = PROFILE_RADII_MM,
                  max_fwhm_radius_mm: float = 1.2,
                  refine: bool = True) -> dict[str, np.ndarray]:
    """Peak contrast, local noise, CNR, FWHM (mm) and radial profile of spots.

    ``positions``: ``(n, 2)`` (row, col) in pixels (floats allowed). See the module docstring
    for the definitions. Returns a dict of arrays, each of length ``n`` (``profile``:
    ``(n, len(radii_mm))``): ``row``, ``col`` (refined sub-pixel centre), ``peak``,
    ``background``, ``contrast``, ``noise``, ``cnr``, ``fwhm_mm``, ``profile``, ``radii_mm``
    (the radii, not per spot).
    """
    img = np.asarray(image_norm, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {img.shape}")
    sp = spacing_pair(spacing_mm)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    n = len(pos)
    radii = np.asarray(radii_mm, dtype=np.float64)
    out: dict[str, np.ndarray] = {"radii_mm": radii}
    if n == 0:
        for k in ("row", "col", "peak", "background", "contrast", "noise", "cnr", "fwhm_mm"):
            out[k] = np.zeros(0)
        out["profile"] = np.zeros((0, len(radii)))
        return out
    H, W = img.shape
    # 1. integer peak: brightest pixel in the 3x3 neighbourhood of the rounded position
    ri = np.clip(np.rint(pos[:, 0]).astype(np.int64), 0, H - 1)
    ci = np.clip(np.rint(pos[:, 1]).astype(np.int64), 0, W - 1)
    if refine:
        pad = np.pad(img, 1, mode="edge")
        offs = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        vals = np.stack([pad[ri + 1 + dr, ci + 1 + dc] for dr, dc in offs], axis=1)
        best = np.argmax(vals, axis=1)
        ri = np.clip(ri + np.array([offs[b][0] for b in best]), 0, H - 1)
        ci = np.clip(ci + np.array([offs[b][1] for b in best]), 0, W - 1)
        # 2. sub-pixel centre: per-axis parabola through the peak and its neighbours
        def pad_v(dr: int, dc: int) -> np.ndarray:
            return pad[np.clip(ri + 1 + dr, 0, H + 1), np.clip(ci + 1 + dc, 0, W + 1)]

        v0 = pad_v(0, 0)

        def _parab(vm, vp):
            den = vm - 2 * v0 + vp
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(den < 0, 0.5 * (vm - vp) / den, 0.0)
            return np.clip(d, -0.5, 0.5)
        rc = ri + _parab(pad_v(-1, 0), pad_v(1, 0))
        cc = ci + _parab(pad_v(0, -1), pad_v(0, 1))
    else:
        rc, cc = pos[:, 0].copy(), pos[:, 1].copy()
    peak = img[ri, ci]

    # 3. annulus statistics on a pixel window around each spot; distances from the sub-pixel
    #    centre, so that an off-centre spot does not leak into one side of the annulus
    a0, a1 = annulus_mm
    hr, hc = int(np.ceil(a1 / sp[0])) + 2, int(np.ceil(a1 / sp[1])) + 2
    dr, dc = np.mgrid[-hr: hr + 1, -hc: hc + 1]
    dr, dc = dr.ravel(), dc.ravel()
    rr = ri[:, None] + dr[None, :]
    cc_ = ci[:, None] + dc[None, :]
    dist = np.hypot((rr - rc[:, None]) * sp[0], (cc_ - cc[:, None]) * sp[1])
    inside = (rr >= 0) & (rr < H) & (cc_ >= 0) & (cc_ < W)
    ann = (dist >= a0) & (dist <= a1) & inside
    rr = np.clip(rr, 0, H - 1)
    cc_ = np.clip(cc_, 0, W - 1)
    ring = np.where(ann, img[rr, cc_], np.nan)
    sig_hp = sigma_px(noise_sigma_mm, sp)
    hp = img - ndimage.gaussian_filter(img, sig_hp, mode="reflect")
    ring_hp = np.where(ann, hp[rr, cc_], np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        background = np.nanmedian(ring, axis=1)
        mad = np.nanmedian(np.abs(ring_hp - np.nanmedian(ring_hp, axis=1, keepdims=True)), axis=1)
    noise = 1.4826 * mad / _highpass_gain(sig_hp)
    contrast = peak - background
    with np.errstate(divide="ignore", invalid="ignore"):
        cnr = np.where(noise > 0, contrast / noise, np.nan)

    # 4. radial profile by cubic-spline interpolation on circles about the sub-pixel centre
    fine = np.arange(0.0, max_fwhm_radius_mm + 1e-9, _FINE_STEP_MM)
    all_r = np.concatenate([radii, fine])
    theta = np.linspace(0.0, 2 * np.pi, _N_ANGLES, endpoint=False)
    dy = (all_r[:, None] * np.sin(theta)[None, :]) / sp[0]
    dx = (all_r[:, None] * np.cos(theta)[None, :]) / sp[1]
    coords_r = rc[:, None, None] + dy[None]
    coords_c = cc[:, None, None] + dx[None]
    coeffs = ndimage.spline_filter(img, order=3, mode="mirror")
    samp = ndimage.map_coordinates(coeffs, [coords_r.ravel(), coords_c.ravel()], order=3,
                                   mode="mirror", prefilter=False)
    prof_all = samp.reshape(n, len(all_r), _N_ANGLES).mean(axis=2) - background[:, None]
    profile = prof_all[:, : len(radii)]
    pf = prof_all[:, len(radii):]
    fwhm = np.full(n, np.nan)
    p0 = pf[:, 0]
    half = 0.5 * p0
    below = pf <= half[:, None]
    below[:, 0] = False
    has = below.any(axis=1) & (p0 > 0)
    idx = np.argmax(below, axis=1)
    for i in np.nonzero(has)[0]:
        j = idx[i]
        y0, y1 = pf[i, j - 1], pf[i, j]
        t = (y0 - half[i]) / (y0 - y1) if y0 != y1 else 0.0
        fwhm[i] = 2.0 * (fine[j - 1] + t * (fine[j] - fine[j - 1]))
    out.update(row=rc, col=cc, peak=peak, background=background, contrast=contrast,
               noise=noise, cnr=cnr, fwhm_mm=fwhm, profile=profile)
    return out


def _own_power_spectrum_slope(patch: np.ndarray, spacing_mm,
                              band_cpmm: tuple[float, float] = DEFAULT_BETA_BAND_CPMM,
                              mask: np.ndarray | None = None) -> float:
    """beta of a 1/f^beta fit of the radially averaged power spectrum in ``band_cpmm``."""
    p = np.asarray(patch, dtype=np.float64)
    if p.ndim != 2 or min(p.shape) < 16:
        raise InputError(f"need a 2-D patch of at least 16 x 16, got {p.shape}")
    sp = spacing_pair(spacing_mm)
    p = p - p.mean()
    win = np.outer(np.hanning(p.shape[0]), np.hanning(p.shape[1]))
    ps = np.abs(np.fft.fft2(p * win)) ** 2
    fy = np.fft.fftfreq(p.shape[0], d=sp[0])
    fx = np.fft.fftfreq(p.shape[1], d=sp[1])
    f = np.hypot(fy[:, None], fx[None, :])
    lo, hi = band_cpmm
    sel = (f >= lo) & (f <= hi)
    if sel.sum() < 8:
        raise InputError(f"frequency band {band_cpmm} c/mm holds too few samples for {p.shape}")
    # radial average in log-spaced bins so that each octave weighs the same
    edges = np.geomspace(lo, hi, 16)
    which = np.digitize(f[sel], edges) - 1
    lf, lp = [], []
    for b in range(len(edges) - 1):
        m = which == b
        if m.any():
            lf.append(np.log(f[sel][m].mean()))
            lp.append(np.log(ps[sel][m].mean()))
    if len(lf) < 3:
        return float("nan")
    slope = np.polyfit(lf, lp, 1)[0]
    return float(-slope)


def power_spectrum_slope(patch: np.ndarray, spacing_mm,
                         band_cpmm: tuple[float, float] = DEFAULT_BETA_BAND_CPMM) -> float:
    """beta of P(f) ~ 1/f^beta of a patch, fitted over ``band_cpmm`` (cycles/mm).

    Uses :func:`mcgenref.synthesis.background.power_spectrum_slope` when it exists (so that the
    synthesis and the evaluation measure beta the same way), else the estimator of this module.
    """
    try:
        from mcgenref.synthesis.background import power_spectrum_slope as _synth_slope
    except ImportError:  # pragma: no cover - the synthesis package always ships it
        return _own_power_spectrum_slope(patch, spacing_mm, band_cpmm)
    try:
        return float(_synth_slope(patch, spacing_pair(spacing_mm), band_cpmm[0], band_cpmm[1]))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (NaNs dropped); NaN if a sample is empty."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    ca = np.searchsorted(a, grid, side="right") / len(a)
    cb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(ca - cb)))


def summarise(values: np.ndarray) -> dict[str, float]:
    """n, median, 25th and 75th percentiles of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"n": int(len(v)), "median": float(med), "q25": float(q25), "q75": float(q75)}
