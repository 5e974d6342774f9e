"""Generative core: rectified flow and the generator's seeds (imports no stage above it).

Modules: :mod:`.rectified` (the straight-path loss, Euler / Heun samplers, SDEdit starts; the
time convention is stated there), :mod:`.seeds` (seeds from synthetic records or probability
maps, NMS in mm, seed maps).
"""

from mcgenref.flow.rectified import (
    RFLoss,
    VelocityFn,
    euler_sample,
    heun_sample,
    interpolate,
    partial_start,
    rectified_flow_loss,
    sample_time,
)

__all__ = [
    "RFLoss",
    "VelocityFn",
    "euler_sample",
    "heun_sample",
    "interpolate",
    "partial_start",
    "rectified_flow_loss",
    "sample_time",
]
