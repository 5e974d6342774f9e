"""The CLI in-process (typer's runner) and once as a real process."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcgenref import __version__
from mcgenref.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_version_and_help() -> None:
    assert _run("--version").output.strip() == f"mcgenref {__version__}"
    res = _run("synth", "--help")
    assert res.exit_code == 0 and "--negatives" in res.output and "--pixel-spacing" in res.output


def test_synth_procedural(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _run("synth", "--out", str(out), "--count", "3", "--seed", "1", "--patch-size", "64")
    assert res.exit_code == 0, res.output
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads((out / "config.json").read_text())["synthesis"]["patch_size_px"] == 64


def test_synth_negatives_with_spacing(tmp_path: Path, phantom_folder: Path) -> None:
    out = tmp_path / "out"
    res = _run(
        "synth", "--negatives", str(phantom_folder), "--out", str(out), "--count", "2",
        "--patch-size", "64", "--pixel-spacing", "0.2",
    )
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["source"]["kind"] == "negative" and rec["spacing_mm"] == [0.2, 0.2]


def test_synth_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"synthesis": {"patch_size_px": 40}, "preview_count": 1}))
    out = tmp_path / "out"
    assert _run("synth", "--out", str(out), "--count", "1", "--config", str(cfg)).exit_code == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["synthesis"]["patch_size_px"] == 40 and resolved["preview_count"] == 1


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--negatives", "does/not/exist.png"], "no such file"),
        (["--count", "0"], "--count"),
        (["--pixel-spacing", "0"], "spacing"),
        (["--pixel-spacing", "abc"], "spacing"),
        (["--pixel-spacing", "10"], "spacing"),
        (["--patch-size", "8"], "--patch-size"),
        (["--config", "missing.json"], "config file not found"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, extra: list[str], fragment: str) -> None:
    out = tmp_path / "out"
    count = [] if "--count" in extra else ["--count", "2"]
    res = _run("synth", "--out", str(out), *count, *extra)
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], res.output
    assert not out.exists()


def test_non_image_negatives(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not DICOM")
    res = _run("synth", "--negatives", str(bad), "--out", str(tmp_path / "o"), "--count", "1")
    assert res.exit_code == 2 and res.output.startswith("error:")
    assert "notes.dcm" in res.output and "Traceback" not in res.output


def test_existing_output_refused_then_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep")
    res = _run("synth", "--out", str(out), "--count", "1", "--patch-size", "48")
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "x").read_text() == "keep"
    res = _run("synth", "--out", str(out), "--count", "1", "--patch-size", "48", "--overwrite")
    assert res.exit_code == 0 and not (out / "x").exists()


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    res = _run("synth", "--out", str(blocker / "sub"), "--count", "1")
    assert res.exit_code == 2 and res.output.startswith("error:")


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcgenref.cli", "synth", "--out", str(tmp_path / "o"),
         "--count", "1", "--negatives", str(tmp_path / "nothing.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["rgb", "empty"])
def test_unusable_negative_images(tmp_path: Path, kind: str) -> None:
    import numpy as np
    from PIL import Image

    path = tmp_path / f"{kind}.png"
    if kind == "rgb":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 50).save(path)
    else:
        Image.fromarray(np.zeros((64, 64), np.uint16)).save(path)
    out = tmp_path / "out"
    res = _run("synth", "--negatives", str(path), "--out", str(out), "--count", "1")
    assert res.exit_code == 2 and res.output.startswith("error:") and path.name in res.output
    assert not out.exists()


def test_negatives_without_usable_breast(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    path = tmp_path / "tiny_breast.png"
    img = np.full((300, 300), 5, np.uint8)
    img[140:160, 0:20] = 120  # a 20x20-pixel "breast": smaller than any patch
    Image.fromarray(img).save(path)
    out = tmp_path / "out"
    res = _run("synth", "--negatives", str(path), "--out", str(out), "--count", "1",
               "--patch-size", "128", "--pixel-spacing", "0.2")
    assert res.exit_code == 2 and res.output.splitlines()[-1].startswith("error:")
    assert not out.exists()


def test_train_segmentor_command_tiny(tmp_path: Path) -> None:
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({
        "model": {"channels": [4, 8, 16]},
        "synthesis": {"patch_size_px": 32},
        "batch_size": 2, "val_size": 2, "val_every": 2, "checkpoint_every": 2,
        "warmup_steps": 1, "num_workers": 0, "deterministic": True,
    }))
    out = tmp_path / "run"
    res = _run("train-segmentor", "--out", str(out), "--config", str(cfg), "--steps", "2",
               "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (out / "model" / "model.json").is_file() and (out / "log.jsonl").is_file()
    res = _run("train-segmentor", "--out", str(out), "--config", str(cfg), "--steps", "0")
    assert res.exit_code == 2 and res.output.startswith("error:")


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--method", "deep"], "--method"), (["--workers", "33"], "--workers"),
     (["--threshold", "1.5"], "threshold")],
)
def test_segment_options_are_checked_before_any_work(
    tmp_path: Path, extra: list[str], fragment: str
) -> None:
    from PIL import Image

    image = tmp_path / "image.png"
    Image.new("L", (64, 64), 100).save(image)
    out = tmp_path / "out"
    res = _run("segment", str(image), "--out", str(out), *extra)
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], res.output
    assert not out.exists()


def test_segment_options_object() -> None:
    from mcgenref.errors import ConfigError
    from mcgenref.workflows import SegmentOptions

    options = SegmentOptions(method="classical", workers=0)
    assert options.method == "classical" and options.workers == 0 and options.report
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.workers = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="--workers"):
        SegmentOptions(workers=-1)
