"""Procedural power-law backgrounds and the power-spectrum slope that characterises them.

Mammographic parenchyma has a power spectrum close to a power law, P(f) ~ 1/f^beta with
beta ~ 2.5-3.5 (mean about 3; Burgess et al. 2001). :func:`procedural_background` draws a
Gaussian random field with that spectrum, defined in physical frequency (cycles/mm) so that
the texture has the same physical scale at every pixel spacing, then scales it to the
normalised intensity range and adds a little white (quantum-like) noise. It is the fallback
when no real negative mammograms are available. :func:`power_spectrum_slope` measures beta
on any patch (used by the tests and the realism benchmark).
"""

from __future__ import annotations

import math

import numpy as np

from mcgenref.synthesis.config import BackgroundConfig

__all__ = ["power_spectrum_slope", "procedural_background", "radial_power_spectrum"]


def _frequency_grid(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> np.ndarray:
    """Radial frequency (cycles/mm) of each FFT bin."""
    fy = np.fft.fftfreq(shape[0], d=spacing_mm[0])
    fx = np.fft.fftfreq(shape[1], d=spacing_mm[1])
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def procedural_background(rng: np.random.Generator, shape: tuple[int, int],
                          spacing_mm: tuple[float, float], config: BackgroundConfig,
                          beta: float | None = None) -> np.ndarray:
    """A float32 power-law texture of ``shape`` at ``spacing_mm`` (row, col), normalised.

    Gaussian random field with P(f) ~ f^-beta (f in cycles/mm; the DC term is zero), beta
    drawn uniformly from ``config.beta_range`` unless given; scaled to a mean drawn from
    ``config.mean_range`` and a std from ``config.std_range``; plus white noise with a std
    from ``config.white_noise_std_range`` (normalised units).
    """
    shape = (int(shape[0]), int(shape[1]))
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    if min(shape) < 2 or min(spacing) <= 0:
        raise ValueError(f"invalid shape {shape} or spacing {spacing}")
    if beta is None:
        beta = float(rng.uniform(*config.beta_range))
    mean = float(rng.uniform(*config.mean_range))
    std = float(rng.uniform(*config.std_range))
    white = float(rng.uniform(*config.white_noise_std_range))
    f = _frequency_grid(shape, spacing)
    f[0, 0] = 1.0
    amplitude = f ** (-0.5 * beta)
    amplitude[0, 0] = 0.0
    spectrum = np.fft.fft2(rng.standard_normal(shape))  # white, Hermitian-symmetric
    field = np.fft.ifft2(spectrum * amplitude).real
    field -= field.mean()
    sd = field.std()
    if sd > 0:
        field *= std / sd
    field += mean
    if white > 0:
        field += white * rng.standard_normal(shape)
    return field.astype(np.float32)


def radial_power_spectrum(patch: np.ndarray, spacing_mm: tuple[float, float],
                          n_bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a (Hann-windowed, mean-removed) patch.

    Returns ``(f, p)``: bin centres in cycles/mm (log-spaced between the lowest non-zero
    frequency and Nyquist) and the mean power in each bin (empty bins dropped).
    """
    img = np.asarray(patch, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"patch must be 2-D and at least 8x8, got {img.shape}")
    img = img - img.mean()
    win = np.hanning(img.shape[0])[:, None] * np.hanning(img.shape[1])[None, :]
    img = img * win
    img -= win * (img.sum() / win.sum())  # remove the windowed mean (leak-free DC)
    power = np.abs(np.fft.fft2(img)) ** 2
    f = _frequency_grid(img.shape, spacing_mm)
    fmin = 1.0 / (max(img.shape[0] * spacing_mm[0], img.shape[1] * spacing_mm[1]))
    fmax = 0.5 / max(spacing_mm)
    edges = np.geomspace(fmin, fmax, n_bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    sums = np.bincount(idx[ok], weights=power.ravel()[ok], minlength=n_bins)
    keep = counts > 0
    centres = np.sqrt(edges[:-1] * edges[1:])
    return centres[keep], sums[keep] / counts[keep]


def power_spectrum_slope(patch: np.ndarray, spacing_mm: tuple[float, float],
                         fmin_cpmm: float, fmax_cpmm: float) -> float:
    """beta of P(f) ~ 1/f^beta, fitted (log-log least squares) in [fmin, fmax] cycles/mm.

    Returned as a positive number (a steeper fall-off gives a larger beta).
    """
    if not (0 < fmin_cpmm < fmax_cpmm):
        raise ValueError(f"need 0 < fmin < fmax, got {fmin_cpmm}, {fmax_cpmm}")
    f, p = radial_power_spectrum(patch, spacing_mm)
    sel = (f >= fmin_cpmm) & (f <= fmax_cpmm) & (p > 0)
    if sel.sum() < 3:
        raise ValueError("fewer than 3 frequency bins in the fitting band")
    slope = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0]
    return float(-slope) if math.isfinite(slope) else float("nan")
