"""Training loops (one readable function per model)."""

from mcgenref.training.segmentor import (
    TrainSegmentorConfig,
    focal_tversky_loss,
    train_segmentor,
)

__all__ = ["TrainSegmentorConfig", "focal_tversky_loss", "train_segmentor"]
