"""The ``mcgenref`` command line: parses arguments and calls the library, nothing else.

User errors (:class:`mcgenref.errors.McGenRefError`) print one line, ``error: ...``, and exit
with status 2; warnings (:class:`mcgenref.errors.McGenRefWarning`) print ``warning: ...``, and
so do the warnings and logged warnings of the libraries we call, one line each
(:mod:`mcgenref.io.library_warnings`), never Python's raw form.
Heavy modules (torch, the synthesis engine) are imported inside the commands so that
``mcgenref --help`` starts fast.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mcgenref import __version__
from mcgenref.errors import McGenRefError, McGenRefWarning
from mcgenref.runtime import is_main_process

app = typer.Typer(
    name="mcgenref",
    help=(
        "Annotation-free microcalcification segmentation in mammograms (MC-GenRef). "
        "Research use only; not a medical device."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, McGenRefWarning):
        typer.echo(f"warning: {message}", err=True)
    else:  # a library's (pydicom, highdicom, PIL...): one line naming the input, never raw
        from mcgenref.io.library_warnings import library_warning_line

        _echo_library_warning(library_warning_line(message, str(filename)))


#: Library warning lines already printed by this command (pydicom both warns and logs the
#: same message: one line is enough).
_library_lines_shown: set[str] = set()


def _echo_library_warning(text: str) -> None:
    if text in _library_lines_shown:
        return
    _library_lines_shown.add(text)
    typer.echo(f"warning: {text}", err=True)


def user_errors(func: F) -> F:
    """Turn a McGenRefError into one ``error:`` line and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mcgenref.io.library_warnings import OneLineLogHandler

        # libraries' logging records (highdicom, pydicom) print as one warning line too
        _library_lines_shown.clear()
        log_handler = OneLineLogHandler(_echo_library_warning)
        root = logging.getLogger()
        root.addHandler(log_handler)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", McGenRefWarning)  # each distinct one once
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except McGenRefError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(code=130) from None
        finally:
            root.removeHandler(log_handler)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mcgenref {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Annotation-free microcalcification segmentation in mammograms (MC-GenRef)."""


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created; must be new or empty unless --overwrite).")],
    negatives: Annotated[
        list[str] | None,
        typer.Option(
            "--negatives",
            help="Normal mammograms (files or folders; repeat the option) used as backgrounds. "
            "Without it, procedural power-law backgrounds are used.",
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", help="Number of samples to write.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Base seed; the same arguments give identical files.")] = 0,
    pixel_spacing: Annotated[
        str | None,
        typer.Option(
            "--pixel-spacing",
            help="Pixel spacing in mm of the negatives (one value, or ROW,COL). Overrides the "
            "files' own; for procedural backgrounds it sets their spacing (default 0.1).",
        ),
    ] = None,
    patch_size: Annotated[int | None, typer.Option("--patch-size", help="Patch side in pixels (default from the config: 256).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="JSON run config (the format of the config.json this command writes; missing keys keep defaults)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty output folder.")] = False,
) -> None:
    """Write synthetic microcalcification image/mask pairs with exact masks.

    Writes images/NNNNNN.png (16-bit), masks/NNNNNN.png (0/255), manifest.jsonl, config.json,
    dataset.json and preview.png into OUT.
    """
    from mcgenref.workflows import run_synth

    run_synth(
        out=out, negatives=negatives, count=count, seed=seed, pixel_spacing=pixel_spacing,
        patch_size=patch_size, config_path=config, overwrite=overwrite,
    )


@app.command()
@user_errors
def example(
    out: Annotated[Path, typer.Option("--out", help="Image to write: .dcm (DICOM MG) or .png (16-bit).")] = Path("example.dcm"),
    seed: Annotated[int, typer.Option("--seed", help="The example is fully determined by its seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing example.")] = False,
) -> None:
    """Write a generated example mammogram (0.2 mm) with known MC clusters.

    Its exact MC mask goes to <stem>_truth/<stem>.png beside it (for 'mcgenref evaluate').
    """
    from mcgenref.synthesis.example import write_example

    info = write_example(out, seed=seed, overwrite=overwrite)
    hint = "" if out.suffix.lower() == ".dcm" else " (a PNG has no spacing: segment it with --pixel-spacing 0.2)"
    typer.echo(f"{info['image']}: {info['n_visible']} visible MCs (mask in {info['truth']}){hint}")


@app.command("train-segmentor")
@user_errors
def train_segmentor_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder (config.json, log.jsonl, checkpoint/, model/).")],
    negatives: Annotated[
        list[str] | None,
        typer.Option("--negatives", help="Normal mammograms (files or folders; repeat the option). Without it: procedural backgrounds."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON TrainSegmentorConfig (missing keys keep defaults).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (overrides the config).")] = None,
    pixel_spacing: Annotated[str | None, typer.Option("--pixel-spacing", help="Pixel spacing in mm of the negatives (one value or ROW,COL); overrides the files' own. Without negatives it sets the procedural backgrounds' spacing.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last checkpoint.")] = False,
) -> None:
    """Train the segmentor on synthetic MCs injected on the fly (runs under torchrun too)."""
    from mcgenref.workflows import run_train

    summary = run_train("segmentor", out, negatives, config_path=config, device=device, steps=steps,
                        pixel_spacing=pixel_spacing, resume=resume)
    if not is_main_process():  # under torchrun, one summary line, from rank 0
        return
    typer.echo(
        f"step {summary['step']}/{summary['steps']}: validation Dice {summary['val_dice']} -> {summary['run_dir']}"
    )


@app.command("train-generator")
@user_errors
def train_generator_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder (config.json, log.jsonl, checkpoint/, model/).")],
    negatives: Annotated[
        list[str] | None,
        typer.Option("--negatives", help="Normal mammograms (files or folders; repeat the option). Without it: procedural backgrounds."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON TrainGeneratorConfig (missing keys keep defaults).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (overrides the config).")] = None,
    pixel_spacing: Annotated[str | None, typer.Option("--pixel-spacing", help="Pixel spacing in mm of the negatives (one value or ROW,COL); overrides the files' own. Without negatives it sets the procedural backgrounds' spacing.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last checkpoint.")] = False,
) -> None:
    """Train the seed-conditioned rectified-flow generator TT-GPR uses (runs under torchrun too)."""
    from mcgenref.workflows import run_train

    summary = run_train("generator", out, negatives, config_path=config, device=device, steps=steps,
                        pixel_spacing=pixel_spacing, resume=resume)
    if not is_main_process():
        return
    typer.echo(
        f"step {summary['step']}/{summary['steps']}: validation flow loss {summary['val_loss']} -> {summary['run_dir']}"
    )


@app.command()
@user_errors
def segment(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Mammograms (DICOM, PNG, TIFF, PGM), folders of them (not their sub-folders), "
            "quoted glob patterns ('data/**/*.dcm') or @FILE: a list file, one path per line "
            "(# comments; relative paths are relative to the list file).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if needed).")],
    model: Annotated[str, typer.Option("--model", help="auto: per image, the shipped fine (0.1 mm) model when the image's pixel spacing (the larger of row/column, after --pixel-spacing or the 0.1 mm default) is below 0.1414 mm (sqrt(0.1 x 0.2)), else the shipped coarse (0.2 mm, film) model (the fine one not installed: coarse, with one warning); coarse or fine: that model for every image; or a model folder (model.json + model.safetensors). With --refine, auto is coarse (the shipped generator works with it only). The choice and why go into <stem>_meta.json.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (under torchrun: each rank its own GPU).")] = "auto",
    pixel_spacing: Annotated[
        str | None,
        typer.Option("--pixel-spacing", help="Pixel spacing in mm (one value or ROW,COL); overrides the files' own. Default where a file has none: 0.1 with a warning."),
    ] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Probability threshold (default: the operating point recorded with the model each image gets, or the classical method's; see the model card).")] = None,
    method: Annotated[str, typer.Option("--method", help="model (the segmentor) or classical (label-free DoG baseline).")] = "model",
    config: Annotated[Path | None, typer.Option("--config", help="JSON SegmentConfig (window size, overlap, cluster rule...).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo images already finished in OUT.")] = False,
    refine: Annotated[bool, typer.Option("--refine", help="Refine the segmentor's output around its candidates with TT-GPR (generator projections; slower). Writes <stem>_uncertainty.png too.")] = False,
    generator: Annotated[Path | None, typer.Option("--generator", help="Generator folder for --refine; default: the shipped generator.")] = None,
    no_seg: Annotated[bool, typer.Option("--no-seg", help="Do not write <stem>_seg.dcm (DICOM SEG) for DICOM inputs.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write OUT/report.html.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Threads reading the next images while one is segmented (a further thread writes the previous one's files); 0: read, segment and write one after the other.")] = 2,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    roi: Annotated[bool, typer.Option("--roi", help="Inputs are crops taken inside the breast: the whole crop is searched (no breast mask, no skin margin), intensity = crop median at mid-grey on the file's bit-depth scale, crops smaller than a network window are reflect-padded; _breast.png is all ones.")] = False,
) -> None:
    """Segment microcalcifications in full-field mammograms (runs under torchrun too), or in
    crops taken inside the breast with --roi.

    For each input <stem> writes <stem>_prob.png, _mask.png, _calcifications.csv,
    _clusters.json (clusters with descriptive geometry), _overlay.png, _breast.png, with
    --refine _uncertainty.png, for DICOM inputs _seg.dcm (DICOM SEG), and _meta.json into OUT
    (into OUT/<folder>/ when inputs from different folders share a stem); then
    OUT/summary.csv and OUT/report.html (a self-contained HTML report) for the batch.
    Finished images are skipped; a failing image is reported and the batch goes on (exit
    status 2 at the end if any failed).
    """
    from mcgenref.workflows import SegmentOptions, run_segment

    try:
        options = SegmentOptions(
            model=model, device=device, pixel_spacing=pixel_spacing, threshold=threshold,
            method=method, config_path=config, overwrite=overwrite, show_progress=not no_progress,
            refine=refine, generator=generator, write_seg=not no_seg, report=not no_report,
            workers=workers, roi=roi,
        )
        summary = run_segment(inputs, out, options)
    except McGenRefError:
        if not is_main_process():
            # under torchrun every rank learns every error (mcgenref.inference.batch) and rank
            # 0 reports it and exits 2; another rank failing too would only make torchrun kill
            # rank 0 before it has said why
            return
        raise
    if not is_main_process():  # under torchrun, one summary line, from rank 0
        return
    typer.echo(
        f"{len(summary['done'])} segmented, {len(summary['skipped'])} already done -> {summary['out']}"
    )


@app.command()
@user_errors
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="A folder written by 'mcgenref segment'.")],
    truth: Annotated[Path, typer.Option("--truth", help="Ground truth: a mask folder, INbreast XML file/folder, mini-MIAS Info.txt, or a ROI folder (normal/ and calcification/ crops, MAGIC-5 style: ROI AUC).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, per_image.csv, FROC plots and report.html.")],
    truth_format: Annotated[str | None, typer.Option("--truth-format", help="masks, inbreast, mias or roi (detected when not given).")] = None,
    tolerance_mm: Annotated[float, typer.Option("--tolerance-mm", help="An MC is hit by a detection within this distance.")] = 1.0,
    cluster_tolerance_mm: Annotated[float, typer.Option("--cluster-tolerance-mm", help="A labelled cluster circle is enlarged by this much.")] = 2.0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% confidence intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write OUT/report.html.")] = False,
) -> None:
    """Score a prediction folder against ground truth (pixel, object and cluster metrics, FROC;
    for a ROI folder, ROI AUC beside the crops' trivial statistics, CIs over cases)."""
    from mcgenref.workflows import run_evaluate

    metrics = run_evaluate(pred, truth, out, truth_format, tolerance_mm, cluster_tolerance_mm, bootstrap, seed,
                           report=not no_report)
    typer.echo(metrics["summary_line"])


@app.command()
@user_errors
def info(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Mammograms (DICOM, PNG, TIFF, PGM), folders of them (not their sub-folders), "
            "quoted glob patterns or @FILE list files, as for 'segment'.",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON list of records on stdout (a bad file: {file, error}).")
    ] = False,
    pixel_spacing: Annotated[
        str | None,
        typer.Option("--pixel-spacing",
                     help="Pixel spacing in mm (one value or ROW,COL), as 'segment' would take it."),
    ] = None,
) -> None:
    """Show what the reader sees in each image, without segmenting: format, size, pixel
    spacing and its source, photometric interpretation (inverted?), bits stored, modality LUT,
    VOI LUT presence, presentation intent, laterality, view, magnification, the reader's
    warnings, and which model 'segment --model auto' would pick and why. Nothing is written. A file that cannot be read gets segment's one-line error
    (exit status 2 at the end).
    """
    import json

    from mcgenref.io.info import info_text
    from mcgenref.workflows import run_info

    records = run_info(inputs, pixel_spacing=pixel_spacing)
    good = [r for r in records if "error" not in r]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
    elif good:
        typer.echo("\n\n".join(info_text(r) for r in good))
    failed = [r for r in records if "error" in r]
    for r in failed:
        typer.echo(f"error: {r['error']}", err=True)
    if failed:
        raise typer.Exit(code=2)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
