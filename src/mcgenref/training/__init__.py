"""Training on synthetic MCs: one loop, one task per network (imports neither inference nor
evaluation).

Modules: :mod:`.loop` (:func:`~mcgenref.training.loop.run_training`: data by step, AdamW,
EMA, validation, checkpoints, exact resume, DDP; :class:`~mcgenref.training.loop.Task`),
:mod:`.segmentor` (the segmentor's task, Focal Tversky loss), :mod:`.generator` (the
generator's task, weighted rectified flow on the residual, its condition).
"""

from mcgenref.training.segmentor import (
    TrainSegmentorConfig,
    focal_tversky_loss,
    train_segmentor,
)

__all__ = ["TrainSegmentorConfig", "focal_tversky_loss", "train_segmentor"]
