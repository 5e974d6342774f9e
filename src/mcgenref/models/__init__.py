"""Networks and their self-describing checkpoints (model.json + model.safetensors).

Modules: :mod:`.segmentor` (:class:`SegmentorConfig`, MONAI U-Net family, logits out),
:mod:`.generator` (the seed-conditioned velocity network of the generator, classifier-free
guidance), :mod:`.checkpoint` (model folders with sha256, training-state checkpoints, loading
that checks the kind and strips ``_orig_mod.`` / ``module.``). Imports no stage above the
generative core.
"""

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
