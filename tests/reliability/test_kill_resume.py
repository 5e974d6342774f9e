"""Training survives ``kill -9`` (issue 6, part 3): a real ``mcgenref train-segmentor``
process is killed mid-run, ``--resume`` finishes it, and the final weights equal those of an
uninterrupted run bit for bit (CPU, deterministic mode); the log holds each step once.

(A full disk while writing a checkpoint leaving the previous one intact is tested in
tests/models/test_checkpoint.py::test_a_failed_checkpoint_leaves_the_previous_one.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mcgenref.config import to_dict
from mcgenref.models.checkpoint import find_training_state
from mcgenref.models.segmentor import SegmentorConfig
from mcgenref.synthesis.config import SynthesisConfig
from mcgenref.training.segmentor import TrainSegmentorConfig

CHECKPOINT_EVERY = 4
#: kill once a checkpoint at or after this step exists and the run has logged steps past it
KILL_AFTER_CHECKPOINT = 8
STEPS = 80  # ~50 ms a step on a 2-core CPU: seconds of margin after the kill point

CMD_TIMEOUT_S = 120


def _config(steps: int) -> TrainSegmentorConfig:
    return TrainSegmentorConfig(
        model=SegmentorConfig(channels=(8, 16, 32)),
        synthesis=SynthesisConfig(patch_size_px=32),
        steps=steps,
        batch_size=2,
        warmup_steps=2,
        val_size=4,
        val_every=10,
        checkpoint_every=CHECKPOINT_EVERY,
        log_every=1,
        num_workers=0,
        deterministic=True,
    )


def _command(run: Path, config_path: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "mcgenref.cli", "train-segmentor", "--out", str(run),
           "--config", str(config_path), "--device", "cpu"]
    return cmd + ["--resume"] if resume else cmd


def _env() -> dict[str, str]:
    # one thread in every run: the same arithmetic, and no contention on a small machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, env=_env(),
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def _checkpoint_step(run: Path) -> int | None:
    try:
        return int(json.loads((run / "checkpoint" / "training_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not written yet, or being replaced at this very moment


def _logged_steps(run: Path) -> list[int]:
    steps = []
    try:
        text = (run / "log.jsonl").read_text()
    except OSError:
        return steps
    for line in text.splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            pass  # a line being written
    return steps


def _start_and_kill(run: Path, config_path: Path, steps: int) -> tuple[bool, int]:
    """Start training, SIGKILL it between two checkpoints after KILL_AFTER_CHECKPOINT.

    Returns (killed, checkpoint step found after the kill); killed is False when the run
    finished before it could be killed.
    """
    stderr = (run.parent / f"{run.name}.stderr").open("wb")  # a file: a pipe could fill up
    proc = subprocess.Popen(_command(run, config_path), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + CMD_TIMEOUT_S
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("training did not reach the kill point in time")
            ckpt = _checkpoint_step(run)
            logged = _logged_steps(run)
            # past a checkpoint, with steps logged after it: a kill here loses work
            if (ckpt is not None and ckpt >= KILL_AFTER_CHECKPOINT and logged
                    and logged[-1] % CHECKPOINT_EVERY != 0 and logged[-1] < steps):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        stderr.close()
    if proc.returncode == 0:
        return False, steps
    assert proc.returncode == -signal.SIGKILL, (
        proc.returncode, (run.parent / f"{run.name}.stderr").read_text()[-3000:])
    # a kill during a checkpoint's final rename leaves the previous one beside the folder
    found = find_training_state(run / "checkpoint")
    assert found is not None, "no checkpoint survived the kill"
    return True, int(json.loads((found / "training_state.json").read_text())["step"])


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    steps = STEPS
    for attempt in range(3):  # if the run outpaced the poller, try again with a longer run
        config_path = tmp_path / f"config-{steps}.json"
        config_path.write_text(json.dumps(to_dict(_config(steps))))
        killed_run = tmp_path / f"killed-{attempt}"
        killed, k = _start_and_kill(killed_run, config_path, steps)
        if killed:
            break
        steps *= 2
    assert killed, "training always finished before it could be killed"
    assert 0 < k < steps and k % CHECKPOINT_EVERY == 0
    assert not (killed_run / "model").exists()
    logged_before = _logged_steps(killed_run)
    print(f"killed at logged step {logged_before[-1]}, checkpoint {k}, of {steps}")
    assert logged_before[-1] >= k  # usually >: steps past the checkpoint are lost and redone

    _run(_command(killed_run, config_path, resume=True))
    straight = tmp_path / "straight"
    _run(_command(straight, config_path))

    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(killed_run / "model" / "model.safetensors")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[key], b[key]) for key in a), [k for k in a if not torch.equal(a[k], b[k])]
    # the training state too: weights, EMA, optimizer moments
    sa = load_file(straight / "checkpoint" / "training_state.safetensors")
    sb = load_file(killed_run / "checkpoint" / "training_state.safetensors")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)
    # the log holds each step exactly once, with the uninterrupted run's losses
    log_a = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (killed_run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log_b] == list(range(1, steps + 1))
    assert [(e["loss"], e["lr"], e["val_dice"]) for e in log_a] == [
        (e["loss"], e["lr"], e["val_dice"]) for e in log_b
    ]
    assert json.loads((killed_run / "checkpoint" / "training_state.json").read_text())["step"] == steps


def test_finished_run_removes_folders_left_by_a_killed_checkpoint_write(tmp_path: Path) -> None:
    """A SIGKILL while a checkpoint is written leaves hidden staging folders; once the run
    finishes cleanly they are removed (nothing else can be writing them then)."""
    import dataclasses

    from mcgenref.training.loop import run_training

    from ..training.test_train_segmentor import TINY

    run = tmp_path / "run"
    config = dataclasses.replace(TINY, steps=4, checkpoint_every=2)
    run_training("segmentor", run, None, config, device="cpu", progress=False, stop_at_step=2)
    (run / ".checkpoint.partial-abc123").mkdir()  # as a killed write leaves them
    (run / ".checkpoint.partial-abc123" / "training_state.json").write_text("{")
    run_training("segmentor", run, None, None, device="cpu", progress=False, resume=True)
    assert not list(run.glob(".checkpoint.*")) and (run / "model" / "model.json").is_file()
