"""Synthetic microcalcifications on mammographic backgrounds, with exact masks.

The image-formation model (METHOD section 2): :func:`draw_sample_params` draws a replayable
geometry (clusters and isolated MCs, sizes in mm), :func:`render_sample` inserts it into a
normalised background (partial volume, Beer-Lambert contrast damped by dense tissue, PSF,
signal-dependent noise, CNR-gated exact mask), and :func:`procedural_background` provides
power-law backgrounds when no real negatives are given.

Modules: :mod:`.config` (:class:`SynthesisConfig` and its parts), :mod:`.geometry` (the
replayable parameter records and their draw), :mod:`.render` (the image-formation model),
:mod:`.background` (procedural backgrounds, power-spectrum slope), :mod:`.patches` (negative
patches from normal mammograms), :mod:`.sample` (seeds, records, replay), :mod:`.dataset`
(torch datasets on the fly, fixed sets on disk), :mod:`.example` (the generated example
mammogram). Imports none of models, flow, training, inference, evaluation.
"""

from mcgenref.synthesis.background import (
    power_spectrum_slope,
    procedural_background,
    radial_power_spectrum,
)
from mcgenref.synthesis.config import (
    BackgroundConfig,
    ClusterConfig,
    ContrastConfig,
    MaskConfig,
    MCConfig,
    NoiseConfig,
    PSFConfig,
    SynthesisConfig,
)
from mcgenref.synthesis.geometry import (
    CLUSTER_PATTERNS,
    MORPHOLOGIES,
    ClusterParams,
    MCParams,
    SampleParams,
    draw_sample_params,
    sample_params_from_dict,
    sample_params_to_dict,
)
from mcgenref.synthesis.render import (
    MCRecord,
    RenderResult,
    mc_thickness,
    render_sample,
    thickness_window,
)

__all__ = [
    "BackgroundConfig",
    "CLUSTER_PATTERNS",
    "ClusterConfig",
    "ClusterParams",
    "ContrastConfig",
    "MCConfig",
    "MCParams",
    "MCRecord",
    "MORPHOLOGIES",
    "MaskConfig",
    "NoiseConfig",
    "PSFConfig",
    "RenderResult",
    "SampleParams",
    "SynthesisConfig",
    "draw_sample_params",
    "mc_thickness",
    "power_spectrum_slope",
    "procedural_background",
    "radial_power_spectrum",
    "render_sample",
    "sample_params_from_dict",
    "sample_params_to_dict",
    "thickness_window",
]
