"""The segmentor training loop: loss by hand, a tiny CPU run, exact resume, DDP on CPU."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mcgenref.training.segmentor as training
from mcgenref.errors import ConfigError, OutputError
from mcgenref.models.checkpoint import load_model
from mcgenref.models.segmentor import SegmentorConfig
from mcgenref.synthesis.config import MaskConfig, SynthesisConfig
from mcgenref.synthesis.sample import generate_sample, sample_seed
from mcgenref.training.loop import run_training
from mcgenref.training.segmentor import (
    TrainSegmentorConfig,
    dice_counts,
    focal_tversky_loss,
    lr_at,
)

from ..conftest import torchrun_cpu

TINY = TrainSegmentorConfig(
    model=SegmentorConfig(channels=(8, 16, 32)),
    synthesis=SynthesisConfig(patch_size_px=32),
    steps=6,
    batch_size=2,
    warmup_steps=2,
    val_size=4,
    val_every=3,
    checkpoint_every=2,
    log_every=1,
    num_workers=0,
    deterministic=True,
)




# --------------------------------------------------------------------------- loss and metric


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 30.0  # sigmoid = 1 - 1e-13 inside, 1e-13 outside


def test_focal_tversky_perfect_prediction_is_zero() -> None:
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, 0, 10:14, 10:14] = 1
    mask[1, 0, 3:5, 20:23] = 1
    assert focal_tversky_loss(_logits(mask), mask).item() == pytest.approx(0.0, abs=1e-3)


def test_focal_tversky_all_missed_is_one() -> None:
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:24, 4:24] = 1  # 800 MC pixels, all predicted background
    loss = focal_tversky_loss(torch.full_like(mask, -30.0), mask, alpha=0.3, beta=0.7, gamma=0.75)
    # by hand: TI = (0 + 1) / (0.7 * 800 + 1), loss = (1 - TI) ** 0.75
    assert loss.item() == pytest.approx((1 - 1 / 561) ** 0.75, rel=1e-5)
    assert loss.item() > 0.99


def test_focal_tversky_penalises_false_negatives_more() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 8:16, 8:16] = 1  # 64 MC pixels
    missed = mask.clone()
    missed[0, 0, 8:10, 8:16] = 0  # 16 false negatives
    extra = mask.clone()
    extra[0, 0, 16:18, 8:16] = 1  # 16 false positives
    loss_fn = focal_tversky_loss(_logits(missed), mask, alpha=0.3, beta=0.7)
    loss_fp = focal_tversky_loss(_logits(extra), mask, alpha=0.3, beta=0.7)
    assert loss_fn > loss_fp
    # MONAI's convention: alpha weights FP, beta FN (TI by hand, gamma 1)
    tp = 48.0
    assert focal_tversky_loss(_logits(missed), mask, 0.3, 0.7, 1.0).item() == pytest.approx(
        1 - (tp + 1) / (tp + 0.7 * 16 + 1), rel=1e-5
    )


def test_focal_tversky_has_finite_gradients_near_zero_loss() -> None:
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 4:8, 4:8] = 1
    logits = _logits(mask).requires_grad_()
    focal_tversky_loss(logits, mask).backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_counts() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, :2] = 1
    logits = torch.full((1, 1, 4, 4), -1.0)
    logits[0, 0, 0, 1:3] = 1.0
    assert dice_counts(logits, target).tolist() == [1.0, 1.0, 1.0]


def test_learning_rate_schedule() -> None:
    config = TrainSegmentorConfig(lr=1e-3, warmup_steps=10, min_lr_fraction=0.0)
    assert lr_at(0, config, 110) == pytest.approx(1e-4)
    assert lr_at(9, config, 110) == pytest.approx(1e-3)
    assert lr_at(60, config, 110) == pytest.approx(0.5e-3)
    assert lr_at(110, config, 110) == pytest.approx(0.0, abs=1e-12)


def test_patch_size_must_fit_the_network() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        TrainSegmentorConfig(synthesis=SynthesisConfig(patch_size_px=36))


# --------------------------------------------------------------------------- training runs


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def _validation_dice_by_hand(model: torch.nn.Module, config: TrainSegmentorConfig) -> float:
    """Pooled Dice of ``logits > 0`` against the exact masks of the run's validation samples
    (procedural backgrounds; the loop's batches, so the arithmetic is the same)."""
    tp = fp = fn = 0
    for first in range(0, config.val_size, config.batch_size):
        samples = [generate_sample(sample_seed(config.val_seed, i), config.synthesis, None,
                                   config.procedural_spacing_mm, index=i)
                   for i in range(first, min(first + config.batch_size, config.val_size))]
        images = torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32))[:, None]
        with torch.no_grad():
            pred = (model(images) > 0)[:, 0].numpy()
        true = np.stack([s.mask for s in samples]) > 0.5
        tp, fp, fn = tp + (pred & true).sum(), fp + (pred & ~true).sum(), fn + (~pred & true).sum()
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def test_tiny_run_writes_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # every MC in the mask (min_cnr 0): the 4 validation patches then have MC pixels (17) for
    # the Dice to count; at TINY's default visibility they have none
    visible = dataclasses.replace(TINY.synthesis, mask=MaskConfig(min_cnr=0.0))
    config = dataclasses.replace(TINY, synthesis=visible)
    summary = run_training("segmentor", run, None, config, device="cpu", progress=False)
    assert summary["step"] == 6 and summary["model_dir"] == str(run / "model")
    assert summary["world_size"] == 1 and summary["device"] == "cpu"
    assert [v[0] for v in summary["val_history"]] == [3, 6]
    log = _log(run)
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert set(log[0]) == {"step", "loss", "lr", "val_dice", "seconds"}
    assert log[2]["val_dice"] == round(summary["val_history"][0][1], 6) and log[1]["val_dice"] is None
    assert json.loads((run / "config.json").read_text())["steps"] == 6
    model, meta = load_model(run / "model")
    # the final val_dice is the saved (EMA) model's Dice on the fixed validation set, by hand
    assert summary["val_dice"] == summary["val_history"][-1][1] == log[5]["val_dice"]
    assert summary["val_dice"] == pytest.approx(_validation_dice_by_hand(model, config), abs=1e-6)
    assert meta["extra"]["pixel_spacing_mm"] == [0.1, 0.1]
    assert meta["extra"]["training"]["steps"] == 6
    # what the trainer writes is the contract segment reads (uncalibrated: threshold 0.5)
    from mcgenref.models.checkpoint import segmentor_contract

    contract = segmentor_contract(meta)
    assert contract.pixel_spacing_mm == (0.1, 0.1) and contract.operating_point.threshold == 0.5
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 48, 80)).shape == (1, 1, 48, 80)
    # the checkpoint folder is a model folder too (the EMA weights)
    load_model(run / "checkpoint")
    # a finished run folder is not overwritten by a new run
    with pytest.raises(OutputError, match="use --resume"):
        run_training("segmentor", run, None, TINY, device="cpu", progress=False)


