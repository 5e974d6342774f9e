"""Configuration of the synthetic-microcalcification image-formation model.

Every number here is a project decision (the MC-GenRef paper publishes none): each field has
a default and, beside it, the reason for that default (physics or the radiology literature).
All sizes are in millimetres and are converted to pixels with each image's own spacing, so
the same configuration serves 50-200 um detectors and scanned film.

Intensities are *normalised* (0 ~ 1st, 1 ~ 99th percentile inside the breast, dense tissue
bright); an MC adds a positive signal. The contrast, noise and visibility numbers are
calibrated against real MCs by the realism benchmark (:mod:`mcgenref.evaluation.realism`);
the defaults below are physically motivated starting points.

The configs are frozen dataclasses that round-trip through :func:`mcgenref.config.to_dict` /
:func:`mcgenref.config.from_dict`; ``__post_init__`` rejects inconsistent values with
``ValueError`` (turned into :class:`mcgenref.errors.ConfigError` by ``from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "BackgroundConfig",
    "ClusterConfig",
    "ContrastConfig",
    "MCConfig",
    "MaskConfig",
    "NoiseConfig",
    "PSFConfig",
    "SynthesisConfig",
]

_PROB_TOL = 1e-6


def _range(name: str, value: tuple[float, float], *, low: float | None = None,
           high: float | None = None, strict_low: bool = False) -> None:
    """Check that ``value`` is an ordered (lo, hi) pair inside [low, high]."""
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}")
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} must be ordered (min <= max), got {value!r}")
    if low is not None and (lo < low or (strict_low and lo <= low)):
        cmp = ">" if strict_low else ">="
        raise ValueError(f"{name} must be {cmp} {low}, got {value!r}")
    if high is not None and hi > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def _prob(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _probs_sum_to_one(name: str, values: tuple[float, ...]) -> None:
    for v in values:
        if not (v >= 0.0 and math.isfinite(v)):
            raise ValueError(f"{name}: probabilities must be >= 0, got {values!r}")
    total = sum(values)
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"{name}: probabilities must sum to 1, got {total:.4f}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class MCConfig:
    """Size and shape of single microcalcifications."""

    #: Median of the log-normal MC size (largest diameter, mm). Radiology reports MCs of
    #: 0.1-1 mm, most below 0.5 mm; a log-normal with median 0.3 mm and log-sigma 0.35 puts
    #: ~93 % of MCs below 0.5 mm (sizes are clipped to ``size_range_mm``).
    size_median_mm: float = 0.3
    #: Log-sigma of the size distribution (see ``size_median_mm``). 0.35 rather than a first
    #: guess of 0.5: with the calibrated contrast, 0.5 gave more large, high-CNR MCs than the
    #: real mini-MIAS MCs show (docs/realism.md).
    size_log_sigma: float = 0.35
    #: Hard limits of the MC size (mm): 0.1 mm is the smallest MC reported on mammograms,
    #: 1 mm the usual upper bound of "micro"calcifications.
    size_range_mm: tuple[float, float] = (0.1, 1.0)
    #: BI-RADS: punctate MCs are round and < 0.5 mm; larger draws are clipped to this.
    punctate_max_mm: float = 0.5
    #: Morphology mix. BI-RADS morphologies: punctate and round/oval (typically benign, the
    #: most frequent), fine pleomorphic (irregular; suspicious), fine linear / linear
    #: branching (casting; highly suspicious, rarest).
    p_punctate: float = 0.35
    p_round_oval: float = 0.30
    p_pleomorphic: float = 0.25
    p_fine_linear: float = 0.10
    #: Minor/major axis ratio of punctate MCs: nearly round by definition.
    punctate_aspect_range: tuple[float, float] = (0.8, 1.0)
    #: Minor/major axis ratio of round/oval MCs: from round to clearly oval (2:1).
    oval_aspect_range: tuple[float, float] = (0.5, 1.0)
    #: Depth semi-axis (along the X-ray beam) relative to sqrt(a*b) of the in-plane
    #: semi-axes: an MC has no preferred orientation relative to the beam, so it is about as
    #: deep as it is wide, with some spread.
    depth_ratio_range: tuple[float, float] = (0.7, 1.3)
    #: Largest amplitude of each low-order harmonic (orders 2-4) that perturbs the outline of
    #: a pleomorphic MC (relative to its radius): visibly irregular but still one object.
    pleomorphic_harmonic_amplitude: float = 0.15
    #: Probability that a pleomorphic MC is a union of 2-4 small fragments instead of one
    #: perturbed ellipsoid (fine pleomorphic MCs are often fragmented).
    pleomorphic_fragment_prob: float = 0.5
    #: Width (tube diameter, mm) of fine linear / branching MCs: BI-RADS "fine linear" casts
    #: are thin, < 0.5 mm and mostly 0.1-0.3 mm, as they fill the lumen of a small duct.
    linear_width_range_mm: tuple[float, float] = (0.08, 0.3)
    #: Length (mm) of fine linear / branching MCs: ductal casts are elongated, a few times
    #: their width, typically 0.5-2 mm on mammograms.
    linear_length_range_mm: tuple[float, float] = (0.4, 1.5)
    #: Probability that a linear cast has a side branch (the "branching" of BI-RADS).
    linear_branch_prob: float = 0.4

    def __post_init__(self) -> None:
        _positive("size_median_mm", self.size_median_mm)
        _positive("size_log_sigma", self.size_log_sigma, allow_zero=True)
        _range("size_range_mm", self.size_range_mm, low=0.0, strict_low=True)
        _positive("punctate_max_mm", self.punctate_max_mm)
        if self.punctate_max_mm < self.size_range_mm[0]:
            raise ValueError("punctate_max_mm must be >= size_range_mm[0]")
        _probs_sum_to_one(
            "MC morphology (p_punctate, p_round_oval, p_pleomorphic, p_fine_linear)",
            self.morphology_probs,
        )
        _range("punctate_aspect_range", self.punctate_aspect_range, low=0.0, high=1.0,
               strict_low=True)
        _range("oval_aspect_range", self.oval_aspect_range, low=0.0, high=1.0, strict_low=True)
        _range("depth_ratio_range", self.depth_ratio_range, low=0.0, strict_low=True)
        if not (0.0 <= self.pleomorphic_harmonic_amplitude <= 0.25):
            raise ValueError("pleomorphic_harmonic_amplitude must be in [0, 0.25] (3 harmonics "
                             "of larger amplitude can turn the outline inside out)")
        _prob("pleomorphic_fragment_prob", self.pleomorphic_fragment_prob)
        _range("linear_width_range_mm", self.linear_width_range_mm, low=0.0, strict_low=True)
        _range("linear_length_range_mm", self.linear_length_range_mm, low=0.0, strict_low=True)
        _prob("linear_branch_prob", self.linear_branch_prob)

    @property
    def morphology_probs(self) -> tuple[float, float, float, float]:
        """(punctate, round_oval, pleomorphic, fine_linear) probabilities."""
        return (self.p_punctate, self.p_round_oval, self.p_pleomorphic, self.p_fine_linear)


@dataclass(frozen=True)
class ClusterConfig:
    """Number, spread and spatial pattern of clustered MCs."""

    #: MCs per cluster, drawn log-uniformly (small clusters are more frequent). A cluster is
    #: usually 3-30 MCs; BI-RADS "grouped" means >= 5 within 1 cm, evaluation clusters are
    #: >= 3 within 1 cm^2.
    n_mcs_range: tuple[int, int] = (3, 30)
    #: Cluster extent (largest span, mm), drawn log-uniformly: ~1 cm^2 means ~10 mm across;
    #: BI-RADS "grouped" spans <= 20 mm; tight clusters are a few mm. The extent is widened
    #: for many MCs (so they fit without overlapping) and clipped to the patch.
    extent_mm_range: tuple[float, float] = (3.0, 12.0)
    #: Spatial pattern mix: round cloud (grouped), linear and branching (ductal), segmental
    #: (several ducts diverging from one point). Grouped clusters are the most frequent.
    p_cloud: float = 0.5
    p_linear: float = 0.2
    p_branching: float = 0.15
    p_segmental: float = 0.15
    #: Probability of a second cluster in a cluster patch: multiple clusters within a few cm
    #: occur (multifocal disease) but are uncommon.
    second_cluster_prob: float = 0.1
    #: Fraction of a cluster's MCs that share its dominant morphology (the rest drawn from the
    #: global mix): real clusters are fairly homogeneous, heterogeneity itself being a sign.
    morphology_homogeneity: float = 0.6
    #: Minimum centre distance between two MCs, in units of the sum of their radii: 1.0 means
    #: footprints do not overlap, so every MC stays a separate object for object-level
    #: evaluation (touching MCs still happen through blur).
    min_separation_factor: float = 1.0

    def __post_init__(self) -> None:
        if len(self.n_mcs_range) != 2 or not 1 <= self.n_mcs_range[0] <= self.n_mcs_range[1]:
            raise ValueError(f"n_mcs_range must be ordered integers >= 1, got {self.n_mcs_range}")
        _range("extent_mm_range", self.extent_mm_range, low=0.0, strict_low=True)
        _probs_sum_to_one(
            "cluster pattern (p_cloud, p_linear, p_branching, p_segmental)", self.pattern_probs
        )
        _prob("second_cluster_prob", self.second_cluster_prob)
        _prob("morphology_homogeneity", self.morphology_homogeneity)
        _positive("min_separation_factor", self.min_separation_factor, allow_zero=True)

    @property
    def pattern_probs(self) -> tuple[float, float, float, float]:
        """(cloud, linear, branching, segmental) probabilities."""
        return (self.p_cloud, self.p_linear, self.p_branching, self.p_segmental)


@dataclass(frozen=True)
class ContrastConfig:
    """Attenuation-like contrast, modulated by the local background.

    The inserted signal (log domain, Beer-Lambert) is
    ``attenuation_per_mm * thickness_mm * m(b)`` with
    ``m(b) = clip(1 - density_damping * b, min_modulation, 1)`` and ``b`` the local
    background (Gaussian mean at ``local_mean_sigma_mm``, normalised units).
    """

    #: Effective contrast per mm of calcium thickness, in normalised intensity units, drawn
    #: log-uniformly once per sample. Published insertion studies put a typical (~0.3 mm) MC
    #: at 7-12 % contrast in the linear domain, i.e. ~0.1 in log intensity at the blurred peak
    #: (~0.15 mm of mean pixel thickness at 0.1 mm pixels); one normalised unit is roughly
    #: 0.5-1 log units of the breast's 1-99 % range and m(b) ~ 0.75 on average, so ~0.8-3 per
    #: mm. (Raw physics, Delta-mu of hydroxyapatite vs tissue ~2-3 /mm at 20 keV before
    #: scatter, gives the same order.)
    #: That first estimate, 0.8-3, made synthetic MCs 2.6x brighter than the real MC-like
    #: spots of mini-MIAS (median contrast 0.188 vs 0.071, docs/realism.md); 0.2-0.6 matches
    #: them (0.079; KS D 0.17 for contrast, 0.12 for CNR on 30 real spots). With it only
    #: ~12 % of drawn MCs reach the visibility CNR at 0.2 mm: real film MCs are faint.
    attenuation_per_mm_range: tuple[float, float] = (0.2, 0.6)
    #: Per-MC log-normal spread of the attenuation around the sample's value: MCs differ in
    #: mineral density and composition (hydroxyapatite vs calcium oxalate). 0.15 (was 0.25)
    #: shortens the CNR tail to that of the real spots (realism benchmark).
    attenuation_jitter_log_sigma: float = 0.15
    #: Slope of the contrast modulation m(b): dense (bright) tissue lowers MC contrast (more
    #: scatter, and presentation processing compresses dense regions). With 0.5, m = 1 on
    #: fat (b = 0) and 0.5 on the densest tissue (b = 1), the hard case the method targets.
    density_damping: float = 0.5
    #: Floor of m(b) so that MCs on very bright backgrounds (b > 1) keep some contrast.
    min_modulation: float = 0.4
    #: Scale (Gaussian sigma, mm) of the local background mean b: ~1 mm is larger than an MC
    #: (so the MC's own signal would not matter) and small enough to follow tissue density.
    local_mean_sigma_mm: float = 1.0

    def __post_init__(self) -> None:
        _range("attenuation_per_mm_range", self.attenuation_per_mm_range, low=0.0,
               strict_low=True)
        _positive("attenuation_jitter_log_sigma", self.attenuation_jitter_log_sigma,
                  allow_zero=True)
        _positive("density_damping", self.density_damping, allow_zero=True)
        if not (0.0 <= self.min_modulation <= 1.0):
            raise ValueError(f"min_modulation must be in [0, 1], got {self.min_modulation}")
        _positive("local_mean_sigma_mm", self.local_mean_sigma_mm)

    def modulation(self, local_background: float) -> float:
        """m(b): the documented decreasing contrast factor of the local background."""
        return float(min(1.0, max(self.min_modulation,
                                  1.0 - self.density_damping * float(local_background))))


@dataclass(frozen=True)
class PSFConfig:
    """Detector point-spread function: a Gaussian with sigma in mm (drawn once per sample)."""

    #: PSF sigma (mm), drawn uniformly per sample. Digital detectors: 0.5-1 px at 70 um,
    #: i.e. ~0.035-0.07 mm; scanned film (e.g. mini-MIAS at 0.2 mm) is blurrier. The realism
    #: benchmark measured real mini-MIAS MCs at FWHM 0.43 mm; (0.03, 0.12) gave 0.35 mm and
    #: (0.06, 0.14) gives 0.42 mm, so the default is calibrated for 200 um film, the only
    #: real negatives with known spacing we have. For digital detectors use ~(0.03, 0.07).
    sigma_mm_range: tuple[float, float] = (0.06, 0.14)

    def __post_init__(self) -> None:
        _range("sigma_mm_range", self.sigma_mm_range, low=0.0)


@dataclass(frozen=True)
class NoiseConfig:
    """Signal-dependent noise added inside each MC, matched to the local background noise.

    Its std is ``noise_gain * local_noise * sqrt(signal / peak)``. Physically, for a
    quantum-limited detector the log-domain noise variance scales with 1/N photons; an MC of
    log contrast s removes photons so the extra variance is local_noise^2 * (e^s - 1)
    ~ local_noise^2 * s: extra std ~ local_noise * sqrt(s), i.e. a gain ~ sqrt(peak) of
    about 0.2-0.5 for typical peaks.
    """

    #: Whether to add the signal-dependent noise at all.
    enabled: bool = True
    #: noise_gain, drawn uniformly per sample (see the class docstring: sqrt of typical peak
    #: log contrasts of 0.05-0.25).
    gain_range: tuple[float, float] = (0.2, 0.5)
    #: Gaussian sigma (mm) of the low-pass removed to measure the local noise
    #: (background - Gaussian): ~0.3 mm keeps pixel-scale noise and drops tissue texture.
    highpass_sigma_mm: float = 0.3
    #: Side of the square window (mm) around an MC in which the local noise (1.4826 * MAD
    #: of the high-pass) is measured: a few mm so that the estimate is stable (hundreds of
    #: pixels) yet local.
    local_window_mm: float = 2.5
    #: Floor of the local noise (normalised units), so that a noise-free background does
    #: not give an infinite CNR: about one grey level of a 10-bit image over the 1-99 % range.
    min_local_noise: float = 1e-3

    def __post_init__(self) -> None:
        _range("gain_range", self.gain_range, low=0.0)
        _positive("highpass_sigma_mm", self.highpass_sigma_mm)
        _positive("local_window_mm", self.local_window_mm)
        _positive("min_local_noise", self.min_local_noise)


@dataclass(frozen=True)
class MaskConfig:
    """The exact mask rule (see :func:`mcgenref.synthesis.render.render_sample`)."""

    #: A pixel belongs to an MC's mask when at least this fraction of its area lies inside
    #: the MC's footprint: 0.5 makes the mask area an unbiased estimate of the true area.
    coverage_threshold: float = 0.5
    #: An MC whose contrast-to-noise ratio (peak of the blurred signal / local noise) is below
    #: this is rendered but left out of the mask: the Rose criterion puts the detectability
    #: limit at a CNR of ~3-5, and the model must not learn to hallucinate invisible MCs.
    #: 5 rather than 3: on mini-MIAS an MC rendered at CNR 3-4 is brighter than only 56-72 %
    #: of the local-maximum "bumps" of normal tissue (indistinguishable from it), at 5-6
    #: brighter than 91 % (realism benchmark, visibility table).
    min_cnr: float = 5.0
    #: For an MC smaller than a pixel (no pixel reaches the coverage threshold), label the
    #: pixel of its largest coverage, so that a visible MC is never maskless.
    label_subpixel_mcs: bool = True

    def __post_init__(self) -> None:
        if not (0.0 < self.coverage_threshold <= 1.0):
            raise ValueError(f"coverage_threshold must be in (0, 1], got {self.coverage_threshold}")
        _positive("min_cnr", self.min_cnr, allow_zero=True)


@dataclass(frozen=True)
class BackgroundConfig:
    """Procedural power-law texture, the fallback background when no negatives are given."""

    #: Power-spectrum exponent beta (P(f) ~ 1/f^beta), drawn uniformly: measured on
    #: mammograms at ~2.5-3.5 with a mean about 3 (Burgess et al. 2001; Heine & Velthuizen).
    beta_range: tuple[float, float] = (2.5, 3.5)
    #: Mean of the field (normalised units): 0.5 is the middle of the 1-99 % range; the
    #: spread covers fatty (darker) to dense (brighter) regions, which drives the contrast
    #: modulation.
    mean_range: tuple[float, float] = (0.35, 0.65)
    #: Std of the field over the patch (normalised units): a 1-99 % range of ~1 spans about
    #: +-2.3 std of the breast's texture, i.e. std ~0.15 with patch-to-patch spread.
    std_range: tuple[float, float] = (0.10, 0.20)
    #: Std of the added white (quantum-like) noise, normalised units: pixel noise is a few %
    #: of the 1-99 % range of processed mammograms; it sets the MC CNR on these backgrounds.
    white_noise_std_range: tuple[float, float] = (0.005, 0.02)

    def __post_init__(self) -> None:
        _range("beta_range", self.beta_range, low=0.0, high=6.0)
        _range("mean_range", self.mean_range)
        _range("std_range", self.std_range, low=0.0)
        _range("white_noise_std_range", self.white_noise_std_range, low=0.0)


@dataclass(frozen=True)
class SynthesisConfig:
    """Everything that defines the synthetic MC data (besides the backgrounds themselves)."""

    #: Side of the square training patch (px): 256 px is 12.8-51 mm at 50-200 um, enough to
    #: hold a whole cluster and its surrounding tissue at all common spacings.
    patch_size_px: int = 256
    #: Fraction of patches without any VISIBLE MC (an empty mask): the segmentor must learn to
    #: stay silent on normal tissue, but MC pixels are already rare, so well under half. It
    #: holds because a patch drawn with MCs that all came out invisible (CNR < ``mask.min_cnr``)
    #: is drawn again (``mc_draws_per_background``, ``max_backgrounds``); only an exhausted
    #: patch adds to it, and its record says so.
    empty_fraction: float = 0.15
    #: Fraction of patches with isolated MCs only (no cluster): scattered benign MCs are
    #: common and must be segmented too.
    isolated_fraction: float = 0.15
    #: Number of isolated MCs in an isolated-only patch (uniform integer range).
    isolated_count_range: tuple[int, int] = (1, 4)
    #: Number of extra isolated MCs scattered around the cluster(s) in a cluster patch.
    extra_isolated_range: tuple[int, int] = (0, 2)
    #: Distance (mm) that MC centres keep from the patch border, so that MCs are not cut.
    edge_margin_mm: float = 1.0
    #: MC draws tried on one background (the first included) while a non-empty patch has no
    #: visible MC, before its background too is drawn again. Redrawing the MCs first keeps the
    #: backgrounds of MC patches those of empty ones (dense tissue, the hard case, included);
    #: on 200 um film 47 % of first draws have no visible MC, 6.5 % none in 5 draws
    #: (docs/synthesis.md, "Empty patches").
    mc_draws_per_background: int = 5
    #: Backgrounds tried (the first included) before a patch with no visible MC is kept as it
    #: is (recorded as exhausted): a new background only when 5 MC draws found none, so the
    #: background mix of MC patches barely moves on film (no patch exhausted there), while on
    #: the noisier procedural backgrounds, where 59 % of patches show no visible MC in 5
    #: draws, ~7 % of non-empty patches stay exhausted at a bounded cost (40 draws at most).
    max_backgrounds: int = 8
    #: Sub-pixel rendering factor per axis: 5x5 samples per pixel keep the partial-volume
    #: error of a 2-px MC around 1 % at little cost (rendering is local to each MC).
    supersample: int = 5
    #: Clusters: count, extent and spatial pattern (reasons in :class:`ClusterConfig`).
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: Single MCs: size and morphology (reasons in :class:`MCConfig`).
    mc: MCConfig = field(default_factory=MCConfig)
    #: Attenuation-like contrast and its damping by dense tissue (:class:`ContrastConfig`).
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    #: Detector blur (:class:`PSFConfig`).
    psf: PSFConfig = field(default_factory=PSFConfig)
    #: Signal-dependent noise matched to the local background (:class:`NoiseConfig`).
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    #: The exact mask rule and the visibility threshold (:class:`MaskConfig`).
    mask: MaskConfig = field(default_factory=MaskConfig)
    #: Procedural fallback backgrounds (:class:`BackgroundConfig`).
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    def __post_init__(self) -> None:
        if self.patch_size_px < 16:
            raise ValueError(f"patch_size_px must be >= 16, got {self.patch_size_px}")
        _prob("empty_fraction", self.empty_fraction)
        _prob("isolated_fraction", self.isolated_fraction)
        if self.empty_fraction + self.isolated_fraction > 1.0 + _PROB_TOL:
            raise ValueError("empty_fraction + isolated_fraction must be <= 1")
        for name in ("isolated_count_range", "extra_isolated_range"):
            value = getattr(self, name)
            if len(value) != 2 or value[0] < 0 or value[0] > value[1]:
                raise ValueError(f"{name} must be ordered integers >= 0, got {value}")
        if self.isolated_count_range[1] < 1:
            raise ValueError("isolated_count_range must allow at least one MC")
        _positive("edge_margin_mm", self.edge_margin_mm, allow_zero=True)
        for name in ("mc_draws_per_background", "max_backgrounds"):
            if not (1 <= getattr(self, name) <= 100):
                raise ValueError(f"{name} must be in [1, 100], got {getattr(self, name)}")
        if not (1 <= self.supersample <= 16):
            raise ValueError(f"supersample must be in [1, 16], got {self.supersample}")

    @classmethod
    def fine_resolution(cls) -> SynthesisConfig:
        """The preset for fine-resolution (~85 um) training data, from the 85 um comparison
        with the MC-like spots of the MAGIC-5 crops (docs/realism.md, "Realism at 85 um").

        At 85 um the real MC-like spots are broader than the film-calibrated defaults draw
        them (mean profile at 0.2 mm 0.41 of the centre vs 0.32), and a sharper, digital PSF
        (0.03-0.07 mm) makes that worse (0.21; FWHM 0.26 vs 0.32 mm). What fits is larger MCs:
        ``mc.size_median_mm`` 0.4 instead of 0.3 (profile 0.39 at 0.2 mm; KS D contrast 0.40 ->
        0.26, CNR 0.09 -> 0.10, FWHM 0.17 -> 0.17, on 328 real spots); the film PSF, the
        attenuation and ``mask.min_cnr`` stay. Everything else is the default.
        """
        return cls(mc=MCConfig(size_median_mm=0.4))
