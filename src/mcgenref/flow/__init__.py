"""Generative core: rectified flow (loss and ODE samplers); time convention in :mod:`.rectified`."""

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
