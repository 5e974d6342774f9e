"""The shipped models: intact and self-describing; TT-GPR with the shipped generator on the
example. (The shipped segmentor on the example, against a stored reference: tests/golden/.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


from mcgenref.inference.segment import SegmentConfig, Segmenter, default_model_path
from mcgenref.synthesis.example import write_example


def test_shipped_model_is_intact_and_documented() -> None:
    folder = default_model_path()
    meta = json.loads((folder / "model.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["weights"]["sha256"]
    assert len(data) < 10 * 2**20  # a few MB, as promised
    assert meta["extra"]["pixel_spacing_mm"] == [0.2, 0.2]
    op = meta["operating_point"]
    assert 0.0 < op["threshold"] < 1.0 and 0.0 < op["classical_threshold"] < 1.0
    # never trained on the calcification images nor on the held-out women
    train = set(meta["data"]["training_refs"])
    assert not train & set(meta["data"]["never_trained_on"])
    assert not train & set(meta["data"]["held_out_refs"])


def test_shipped_generator_is_intact_and_documented() -> None:
    from mcgenref.inference.segment import default_generator_path

    folder = default_generator_path()
    meta = json.loads((folder / "model.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    assert meta["kind"] == "mcgenref-generator"
    assert hashlib.sha256(data).hexdigest() == meta["weights"]["sha256"]
    assert len(data) < 10 * 2**20
    assert meta["extra"]["pixel_spacing_mm"] == [0.2, 0.2]
    assert meta["extra"]["residual_scale"] > 0
    train = set(meta["data"]["training_refs"])
    assert not train & set(meta["data"]["never_trained_on"])
    assert not train & set(meta["data"]["held_out_refs"])


def test_golden_example_with_refine_keeps_the_clusters(tmp_path: Path) -> None:
    """TT-GPR with the shipped generator: the example's clusters are still all found, the
    refined map differs from the plain one only near candidates, and it is deterministic."""
    import numpy as np

    info = write_example(tmp_path / "example.dcm", seed=0)
    plain = Segmenter(SegmentConfig(), device="cpu").segment(Path(info["image"]))
    seg = Segmenter(SegmentConfig(refine=True), device="cpu")
    refined = seg.segment(Path(info["image"]))
    tt = refined.meta.detector["tt_gpr"]
    assert tt["windows"] > 0
    assert len(refined.detections.clusters) >= len(plain.detections.clusters)
    changed = np.abs(refined.prob - plain.prob) > 1e-3
    assert changed.any() and changed.mean() < 0.5
    assert refined.uncertainty is not None and refined.uncertainty.max() > 0
    again = seg.segment(Path(info["image"]))
    np.testing.assert_array_equal(again.prob, refined.prob)