def test_tiny_run_on_negatives(tmp_path: Path, phantom_folder: Path) -> None:
    config = dataclasses.replace(TINY, steps=2, procedural_fraction=0.5)
    summary = run_training(
        "segmentor", tmp_path / "run", [phantom_folder], config, device="cpu", progress=False,
        pixel_spacing_mm=0.2,
    )
    assert summary["step"] == 2
    _, meta = load_model(tmp_path / "run" / "model")
    assert meta["extra"]["training"]["backgrounds"] == "negatives"
    assert [0.2, 0.2] in meta["extra"]["pixel_spacings_mm_seen"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(run["negatives"]) == 3 and run["pixel_spacing_mm"] == 0.2


def _hard_file(tmp_path: Path, phantom_folder: Path) -> Path:
    """A hard-negative file with one centre in the middle of each phantom's breast."""
    from mcgenref.synthesis.patches import NegativePatchSampler

    sampler = NegativePatchSampler(sorted(phantom_folder.glob("*.png")), 32, pixel_spacing_mm=0.2)
    candidates = []
    for neg in sampler.negatives:
        row, col = neg.valid_origins[len(neg.valid_origins) // 2] + 16 + np.array(neg.crop_origin)
        candidates.append({"image": neg.source_path, "row": int(row), "col": int(col)})
    path = tmp_path / "hard.json"
    path.write_text(json.dumps({"candidates": candidates}))
    return path


def test_fine_tune_with_hard_negatives(tmp_path: Path, phantom_folder: Path) -> None:
    import hashlib

    base = run_training("segmentor", tmp_path / "base", [phantom_folder],
                        dataclasses.replace(TINY, steps=2), device="cpu", progress=False,
                        pixel_spacing_mm=0.2)
    hard = _hard_file(tmp_path, phantom_folder)
    config = dataclasses.replace(TINY, steps=2, init_from=base["model_dir"],
                                 hard_negatives_path=str(hard), hard_negative_fraction=0.5)
    run_training("segmentor", tmp_path / "tuned", [phantom_folder], config, device="cpu",
                 progress=False, pixel_spacing_mm=0.2)
    _, base_meta = load_model(base["model_dir"])
    _, meta = load_model(tmp_path / "tuned" / "model")
    training_record = meta["extra"]["training"]
    assert training_record["init_from"]["weights_sha256"] == base_meta["weights"]["sha256"]
    assert training_record["hard_negatives"]["sha256"] == hashlib.sha256(hard.read_bytes()).hexdigest()
    assert training_record["hard_negatives"]["per_batch"] == 1  # round(0.5 * batch 2)
    assert training_record["hard_negatives"]["centres"] == 3
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["hard_negative_fraction"] == 0.5
    # the checkpoint, a loadable model folder too, says the same
    _, checkpoint_meta = load_model(tmp_path / "tuned" / "checkpoint")
    assert checkpoint_meta["extra"]["training"]["hard_negatives"]["sha256"] == training_record["hard_negatives"]["sha256"]
    # a changed hard-negative file is refused on resume
    hard.write_text(json.dumps({"candidates": json.loads(_hard_file(tmp_path, phantom_folder).read_text())["candidates"][:2]}))
    with pytest.raises(ConfigError, match="changed since the run started"):
        run_training("segmentor", tmp_path / "tuned", None, None, device="cpu", progress=False,
                     resume=True, steps=4)


def test_initial_weights_are_the_model_folder_s(tmp_path: Path) -> None:
    from mcgenref.models.segmentor import build_segmentor
    from mcgenref.training.loop import _load_initial_weights

    base = run_training("segmentor", tmp_path / "base", None, dataclasses.replace(TINY, steps=1),
                        device="cpu", progress=False)
    saved, _ = load_model(base["model_dir"])
    torch.manual_seed(123)
    net = build_segmentor(TINY.model)
    assert not all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), saved.state_dict().values()))
    _load_initial_weights(net, dataclasses.replace(TINY, init_from=base["model_dir"]))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), saved.state_dict().values()))
    other = dataclasses.replace(TINY, model=SegmentorConfig(channels=(4, 8, 16)), init_from=base["model_dir"])
    with pytest.raises(ConfigError, match="differs from the config's 'model'"):
        _load_initial_weights(build_segmentor(other.model), other)
    with pytest.raises(ConfigError, match="init_from"):
        _load_initial_weights(net, dataclasses.replace(TINY, init_from=str(tmp_path / "none")))


