"""The one training entry point: which task a name means, and what it refuses before any work.

The loop itself (a tiny run, exact resume, DDP) is exercised through each task in
test_train_segmentor.py and test_train_generator.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mcgenref.training.generator import GeneratorTask, TrainGeneratorConfig
from mcgenref.training.loop import run_training, task_class
from mcgenref.training.segmentor import SegmentorTask, TrainSegmentorConfig


def test_task_names() -> None:
    assert task_class("segmentor") is SegmentorTask
    assert task_class("generator") is GeneratorTask
    assert task_class(GeneratorTask) is GeneratorTask  # a Task class is taken as it is
    assert SegmentorTask.config_cls is TrainSegmentorConfig
    assert GeneratorTask.config_cls is TrainGeneratorConfig


def test_unknown_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'segmenter'.*'segmentor' or 'generator'"):
        run_training("segmenter", tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def test_the_other_tasks_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SegmentorTask trains with a TrainSegmentorConfig"):
        run_training("segmentor", tmp_path / "run", None, TrainGeneratorConfig())
    with pytest.raises(TypeError, match="GeneratorTask trains with a TrainGeneratorConfig"):
        run_training("generator", tmp_path / "run", None, TrainSegmentorConfig())
    assert not (tmp_path / "run").exists()
