"""Batch segmentation (mcgenref.inference.batch): inputs, prefixes, pipeline, summary, torchrun."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.errors import ConfigError, InputError
from mcgenref.inference.batch import (
    SUMMARY_COLUMNS,
    Job,
    expand_inputs,
    make_jobs,
    run_jobs,
    write_summary,
)
from mcgenref.inference.segment import SegmentConfig, Segmenter
from mcgenref.io.predictions import OUTPUT_SUFFIXES
from mcgenref.io import atomic

from ..conftest import phantom_mammogram, torchrun_cpu

runner = CliRunner()
SHAPE = (160, 120)  # small: a classical segmentation takes a few ms


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = phantom_mammogram(SHAPE, seed=seed).astype(np.float32)
    rr, cc = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    for k in range(seed % 3 + 1):  # a different number of specks per seed
        r, c = 60 + 12 * k, 30 + 5 * k
        img += 110 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 0.8**2))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def _segment(*args: str) -> tuple[int, list[str]]:
    res = runner.invoke(app, ["segment", *args, "--method", "classical", "--pixel-spacing", "0.2",
                              "--no-progress"])
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.exit_code, [line for line in res.output.splitlines() if line.strip()]


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == SUMMARY_COLUMNS
        return list(reader)


def _hidden(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".*")]


def _complete(folder: Path, stem: str) -> bool:
    return all((folder / f"{stem}{s}").is_file() for s in OUTPUT_SUFFIXES)


# --------------------------------------------------------------------------- inputs


def test_expand_inputs_globs_lists_folders(tmp_path: Path) -> None:
    a = _png(tmp_path / "data" / "siteA" / "img1.png")
    b = _png(tmp_path / "data" / "siteB" / "deep" / "img2.png")
    c = _png(tmp_path / "data" / "top.png")
    (tmp_path / "data" / "siteA" / "notes.txt").write_text("not an image")
    pattern = str(tmp_path / "data" / "**" / "*.png")
    assert expand_inputs([pattern]) == sorted([a, b, c], key=str)
    # a folder contributes its own images, not its sub-folders'
    assert expand_inputs([str(tmp_path / "data")]) == [c]
    # a list file: comments, blank lines, relative (to the list) and absolute paths
    listing = tmp_path / "lists" / "batch.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my batch\n\n  ../data/siteA/img1.png  \n{b}\n# {c}\n")
    assert expand_inputs(["@" + str(listing)]) == sorted([a, b], key=str)
    # the same file named twice (list + glob) is segmented once
    assert expand_inputs(["@" + str(listing), pattern]) == sorted([a, b, c], key=str)
    # an existing name with glob characters is taken literally
    odd = _png(tmp_path / "odd" / "case[1].png")
    assert expand_inputs([str(odd)]) == [odd]


def test_expand_inputs_refuses_missing_paths_naming_the_first_and_the_count(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png")
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("a.png\nmissing1.png\nsub/missing2.dcm\n")
    with pytest.raises(InputError) as info:
        expand_inputs(["@" + str(listing), str(tmp_path / "nowhere.png")])
    message = str(info.value)
    assert "missing1.png (line 2 of" in message and "3 inputs missing in all" in message
    with pytest.raises(InputError, match="no image matches"):
        expand_inputs([str(tmp_path / "in" / "*.dcm")])
    with pytest.raises(InputError, match="no such list file"):
        expand_inputs(["@" + str(tmp_path / "absent.txt")])
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no input"):
        expand_inputs(["@" + str(tmp_path / "empty.txt")])


def test_prefixes_flat_when_unique_mirrored_when_stems_clash(tmp_path: Path) -> None:
    root = tmp_path / "data"
    flat = make_jobs([root / "a" / "x.png", root / "b" / "y.dcm"])
    assert [j.prefix for j in flat] == ["x", "y"]
    paths = [root / "siteA" / "img1.png", root / "siteA" / "img2.png",
             root / "siteB" / "deep" / "img1.dcm"]
    jobs = make_jobs(paths)
    assert [j.prefix for j in jobs] == ["siteA/img1", "siteA/img2", "siteB/deep/img1"]
    assert len({j.prefix for j in jobs}) == len(jobs)
    assert jobs[2].stem == "img1" and jobs[2].out_dir(Path("OUT")) == Path("OUT/siteB/deep")
    assert Job(Path("x.png"), "x").out_dir(Path("OUT")) == Path("OUT")
    with pytest.raises(ConfigError, match="share the name 'img1' in one folder"):
        make_jobs([root / "siteA" / "img1.png", root / "siteA" / "img1.dcm"])


# --------------------------------------------------------------------------- the command


def test_list_with_missing_file_refused_before_any_work(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png")
    listing = tmp_path / "in" / "list.txt"
    listing.write_text("a.png\nb.png\nc.png\n")
    out = tmp_path / "out"
    code, lines = _segment("@" + str(listing), "--out", str(out))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "b.png" in lines[0] and "2 inputs missing" in lines[0]
    assert not out.exists()


def test_clashing_stems_from_two_folders_are_mirrored_not_overwritten(tmp_path: Path) -> None:
    a = _png(tmp_path / "siteA" / "img1.png", seed=0)
    b = _png(tmp_path / "siteB" / "img1.png", seed=2)  # 1 vs 3 specks
    out = tmp_path / "out"
    code, lines = _segment(str(tmp_path / "site*" / "*.png"), "--out", str(out))
    assert code == 0, lines
    assert lines[-1] == f"2 segmented, 0 already done -> {out}"
    assert not (out / "img1_meta.json").exists()
    for site, src in (("siteA", a), ("siteB", b)):
        assert _complete(out / site, "img1")
        meta = json.loads((out / site / "img1_meta.json").read_text())
        assert meta["input"] == src.name
    counts = {r["prefix"]: int(r["n_calcifications"]) for r in _summary(out)}
    assert set(counts) == {"siteA/img1", "siteB/img1"}
    assert counts["siteB/img1"] > counts["siteA/img1"]  # two different images' results
    assert _hidden(out) == []


def test_rerun_skips_finished_images_and_summary_covers_the_batch(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "in" / f"img{i}.png", seed=i)
    out = tmp_path / "out"
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out))
    assert code == 0 and lines[-1].startswith("3 segmented, 0 already done"), lines
    first = _summary(out)
    assert [r["status"] for r in first] == ["done"] * 3
    assert [r["prefix"] for r in first] == ["img0", "img1", "img2"]
    for r in first:
        meta = json.loads((out / f"{r['prefix']}_meta.json").read_text())
        assert int(r["n_calcifications"]) == meta["n_calcifications"]
        assert int(r["n_clusters"]) == meta["n_clusters"]
        assert float(r["seconds"]) > 0 and r["error"] == ""
    before = (out / "img0_meta.json").stat().st_mtime_ns
    (out / "img1_meta.json").unlink()  # an unfinished image: redone
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out))
    assert code == 0 and lines[-1].startswith("1 segmented, 2 already done"), lines
    assert (out / "img0_meta.json").stat().st_mtime_ns == before
    second = _summary(out)
    assert [r["status"] for r in second] == ["skipped", "done", "skipped"]
    # skipped rows carry the counts of their earlier run
    for old, new in zip(first, second, strict=True):
        assert (old["n_calcifications"], old["n_clusters"]) == (new["n_calcifications"], new["n_clusters"])
    # another batch into the same folder keeps the rows of the first
    _png(tmp_path / "more" / "extra.png", seed=5)
    code, lines = _segment(str(tmp_path / "more"), "--out", str(out))
    assert code == 0, lines
    assert [r["prefix"] for r in _summary(out)] == ["extra", "img0", "img1", "img2"]


def test_corrupt_image_is_a_failed_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "in" / f"img{i}.png", seed=i)
    (tmp_path / "in" / "img1b.png").write_text("not a PNG at all")
    out = tmp_path / "out"
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out), "--workers", "2")
    assert code == 2, lines
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]] and "1 of 4 images failed" in errors[0], lines
    assert any(line.startswith("warning:") and "img1b.png" in line for line in lines), lines
    rows = {r["prefix"]: r for r in _summary(out)}
    assert rows["img1b"]["status"] == "failed" and "cannot read" in rows["img1b"]["error"]
    assert rows["img1b"]["n_calcifications"] == ""
    assert all(rows[f"img{i}"]["status"] == "done" and _complete(out, f"img{i}") for i in range(3))
    assert not (out / "img1b_meta.json").exists()


def _fail_replace_after(n: int) -> types.SimpleNamespace:
    """``os`` as seen by mcgenref.io.atomic, whose ``replace`` fails (read-only) after n calls."""
    calls = {"n": 0}

    def replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        os.replace(src, dst)

    ns = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    ns.replace = replace
    return ns


@pytest.mark.parametrize("workers", [0, 2])
def test_output_folder_turning_read_only_stops_the_batch_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    for i in range(5):
        _png(tmp_path / "in" / f"img{i}.png", seed=i)
    out = tmp_path / "out"
    # two images complete, the third fails on its second file
    monkeypatch.setattr(atomic, "os", _fail_replace_after(2 * len(OUTPUT_SUFFIXES) + 1))
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out), "--workers", str(workers))
    monkeypatch.undo()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: cannot write") and "Read-only file system" in lines[0]
    assert _complete(out, "img0") and _complete(out, "img1")
    assert not any((out / f"img{i}_meta.json").exists() for i in range(2, 5))
    assert _hidden(out) == []  # no temporary file left
    # the folder is writable again: the rerun does the rest only
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out))
    assert code == 0 and lines[-1].startswith("3 segmented, 2 already done"), lines


def test_read_only_output_folder_is_refused_before_work(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(atomic, "os", _fail_replace_after(0))

    def no_probe(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", no_probe)
    code, lines = _segment(str(tmp_path / "in"), "--out", str(out))
    monkeypatch.undo()
    assert code == 2 and len(lines) == 1 and "not writable" in lines[0], lines
    assert list(out.iterdir()) == []


def test_pipelined_and_sequential_runs_write_identical_outputs(tmp_path: Path) -> None:
    paths = [_png(tmp_path / "in" / f"img{i}.png", seed=i) for i in range(5)]
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    jobs = make_jobs(sorted([*paths, tmp_path / "in" / "bad.png"], key=str))
    segmenter = Segmenter(SegmentConfig(method="classical"), pixel_spacing_mm=0.2)
    results = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        out.mkdir()
        seen: list[str] = []
        results[workers] = run_jobs(segmenter, jobs, out, workers,
                                    on_row=lambda row, seen=seen: seen.append(row["prefix"]))
        assert sorted(seen) == sorted(j.prefix for j in jobs)  # every job reported once
    seq, par = results[0], results[2]
    assert [r["prefix"] for r in seq.rows] == [r["prefix"] for r in par.rows] == [j.prefix for j in jobs]
    assert [r["status"] for r in par.rows] == ["failed", "done", "done", "done", "done", "done"]
    assert set(par.errors) == {"bad"} and seq.fatal is None and par.fatal is None
    for r_seq, r_par in zip(seq.rows, par.rows, strict=True):
        assert r_seq["n_calcifications"] == r_par["n_calcifications"]
    for p in paths:
        for suffix in ("_prob.png", "_mask.png", "_calcifications.csv", "_clusters.json"):
            name = f"{p.stem}{suffix}"
            assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_summary_merge_replaces_rows_of_the_batch_only(tmp_path: Path) -> None:
    row = {"input": "a.png", "prefix": "a", "status": "done", "n_calcifications": 3,
           "n_clusters": 1, "seconds": 0.5, "error": None}
    write_summary(tmp_path, [row, dict(row, input="b.png", prefix="b")])
    write_summary(tmp_path, [dict(row, status="failed", error="broken, badly", n_calcifications=None)])
    rows = _summary(tmp_path)
    assert [(r["prefix"], r["status"]) for r in rows] == [("a", "failed"), ("b", "done")]
    assert rows[0]["error"] == "broken, badly" and rows[0]["n_calcifications"] == ""


# --------------------------------------------------------------------------- torchrun


def _our_frames(stderr: str) -> list[str]:
    """Traceback lines from mcgenref's code (torchrun's own report of a failed rank aside)."""
    return [line for line in stderr.splitlines() if re.search(r'File ".*/mcgenref/', line)]


_CLI = textwrap.dedent("""
    import sys
    from mcgenref.cli import app
    app(sys.argv[1:], prog_name="mcgenref")
