"""A classical, label-free MC detector: difference of Gaussians over local noise.

The yardstick every learned result in this project is compared with (METHOD section 6).
On the normalised image (see docs/architecture.md), all scales in mm:

- spot signal ``d = G(sigma_spot) * x - G(sigma_background) * x`` (a band-pass matched to
  0.1-1 mm bright specks; ``G(s)`` a Gaussian of standard deviation ``s``): the project's one
  DoG, :func:`mcgenref.spots.dog_response`;
- local noise ``n``: the local spread of ``d`` itself, ``1.2533 * G(sigma_noise) * |d|``
  (the mean absolute deviation of a zero-mean Gaussian variable times sqrt(pi/2) is its
  standard deviation). Measuring the spread of the band-pass response, not of the finest
  pixel noise, makes the threshold mean the same thing on smooth scanned film (where pixel
  noise is tiny and tissue texture dominates) and on noisy digital detectors;
- contrast-to-noise ``cnr = d / n``, mapped to a score in [0, 1) by
  ``p = 1 - 2 ** (-max(cnr, 0) / cnr_half)``: monotone, so sweeping a threshold on ``p`` is
  sweeping the CNR threshold, and ``p = 0.5`` exactly at ``cnr = cnr_half``.

The score map is written in the same ``<stem>_prob.png`` format as the model's, so the same
post-processing, clustering and evaluation apply to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mcgenref.spots import dog_response, sigma_px


@dataclass(frozen=True)
class ClassicalConfig:
    """Scales of the DoG detector, in mm.

    The defaults were tuned on development data by ``recipes/tune_classical.py`` (Optuna,
    16 trials; objective: mean cluster sensitivity at 0.25-2 false clusters per normal image
    on the 8 mini-MIAS calcification images and 40 training-split normals): 0.059 for the
    first guess (0.1, 0.6, 3.0 mm), 0.139 for these (rounded). The baseline is tuned like
    the model is calibrated, so the comparison is fair.

    Attributes:
        sigma_spot_mm: inner Gaussian (~ the radius of a blurred film MC); below half a
            pixel it is clamped to 0.5 pixel, so the detector does not amplify pixel noise.
        sigma_background_mm: outer Gaussian: removes the tissue background while keeping
            MC-sized specks.
        sigma_noise_mm: the window (Gaussian sigma) of the local spread estimate: local
            enough to follow dense/fatty tissue.
        cnr_half: the CNR at which the score is 0.5 (the operating threshold on the score is
            chosen on development data; see docs/model_card.md).
    """

    sigma_spot_mm: float = 0.19
    sigma_background_mm: float = 0.39
    sigma_noise_mm: float = 1.3
    cnr_half: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_spot_mm < self.sigma_background_mm:
            raise ValueError("need 0 < sigma_spot_mm < sigma_background_mm")
        if self.sigma_noise_mm <= 0 or self.cnr_half <= 0:
            raise ValueError("sigma_noise_mm and cnr_half must be > 0")


def classical_cnr(
    image: np.ndarray, spacing_mm: tuple[float, float], config: ClassicalConfig
) -> np.ndarray:
    """The DoG contrast-to-noise map (float32, same shape) of a normalised image."""
    d = dog_response(image, spacing_mm, config.sigma_spot_mm, config.sigma_background_mm,
                     min_sigma_px=0.5)
    noise = 1.2533 * ndimage.gaussian_filter(np.abs(d), sigma_px(config.sigma_noise_mm, spacing_mm))
    return (d / np.maximum(noise, 1e-4)).astype(np.float32)


def classical_score(
    image: np.ndarray, spacing_mm: tuple[float, float], config: ClassicalConfig
) -> np.ndarray:
    """Score in [0, 1): ``1 - 2 ** (-max(cnr, 0) / cnr_half)`` (see module docstring)."""
    cnr = classical_cnr(image, spacing_mm, config)
    return (1.0 - np.exp2(-np.maximum(cnr, 0.0) / config.cnr_half)).astype(np.float32)
