"""Training on synthetic MCs: one loop, one task per network (imports neither inference nor
evaluation).

Modules: :mod:`.loop` (:func:`~mcgenref.training.loop.run_training`: data by step, AdamW,
EMA, validation, checkpoints, exact resume, DDP; :class:`~mcgenref.training.loop.Task`),
:mod:`.segmentor` (the segmentor's task, Focal Tversky loss), :mod:`.generator` (the
generator's task, weighted rectified flow on the residual, its condition).

:func:`run_training` (:mod:`mcgenref.training.loop`) is the one way to train, for both
networks: ``run_training("segmentor", out_dir, negatives, config)`` or
``run_training("generator", ...)``. What differs between them is a
:class:`~mcgenref.training.loop.Task`: :mod:`mcgenref.training.segmentor` (Focal Tversky,
:class:`TrainSegmentorConfig`) and :mod:`mcgenref.training.generator` (weighted rectified
flow, ``TrainGeneratorConfig``; imported on use, not here, so that the segmentor's training
does not load the generator's stack).
"""

from mcgenref.training.loop import LoopConfig, Task, TaskName, run_training, task_class
from mcgenref.training.segmentor import TrainSegmentorConfig, focal_tversky_loss

__all__ = [
    "LoopConfig",
    "Task",
    "TaskName",
    "TrainSegmentorConfig",
    "focal_tversky_loss",
    "run_training",
    "task_class",
]