""")


def test_torchrun_two_cpu_ranks_share_the_batch_one_summary(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / "in" / f"img{i}.png", seed=i)
    (tmp_path / "in" / "zbroken.png").write_text("not a PNG")
    script = tmp_path / "cli.py"
    script.write_text(_CLI)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "in"), "--out", str(out), "--method", "classical",
            "--pixel-spacing", "0.2", "--no-progress"]
    result = torchrun_cpu(script, args, timeout=150)
    # the broken image fails the batch on every rank (exit status 2), the others are done
    assert result.returncode != 0, result.stderr[-3000:]
    # one error line, from rank 0 (torchrun then reports the failed rank in its own words)
    assert result.stderr.count("error: 1 of 5 images failed") == 1, result.stderr[-3000:]
    assert not _our_frames(result.stderr), result.stderr[-3000:]
    rows = _summary(out)
    assert [(r["prefix"], r["status"]) for r in rows] == [
        ("img0", "done"), ("img1", "done"), ("img2", "done"), ("img3", "done"),
        ("zbroken", "failed")]
    assert all(_complete(out, f"img{i}") for i in range(4))
    assert _hidden(out) == []  # no partial summary, no temporary file
    # resumed under torchrun: nothing to redo, one summary line (rank 0)
    (tmp_path / "in" / "zbroken.png").unlink()
    result = torchrun_cpu(script, args, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("0 segmented, 4 already done") == 1, result.stdout
    assert [r["status"] for r in _summary(out)] == ["skipped"] * 4 + ["failed"]


def test_torchrun_bad_input_stops_every_rank(tmp_path: Path) -> None:
    _png(tmp_path / "in" / "a.png")
    script = tmp_path / "cli.py"
    script.write_text(_CLI)
    out = tmp_path / "out"
    result = torchrun_cpu(script, ["segment", str(tmp_path / "in" / "a.png"),
                                   str(tmp_path / "gone.png"), "--out", str(out),
                                   "--method", "classical", "--pixel-spacing", "0.2"], timeout=90)
    assert result.returncode != 0
    assert result.stderr.count("error: no such file or folder") == 1, result.stderr[-3000:]
    assert not _our_frames(result.stderr), result.stderr[-3000:]
    assert not out.exists()