def test_hard_share_of_each_batch(phantom_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mcgenref.training.loop as loop
    from mcgenref.synthesis.patches import (
        HardNegativePatchSampler,
        NegativePatchSampler,
        read_hard_negatives,
    )

    base = NegativePatchSampler(sorted(phantom_folder.glob("*.png")), 32, pixel_spacing_mm=0.2)
    hard = HardNegativePatchSampler(base, read_hard_negatives(_hard_file(tmp_path, phantom_folder)))
    config = dataclasses.replace(TINY, batch_size=4, procedural_fraction=0.5)
    used = []
    real = loop.generate_sample
    monkeypatch.setattr(loop, "generate_sample", lambda seed, cfg, sampler, *a, **k: (
        used.append(sampler), real(seed, cfg, sampler, *a, **k))[1])
    data = loop._Samples(training.SegmentorTask(config), base, 0, 0.5, hard, 2)
    for i in range(8):
        data[i]
    # the first 2 of each batch of 4 are hard negatives; the rest negatives or procedural
    assert [s is hard for s in used] == [True, True, False, False] * 2
    assert all(s is base or s is None for s in used[2:4] + used[6:8])
    with pytest.raises(ValueError, match="needs hard_negatives_path"):
        dataclasses.replace(TINY, hard_negative_fraction=0.5)


def test_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = tmp_path / "straight"
    run_training("segmentor", straight, None, TINY, device="cpu", progress=False)

    # the same run, crashing in step 5 (last checkpoint: step 4), then resumed
    resumed = tmp_path / "resumed"
    calls = {"n": 0}
    real_loss = training.focal_tversky_loss

    def crashing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "focal_tversky_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        run_training("segmentor", resumed, None, TINY, device="cpu", progress=False)
    monkeypatch.setattr(training, "focal_tversky_loss", real_loss)
    assert not (resumed / "model").exists()
    with (resumed / "log.jsonl").open("a") as fh:
        fh.write('{"step": 5, "lo')  # a line the interruption cut short
    summary = run_training("segmentor", resumed, None, None, device="cpu", progress=False, resume=True)
    assert summary["resumed_from"] == 4 and summary["step"] == 6

    a, b = _final_tensors(straight), _final_tensors(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the training state (weights, EMA, optimizer moments) is identical too
    sa = load_file(straight / "checkpoint" / "training_state.safetensors")
    sb = load_file(resumed / "checkpoint" / "training_state.safetensors")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the log holds each step once, with the same losses
    la, lb = _log(straight), _log(resumed)
    assert [e["step"] for e in lb] == [1, 2, 3, 4, 5, 6]
    assert [(e["loss"], e["lr"], e["val_dice"]) for e in la] == [
        (e["loss"], e["lr"], e["val_dice"]) for e in lb
    ]


def test_stop_and_resume_equals_straight_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_training("segmentor", straight, None, TINY, device="cpu", progress=False)
    split = tmp_path / "split"
    first = run_training("segmentor", split, None, TINY, device="cpu", progress=False, stop_at_step=3)
    assert first["step"] == 3 and first["model_dir"] is None
    run_training("segmentor", split, None, TINY, device="cpu", progress=False, resume=True)
    a, b = _final_tensors(straight), _final_tensors(split)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_training("segmentor", run, None, TINY, device="cpu", progress=False, stop_at_step=1,
                 pixel_spacing_mm=0.2)
    # without negatives, the pixel spacing is that of the procedural backgrounds
    assert json.loads((run / "config.json").read_text())["procedural_spacing_mm"] == [0.2, 0.2]
    other = dataclasses.replace(TINY, lr=0.5)
    with pytest.raises(ConfigError, match="resume without --config"):
        run_training("segmentor", run, None, other, device="cpu", progress=False, resume=True)
    with pytest.raises(ConfigError, match="pixel-spacing differs"):
        run_training("segmentor", run, None, None, device="cpu", progress=False, resume=True,
                     pixel_spacing_mm=0.1)
    # --steps may change: the run is extended
    summary = run_training("segmentor", run, None, None, device="cpu", progress=False, resume=True,
                           steps=2)
    assert summary["step"] == 2 and summary["steps"] == 2


def test_bad_device_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--device"):
        run_training("segmentor", tmp_path / "run", None, TINY, device="tpu", progress=False)


# --------------------------------------------------------------------------- DDP on CPU


def _torchrun_two_cpu_ranks(script: Path, config: TrainSegmentorConfig,
                            timeout: float = 120) -> subprocess.CompletedProcess:
    """``script CONFIG_JSON`` under ``torch.distributed.run`` with 2 CPU (gloo) ranks."""
    from mcgenref.config import to_dict

    return torchrun_cpu(script, [json.dumps(to_dict(config))], timeout=timeout)


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, pathlib, sys
        from mcgenref.config import from_dict
        from mcgenref.training.loop import run_training
        from mcgenref.training.segmentor import TrainSegmentorConfig
        config = from_dict(TrainSegmentorConfig, json.loads(sys.argv[1]))
        summary = run_training("segmentor", {str(run)!r}, None, config, device="cpu", progress=False)
        # each rank its own file: no reliance on how the ranks' prints share torchrun's pipe
        rank = os.environ["RANK"]
        pathlib.Path({str(tmp_path)!r}, "summary-" + rank + ".json").write_text(json.dumps(
            {{"rank": rank, "world_size": summary["world_size"], "step": summary["step"]}}))
    """))
    result = _torchrun_two_cpu_ranks(script, dataclasses.replace(TINY, steps=3, batch_size=1, val_every=2))
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"summary-{rank}.json").read_text()) for rank in (0, 1)]
    assert summaries == [{"rank": "0", "world_size": 2, "step": 3}, {"rank": "1", "world_size": 2, "step": 3}]
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert [e["step"] for e in _log(run)] == [1, 2, 3]
    load_model(run / "model")


def test_ddp_error_on_rank0_only_stops_every_rank(tmp_path: Path) -> None:
    """A non-empty run folder is checked on rank 0 only; rank 1 must stop too, not hang."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("keep")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, pathlib, sys
        from mcgenref.config import from_dict
        from mcgenref.errors import McGenRefError
        from mcgenref.training.loop import run_training
        from mcgenref.training.segmentor import TrainSegmentorConfig
        config = from_dict(TrainSegmentorConfig, json.loads(sys.argv[1]))
        try:
            run_training("segmentor", {str(run)!r}, None, config, device="cpu", progress=False)
        except McGenRefError as exc:
            pathlib.Path({str(tmp_path)!r}, "refused-" + os.environ["RANK"]).write_text(str(exc))
    """))
    result = _torchrun_two_cpu_ranks(script, dataclasses.replace(TINY, steps=2, batch_size=1), timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # rank 1 learnt of rank 0's refusal, in the same words
        assert "not empty" in (tmp_path / f"refused-{rank}").read_text()
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]
