"""Networks and their self-describing checkpoints (model.json + model.safetensors)."""

from mcgenref.models.checkpoint import load_model, read_model_meta, save_model
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor, size_multiple

__all__ = [
    "SegmentorConfig",
    "build_segmentor",
    "load_model",
    "read_model_meta",
    "save_model",
    "size_multiple",
]
