"""One typed function per CLI command (one, :func:`run_train`, for both training commands):
resolves inputs, shows progress, calls the library.

The CLI (:mod:`mcgenref.cli`) only parses; these functions are what scripts should call when
they want the command's behaviour (progress bar included) rather than the bare library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from mcgenref.errors import ConfigError
from mcgenref.runtime import is_main_process


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


@dataclasses.dataclass(frozen=True)
class SegmentOptions:
    """The options of ``mcgenref segment`` (:func:`run_segment`), one field per option.

    How a batch is run; the algorithm's settings (windows, cluster rule, ...) are a
    :class:`~mcgenref.inference.segment.SegmentConfig`, read from ``config_path``, of which
    ``threshold``, ``method``, ``refine``, ``write_seg`` and ``roi`` override the fields of that
    name.

    Attributes:
        model: ``"auto"`` or ``None`` (per image: the shipped fine model below 0.1414 mm,
            else the shipped coarse one; :mod:`mcgenref.inference.model_choice`),
            ``"coarse"``, ``"fine"``, or a segmentor folder (model.json + model.safetensors;
            a ``Path`` is always a folder).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (under torchrun: each rank
            its own GPU).
        pixel_spacing: pixel spacing in mm, ``"0.1"`` or ``"ROW,COL"``, overriding the
            files' own; ``None``: the files' (0.1 with a warning where a file has none).
        threshold: probability threshold; ``None``: the method's operating point.
        method: ``"model"`` (the segmentor) or ``"classical"`` (the label-free DoG baseline).
        config_path: JSON :class:`~mcgenref.inference.segment.SegmentConfig`; ``None``:
            the defaults.
        overwrite: redo images already finished in the output folder.
        show_progress: show a progress bar.
        refine: TT-GPR refinement around the segmentor's candidates.
        generator: generator folder for ``refine``; ``None``: the shipped generator.
        write_seg: DICOM SEG for DICOM inputs (off if this or the config's is off).
        report: write ``out/report.html`` of the run (rank 0 under torchrun).
        workers: reader threads of the pipeline, 0-32 (0: read, segment and write one
            image after the other).
        roi: the inputs are crops taken inside the breast (``SegmentConfig.roi``: no breast
            mask, no skin margin, ROI intensity rule, small crops padded).

    Raises:
        ConfigError: ``method`` or ``workers`` out of range (on construction).
    """

    model: str | Path | None = None
    device: str = "auto"
    pixel_spacing: str | None = None
    threshold: float | None = None
    method: str = "model"
    config_path: Path | None = None
    overwrite: bool = False
    show_progress: bool = True
    refine: bool = False
    generator: Path | None = None
    write_seg: bool = True
    report: bool = True
    workers: int = 2
    roi: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("model", "classical"):
            raise ConfigError("--method must be 'model' or 'classical'")
        if not 0 <= self.workers <= 32:
            raise ConfigError("--workers must be between 0 and 32")


def run_segment(
    inputs: Sequence[str], out: Path, options: SegmentOptions = SegmentOptions()
) -> dict:
    """``mcgenref segment``: segment a batch of images into ``out`` (see
    :mod:`mcgenref.inference.batch`: inputs, output prefixes, pipeline, summary.csv, torchrun).

    Images already finished with the same model and settings are skipped unless
    ``options.overwrite``; finished with other settings, they are refused unless
    ``overwrite``. A failing image is reported and the others go on; then a McGenRefError says
    how many failed (a single input's own error when there is one input). Returns the batch
    summary (:func:`mcgenref.inference.batch.segment_batch`), ``rows`` holding one dict per
    image with ``input``, ``prefix``, ``status`` (done / skipped / failed) and ``error``, and,
    with ``options.report``, ``report``: the path of the report
    (:func:`mcgenref.report.write_segment_report`).
    """
    from mcgenref.config import load_config
    from mcgenref.inference.batch import raise_for_failures, segment_batch
    from mcgenref.inference.segment import SegmentConfig
    from mcgenref.io import parse_pixel_spacing

    config = SegmentConfig()
    if options.config_path:
        config = load_config(SegmentConfig, options.config_path)
    changes: dict = {"method": options.method}
    if options.threshold is not None:
        changes["threshold"] = options.threshold
    if options.refine:
        changes["refine"] = True
    if not options.write_seg:
        changes["write_seg"] = False
    if options.roi:
        changes["roi"] = True
    try:
        config = dataclasses.replace(config, **changes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    spacing = parse_pixel_spacing(options.pixel_spacing) if options.pixel_spacing else None
    summary = segment_batch(
        inputs, Path(out), config, options.model, options.device, spacing,
        overwrite=options.overwrite, workers=options.workers, show_progress=options.show_progress,
        generator_path=options.generator,
    )
    if options.report and is_main_process():  # under torchrun: rank 0, whole batch
        from mcgenref.report import write_segment_report

        summary["report"] = str(write_segment_report(Path(out), summary["rows"]))
    raise_for_failures(summary)
    return summary


def run_info(inputs: Sequence[str], pixel_spacing: str | None = None) -> list[dict]:
    """``mcgenref info``: one :func:`mcgenref.io.info.describe_image` record per image, plus
    ``auto_model`` (:func:`auto_model_line`).

    ``inputs`` are expanded as ``segment``'s are (files, folders, quoted globs, ``@list``
    files; a missing one is an error before anything is read). A file that cannot be read
    gives ``{"file": ..., "error": ...}`` (the one-line error ``segment`` would give) and
    the others go on.
    """
    from mcgenref.errors import McGenRefError
    from mcgenref.inference.batch import expand_inputs
    from mcgenref.io import parse_pixel_spacing
    from mcgenref.io.info import describe_image

    spacing = parse_pixel_spacing(pixel_spacing) if pixel_spacing else None
    records: list[dict] = []
    for path in expand_inputs(inputs):
        try:
            record = describe_image(path, pixel_spacing_mm=spacing)
        except McGenRefError as exc:
            records.append({"file": str(path), "error": str(exc)})
        else:
            record["auto_model"] = auto_model_line(record["pixel_spacing_mm"])
            records.append(record)
    return records


def auto_model_line(spacing_mm: Sequence[float]) -> dict[str, str]:
    """What ``segment --model auto`` (without ``--refine``) would pick for an image read at
    ``spacing_mm``, and why: ``{"model": "shipped coarse" | "shipped fine", "reason": ...}``
    (``mcgenref info``'s "auto model" line; computed here, as io does not import inference)."""
    from mcgenref.inference.model_choice import resolve_model

    choice = resolve_model("auto", (float(spacing_mm[0]), float(spacing_mm[1])))
    return {"model": choice.model, "reason": choice.reason}


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

    if truth_format is not None and truth_format not in ("masks", "inbreast", "mias", "roi"):
        raise ConfigError("--truth-format must be masks, inbreast, mias or roi")
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
    if "roi" in metrics:
        r = metrics["roi"]
        primary = r["primary_score"]
        parts.append(f"ROI AUC ({primary}) {num(r['auc'][primary]['auc'], 3)}, best trivial "
                     f"statistic ({r['best_trivial']}) "
                     f"{num(r['trivial_auc'][r['best_trivial']]['auc'], 3)}")
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


def run_train(
    task: str,
    out: Path,
    negatives: Sequence[str] | None = None,
    *,
    config_path: Path | None = None,
    device: str = "auto",
    steps: int | None = None,
    pixel_spacing: str | None = None,
    resume: bool = False,
) -> dict:
    """``mcgenref train-segmentor`` (``task="segmentor"``) and ``train-generator``
    (``task="generator"``): :func:`mcgenref.training.loop.run_training` with the config read
    from ``config_path`` (JSON of the task's config; missing keys keep defaults) and the pixel
    spacing parsed from ``pixel_spacing`` (``"0.1"`` or ``"ROW,COL"``). Returns its summary.
    """
    from mcgenref.config import load_config
    from mcgenref.io import parse_pixel_spacing
    from mcgenref.training.loop import run_training, task_class

    if steps is not None and steps < 1:
        raise ConfigError("--steps must be at least 1")
    config = load_config(task_class(task).config_cls, config_path) if config_path else None
    spacing = parse_pixel_spacing(pixel_spacing) if pixel_spacing else None
    return run_training(
        task, out, list(negatives) if negatives else None, config, device=device, steps=steps,
        resume=resume, pixel_spacing_mm=spacing,
    )
