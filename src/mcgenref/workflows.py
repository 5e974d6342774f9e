"""One typed function per CLI command: resolves inputs, shows progress, calls the library.

The CLI (:mod:`mcgenref.cli`) only parses; these functions are what scripts should call when
they want the command's behaviour (progress bar included) rather than the bare library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mcgenref.errors import ConfigError


def _progress():
    from mcgenref.progress import progress_bar

    return progress_bar()


def run_synth(
    out: Path,
    negatives: Sequence[str] | None,
    count: int,
    seed: int,
    pixel_spacing: str | None = None,
    patch_size: int | None = None,
    config_path: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """``mcgenref synth``: write a synthetic data set (see :func:`write_dataset`)."""
    from mcgenref.config import load_config
    from mcgenref.io import list_images, parse_pixel_spacing
    from mcgenref.io.atomic import check_writable_dir
    from mcgenref.synthesis.dataset import SynthRunConfig, write_dataset
    from mcgenref.synthesis.patches import NegativePatchSampler

    if seed < 0:
        raise ConfigError("--seed must be non-negative")
    if count < 1:
        raise ConfigError("--count must be at least 1")
    run_config = load_config(SynthRunConfig, config_path) if config_path else SynthRunConfig()
    if patch_size is not None:
        if not 32 <= patch_size <= 4096:
            raise ConfigError("--patch-size must be between 32 and 4096 pixels")
        try:
            synthesis = dataclasses.replace(run_config.synthesis, patch_size_px=patch_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        run_config = dataclasses.replace(run_config, synthesis=synthesis)
    spacing = parse_pixel_spacing(pixel_spacing) if pixel_spacing else None
    out = Path(out)
    # fail on an unusable output folder before minutes of work
    check_writable_dir(out.parent if str(out.parent) else Path("."))
    sampler = None
    if negatives:
        paths = list_images([Path(p) for p in negatives])
        sampler = NegativePatchSampler(
            paths, run_config.synthesis.patch_size_px, run_config.patches, pixel_spacing_mm=spacing
        )
    elif spacing is not None:
        run_config = dataclasses.replace(run_config, procedural_spacing_mm=spacing)

    if not show_progress:
        return write_dataset(out, count, seed, run_config, sampler, overwrite)
    with _progress() as progress:
        task = progress.add_task("synthesising", total=count)
        return write_dataset(
            out, count, seed, run_config, sampler, overwrite,
            progress=lambda done: progress.update(task, completed=done),
        )


def run_segment(
    inputs: Sequence[str],
    out: Path,
    model: Path | None = None,
    device: str = "auto",
    pixel_spacing: str | None = None,
    threshold: float | None = None,
    method: str = "model",
    config_path: Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    refine: bool = False,
    generator: Path | None = None,
    write_seg: bool = True,
    report: bool = True,
) -> dict:
    """``mcgenref segment``: segment every input image into ``out`` (see mcgenref.inference).

    Images already finished with the same model and settings are skipped unless
    ``overwrite``; finished with other settings, they are refused unless ``overwrite``. A
    failing image is reported and the others go on; the summary says which failed.
    ``write_seg``: DICOM SEG for DICOM inputs (``SegmentConfig.write_seg``, off if either is);
    ``report``: ``out/report.html`` of this run (:func:`mcgenref.report.write_segment_report`).
    """
    import warnings

    from mcgenref.config import load_config
    from mcgenref.errors import McGenRefError, McGenRefWarning, OutputError
    from mcgenref.inference.segment import (
        ALL_OUTPUT_SUFFIXES,
        SegmentConfig,
        Segmenter,
        is_done,
        write_outputs,
    )
    from mcgenref.io import list_images, parse_pixel_spacing
    from mcgenref.io.atomic import check_writable_dir

    config = load_config(SegmentConfig, config_path) if config_path else SegmentConfig()
    changes: dict = {}
    if method not in ("model", "classical"):
        raise ConfigError("--method must be 'model' or 'classical'")
    changes["method"] = method
    if threshold is not None:
        changes["threshold"] = threshold
    if refine:
        changes["refine"] = True
    if not write_seg:
        changes["write_seg"] = False
    try:
        config = dataclasses.replace(config, **changes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    spacing = parse_pixel_spacing(pixel_spacing) if pixel_spacing else None
    out = Path(out)
    # a rerun into the input folder must not take its own outputs for inputs
    paths = [
        p for p in list_images([Path(p) for p in inputs])
        if not (p.parent.resolve() == out.resolve() and p.name.endswith(ALL_OUTPUT_SUFFIXES))
    ]
    if not paths:
        raise ConfigError("no input image to segment")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise ConfigError(f"two inputs share the name {p.stem!r}: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    check_writable_dir(out)
    segmenter = Segmenter(config, model, device, pixel_spacing_mm=spacing, generator_path=generator)
    settings = segmenter.settings()
    todo = []
    skipped = []
    for stem, p in stems.items():
        state = is_done(out, stem, settings, write_seg=config.write_seg)
        if state is True and not overwrite:
            skipped.append(stem)
        elif state is False and not overwrite:
            raise OutputError(
                f"{out / (stem + '_meta.json')} was made with other settings (use --overwrite)"
            )
        else:
            todo.append((stem, p))
    failed: list[dict] = []
    done: list[str] = []

    def one(stem: str, p: Path) -> None:
        try:
            result = segmenter.segment(p, stem=stem)
            write_outputs(result, out)
            done.append(stem)
        except OutputError:
            raise  # the output folder is unusable: stop the batch
        except McGenRefError as exc:
            if len(stems) == 1:
                raise
            warnings.warn(f"{p}: skipped: {exc}", McGenRefWarning, stacklevel=2)
            failed.append({"input": str(p), "error": str(exc)})

    if show_progress and todo:
        with _progress() as progress:
            task = progress.add_task("segmenting", total=len(todo))
            for stem, p in todo:
                one(stem, p)
                progress.advance(task)
    else:
        for stem, p in todo:
            one(stem, p)
    summary = {"done": done, "skipped": skipped, "failed": failed, "out": str(out)}
    if report:  # before a failure is raised: the report lists the failed inputs too
        from mcgenref.report import write_segment_report

        status = {**dict.fromkeys(done, "done"), **dict.fromkeys(skipped, "skipped")}
        errors = {Path(f["input"]).stem: f["error"] for f in failed}
        entries = [{"input": str(p), "prefix": s, "status": status.get(s, "failed"),
                    "error": errors.get(s)} for s, p in stems.items()]
        summary["report"] = str(write_segment_report(out, entries))
    if failed:
        raise McGenRefError(f"{len(failed)} of {len(stems)} images failed (see warnings above)")
    return summary


def run_evaluate(
    pred: Path,
    truth: Path,
    out: Path,
    truth_format: str | None = None,
    tolerance_mm: float = 1.0,
    cluster_tolerance_mm: float = 2.0,
    n_bootstrap: int = 1000,
    seed: int = 0,
    report: bool = True,
) -> dict:
    """``mcgenref evaluate``: metrics.json, per_image.csv, FROC plots and (``report``)
    report.html in ``out``.

    Returns the metrics with an extra ``summary_line`` (not written) for the terminal.
    """
    from mcgenref.evaluation.evaluate import evaluate_predictions
    from mcgenref.io.atomic import check_writable_dir

    if truth_format is not None and truth_format not in ("masks", "inbreast", "mias"):
        raise ConfigError("--truth-format must be masks, inbreast or mias")
    if n_bootstrap < 1:
        raise ConfigError("--bootstrap must be at least 1")
    if seed < 0:
        raise ConfigError("--seed must be non-negative")
    check_writable_dir(Path(out))
    metrics = evaluate_predictions(
        pred, truth, truth_format, out, tolerance_mm=tolerance_mm,
        cluster_tolerance_mm=cluster_tolerance_mm, n_bootstrap=n_bootstrap, seed=seed,
    )
    if report:
        from mcgenref.report import write_evaluation_report

        write_evaluation_report(Path(out), Path(pred))

    def num(value: object, digits: int) -> str:
        # a metric is None when undefined (e.g. sensitivity with no truth MC: only normals)
        return "n/a" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]

    parts = []
    if "pixel" in metrics:
        p = metrics["pixel"]["pooled"]
        parts.append(f"pixel Dice {num(p.get('dice'), 3)} recall {num(p.get('recall'), 3)}")
    if "object" in metrics and "sensitivity" in metrics["object"]:
        o = metrics["object"]
        parts.append(
            f"MC sensitivity {num(o['sensitivity'], 3)} at {num(o.get('fp_per_image'), 2)} FP/image"
        )
    if "cluster" in metrics and "sensitivity" in metrics["cluster"]:
        c = metrics["cluster"]
        fpr = c.get("false_clusters_per_normal_image")
        parts.append(
            f"cluster sensitivity {num(c['sensitivity'], 3)} ({c['found']}/{c['n_truth_clusters']}) "
            f"at {fpr if fpr is None else round(fpr, 2)} false clusters/normal image"
        )
    metrics = dict(metrics)
    metrics["summary_line"] = "; ".join(parts) + f" -> {out}"
    return metrics


def _train(kind: str, out: Path, negatives: Sequence[str] | None, config_path: Path | None,
           device: str, steps: int | None, pixel_spacing: str | None, resume: bool) -> dict:
    from mcgenref.config import load_config
    from mcgenref.io import parse_pixel_spacing
    from mcgenref.training.generator import GeneratorTask
    from mcgenref.training.loop import run_training
    from mcgenref.training.segmentor import SegmentorTask

    task = {"segmentor": SegmentorTask, "generator": GeneratorTask}[kind]
    if steps is not None and steps < 1:
        raise ConfigError("--steps must be at least 1")
    config = load_config(task.config_cls, config_path) if config_path else None
    spacing = parse_pixel_spacing(pixel_spacing) if pixel_spacing else None
    return run_training(
        task, config, list(negatives) if negatives else None, out, device=device, steps=steps,
        resume=resume, pixel_spacing_mm=spacing,
    )


def run_train_generator(
    out: Path,
    negatives: Sequence[str] | None,
    config_path: Path | None = None,
    device: str = "auto",
    steps: int | None = None,
    pixel_spacing: str | None = None,
    resume: bool = False,
) -> dict:
    """``mcgenref train-generator`` (see :func:`mcgenref.training.generator.train_generator`)."""
    return _train("generator", out, negatives, config_path, device, steps, pixel_spacing, resume)


def run_train_segmentor(
    out: Path,
    negatives: Sequence[str] | None,
    config_path: Path | None = None,
    device: str = "auto",
    steps: int | None = None,
    pixel_spacing: str | None = None,
    resume: bool = False,
) -> dict:
    """``mcgenref train-segmentor`` (see :func:`mcgenref.training.segmentor.train_segmentor`)."""
    return _train("segmentor", out, negatives, config_path, device, steps, pixel_spacing, resume)
