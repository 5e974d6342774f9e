"""Batch segmentation: many inputs, one output folder, one process or many (``torchrun``).

1. **Inputs -> jobs** (:func:`expand_inputs`, :func:`make_jobs`). An input is a file, a folder
   (its images, not its sub-folders), a glob pattern (``'data/**/*.dcm'``, quoted so that we
   expand it, ``**`` crossing folders) or ``@FILE``, a list file: one path per line, blank
   lines and lines starting with ``#`` ignored, relative paths relative to the list file's
   folder, each line taken literally (no glob). Every missing path is found before any work:
   the error names the first and counts them all. A job is (input, output prefix): when all
   stems are unique the prefix is the flat ``<stem>`` (outputs ``OUT/<stem>_*``); when two
   inputs from different folders share a stem, every input's folder relative to the inputs'
   common parent is mirrored (``OUT/siteA/img1_*``, ``OUT/siteB/img1_*``), so no two jobs
   share a prefix. Two inputs that still clash (one folder, ``img1.png`` and ``img1.dcm``)
   are refused.
2. **Rank split**: under ``torchrun`` (``WORLD_SIZE`` > 1) every rank resolves the same jobs
   in the same order, and rank ``r`` runs ``todo[r::world_size]`` of the jobs not yet done.
3. **Pipeline** (:func:`run_jobs`): ``workers`` reader threads run
   :meth:`~mcgenref.inference.model_choice.ModelSelector.prepare` (read, the image's model by
   its spacing, then :meth:`~mcgenref.inference.segment.Segmenter.prepare`'s breast and
   normalisation) for the
   next images while the calling thread runs :meth:`~mcgenref.inference.segment.Segmenter.detect`
   on the current one, and one writer thread writes the previous image's files. At most
   ``workers + 1`` prepared images and 2 results wait in memory. An image that fails
   (:class:`~mcgenref.errors.McGenRefError`) becomes a ``failed`` row and the batch goes on;
   an :class:`~mcgenref.errors.OutputError` (the folder is full, read-only...) stops the batch:
   every file is written atomically and ``<stem>_meta.json`` last, so an image is either
   complete or redone by the next run.
4. **Summary**: ``OUT/summary.csv`` (atomic), one row per image of the batch
   (:data:`SUMMARY_COLUMNS`); images finished by an earlier run are ``skipped`` rows with
   the counts from their ``_meta.json``; rows of an earlier summary for images not in this
   batch are kept. Under ``torchrun`` the rows travel to rank 0 through the process group
   (gloo, whatever the device: they are small Python objects) and rank 0 alone writes the
   file, so no partial file is ever left behind.
"""

from __future__ import annotations

import csv
import glob
import os
import queue
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcgenref.errors import (
    ConfigError,
    InputError,
    McGenRefError,
    McGenRefWarning,
    OutputError,
)
from mcgenref.runtime import (
    Distributed,
    error_from_records,
    error_record,
    gather,
    rank_device,
    setup_distributed,
    share_error,
    teardown_distributed,
)

#: The batch's summary, in the output folder.
SUMMARY_NAME = "summary.csv"
#: Its columns; ``input``, ``prefix``, ``status`` and ``error`` are what
#: ``mcgenref.report`` takes, the others are for people and scripts.
SUMMARY_COLUMNS = ("input", "prefix", "status", "n_calcifications", "n_clusters", "seconds", "error")
_GLOB_MAGIC = re.compile(r"[*?[]")
@dataclass(frozen=True)
class Job:
    """One image to segment: its file and its output prefix (``/``-separated, relative to OUT)."""

    input: Path
    prefix: str

    @property
    def stem(self) -> str:
        """The file-name part of the prefix: outputs are ``<stem>_prob.png``..."""
        return self.prefix.rsplit("/", 1)[-1]

    def out_dir(self, out: Path) -> Path:
        """The folder that holds this job's outputs (``out`` itself for a flat prefix)."""
        return out.joinpath(*self.prefix.split("/")[:-1])


# --------------------------------------------------------------------------- inputs -> jobs


def _read_list_file(path: Path) -> list[tuple[Path, str]]:
    """(path, where) per entry of a list file; relative entries are relative to its folder."""
    if not path.is_file():
        raise InputError(f"no such list file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read list file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry).expanduser()
        # lexically normalised (``../x`` relative to the list's folder): clean names to report
        full = Path(os.path.normpath(p if p.is_absolute() else path.parent / p))
        entries.append((full, f" (line {number} of {path})"))
    if not entries:
        raise InputError(f"list file {path} names no input")
    return entries


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders, glob patterns and ``@list`` files -> a sorted, de-duplicated image list.

    A name that exists is taken literally even if it contains ``*?[``; one that does not and
    contains them is a glob pattern (``**`` matches across folders; files with a supported
    suffix are kept, hidden ones never match).

    Raises:
        InputError: a named file, folder or list entry does not exist (the first is named,
            all are counted), a pattern matches no image, or no image is found at all.
    """
    from mcgenref.io import SUPPORTED_SUFFIXES, list_images

    if not inputs:
        raise InputError("no input images given")
    found: list[Path] = []
    missing: list[str] = []
    for item in inputs:
        text = str(item)
        if text.startswith("@") and len(text) > 1 and not Path(text).exists():
            for p, where in _read_list_file(Path(text[1:]).expanduser()):
                if p.exists():
                    found.append(p)
                else:
                    missing.append(f"{p}{where}")
            continue
        p = Path(text)
        if p.exists():
            found.append(p)
        elif _GLOB_MAGIC.search(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            images = [m for m in matches if m.is_file() and m.suffix.lower() in SUPPORTED_SUFFIXES]
            if not images:
                raise InputError(
                    f"no image matches {text!r} (looked for {', '.join(SUPPORTED_SUFFIXES)})"
                )
            found.extend(images)
        else:
            missing.append(text)
    if missing:
        more = f" ({len(missing)} inputs missing in all; nothing was done)" if len(missing) > 1 else ""
        raise InputError(f"no such file or folder: {missing[0]}{more}")
    return list_images(found)


def is_own_output(path: Path, out: Path) -> bool:
    """True for a file that a ``segment`` run into ``out`` wrote (a rerun must not take it for
    an input, e.g. with ``--out`` inside the input folder or under a ``**`` pattern)."""
    from mcgenref.io.predictions import ALL_OUTPUT_SUFFIXES

    if not path.name.endswith(ALL_OUTPUT_SUFFIXES):
        return False
    return path.resolve().is_relative_to(out.resolve())


def make_jobs(paths: Sequence[Path]) -> list[Job]:
    """One job per input: flat ``<stem>`` prefixes, or mirrored folders when stems clash.

    Raises:
        ConfigError: two inputs in one folder share a stem (``a.png`` and ``a.dcm``).
    """
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return [Job(p, s) for p, s in zip(paths, stems, strict=True)]
    parents = [os.path.abspath(p.parent) for p in paths]
    common = os.path.commonpath(parents)
    jobs: list[Job] = []
    taken: dict[str, Path] = {}
    for p, parent in zip(paths, parents, strict=True):
        prefix = Path(os.path.relpath(parent, common), p.stem).as_posix()
        if prefix in taken:
            raise ConfigError(
                f"two inputs share the name {p.stem!r} in one folder: {taken[prefix]} and {p} "
                "(their outputs would overwrite each other; rename one)"
            )
        taken[prefix] = p
        jobs.append(Job(p, prefix))
    return jobs


# --------------------------------------------------------------------------- rows


def _row(job: Job, status: str, *, error: str | None = None, n_calcifications: int | None = None,
         n_clusters: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    return {
        "input": str(job.input), "prefix": job.prefix, "status": status,
        "n_calcifications": n_calcifications, "n_clusters": n_clusters,
        "seconds": None if seconds is None else round(seconds, 3), "error": error,
    }


def skipped_row(job: Job, out: Path) -> dict[str, Any]:
    """The row of an image finished by an earlier run (counts from its ``_meta.json``)."""
    from mcgenref.io.predictions import read_meta

    try:
        meta = read_meta(job.out_dir(out), job.stem)
        counts = int(meta.n_calcifications), int(meta.n_clusters)  # type: ignore[arg-type]
    except (InputError, ValueError, TypeError):
        counts = (None, None)
    return _row(job, "skipped", n_calcifications=counts[0], n_clusters=counts[1])


def read_summary(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``summary.csv`` (empty cells -> None); [] if absent or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"prefix", "status"} <= set(reader.fieldnames):
                return []
            return [{k: (row.get(k) or None) for k in SUMMARY_COLUMNS} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def write_summary(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``out/summary.csv`` with ``rows``, plus the rows of the existing one whose prefix is
    not among them (an earlier batch into the same folder); sorted by prefix; atomic."""
    from mcgenref.io.atomic import write_bytes_atomic
    from mcgenref.io.predictions import csv_bytes

    path = out / SUMMARY_NAME
    ours = {row["prefix"] for row in rows}
    kept = [row for row in read_summary(path) if row["prefix"] not in ours]
    merged = sorted([*kept, *rows], key=lambda r: str(r["prefix"]))
    write_bytes_atomic(path, csv_bytes(merged, SUMMARY_COLUMNS))
    return path


# --------------------------------------------------------------------------- the pipeline


@dataclass
class JobsResult:
    """What :func:`run_jobs` did: one row per job run (job order) and why it stopped early."""

    rows: list[dict[str, Any]]
    errors: dict[str, McGenRefError]  # prefix -> the error of each failed image
    fatal: OutputError | None = None  # the output folder became unusable: the rest not run


class _JobSteps:
    """The two steps of one job and their error handling, shared by both modes of
    :func:`run_jobs`: :meth:`detect` (wait for the prepared image, run the detector) and
    :meth:`write` (write the files, record the row). An image that fails becomes a ``failed``
    row; an :class:`OutputError` is kept in ``fatal`` and no further job starts."""

    def __init__(self, segmenter: Any, out: Path,
                 on_row: Callable[[dict[str, Any]], None] | None) -> None:
        from mcgenref.inference import segment as segment_module

        self.segmenter = segmenter
        self.out = out
        self.on_row = on_row
        self.segment_module = segment_module  # write_outputs looked up at call time
        self.rows: dict[int, dict[str, Any]] = {}
        self.errors: dict[str, McGenRefError] = {}
        self.fatal: list[OutputError] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _finish(self, i: int, row: dict[str, Any], exc: McGenRefError | None = None) -> None:
        with self._lock:
            self.rows[i] = row
            if exc is not None:
                self.errors[row["prefix"]] = exc
        if self.on_row is not None:
            self.on_row(row)

    @property
    def halted(self) -> bool:
        """No further job should start (the output folder failed, or the batch is stopping)."""
        return bool(self.fatal) or self.stop.is_set()

    def detect(self, i: int, job: Job, prepared: Callable[[], Any], t0: float) -> Any | None:
        """The detection result, or None when the job ended here (failed or fatal)."""
        try:
            return self.segmenter.detect(prepared())
        except OutputError as exc:  # results already queued are still written
            self.fatal.append(exc)
        except McGenRefError as exc:
            self._finish(i, _row(job, "failed", error=str(exc), seconds=time.perf_counter() - t0),
                         exc)
        return None

    def write(self, i: int, job: Job, result: Any) -> None:
        """Write the job's files and its ``done`` row (or its ``failed`` row)."""
        seconds = float(sum(result.meta.timings.values()))
        try:
            folder = job.out_dir(self.out)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
            t0 = time.perf_counter()
            self.segment_module.write_outputs(result, folder)
        except OutputError as exc:  # the folder is unusable: drop what waits to be written
            self.fatal.append(exc)
            self.stop.set()
        except McGenRefError as exc:  # e.g. a DICOM SEG that cannot be built
            self._finish(i, _row(job, "failed", error=str(exc), seconds=seconds), exc)
        else:
            seconds += time.perf_counter() - t0
            self._finish(i, _row(job, "done", n_calcifications=result.meta.n_calcifications,
                                 n_clusters=result.meta.n_clusters, seconds=seconds))

    def result(self) -> JobsResult:
        return JobsResult([self.rows[i] for i in sorted(self.rows)], self.errors,
                          self.fatal[0] if self.fatal else None)


def run_jobs(segmenter: Any, jobs: Sequence[Job], out: Path, workers: int = 2,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> JobsResult:
    """Segment ``jobs`` into ``out``: read ahead in ``workers`` threads, write in another.

    ``workers=0`` runs read, detection and writing one after the other in this thread.
    ``on_row`` is called once per finished job (from the writer thread when pipelined).
    ``mcgenref.inference.segment.write_outputs`` is looked up at call time (benchmarks wrap it).
    """
    steps = _JobSteps(segmenter, out, on_row)
    if workers <= 0:
        for i, job in enumerate(jobs):
            result = steps.detect(i, job, lambda job=job: segmenter.prepare(job.input, job.stem),
                                  time.perf_counter())
            if result is not None:
                steps.write(i, job, result)
            if steps.halted:
                break
        return steps.result()

    bug: list[BaseException] = []
    # bounded: a slow disk makes detection wait instead of filling memory with results
    write_queue: queue.Queue = queue.Queue(maxsize=2)

    def writer() -> None:
        while True:
            item = write_queue.get()
            if item is None:
                return
            if steps.stop.is_set():
                continue  # the batch is stopping: drop, the image is redone by the next run
            try:
                steps.write(*item)
            except BaseException as exc:  # noqa: BLE001 - a bug: re-raised in the calling thread
                bug.append(exc)
                steps.stop.set()

    writer_thread = threading.Thread(target=writer, name="mcgenref-write", daemon=True)
    writer_thread.start()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mcgenref-read")
    todo = iter(enumerate(jobs))
    pending: deque[tuple[int, Job, Future, float]] = deque()

    def refill() -> None:
        while len(pending) < workers + 1:
            nxt = next(todo, None)
            if nxt is None:
                return
            i, job = nxt
            pending.append((i, job, pool.submit(segmenter.prepare, job.input, job.stem),
                            time.perf_counter()))

    try:
        refill()
        while pending and not steps.halted:
            i, job, future, t0 = pending.popleft()
            refill()  # the readers work on the next images while this one is detected
            result = steps.detect(i, job, future.result, t0)
            if result is not None:
                write_queue.put((i, job, result))
            del result
    except BaseException:
        steps.stop.set()  # interrupted: finish the file being written, drop the rest
        raise
    finally:
        for *_, future, _ in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        write_queue.put(None)
        writer_thread.join()
    if bug:
        raise bug[0]
    return steps.result()


# --------------------------------------------------------------------------- the batch


def segment_batch(
    inputs: Sequence[str | Path],
    out: Path,
    config: Any = None,
    model_path: str | Path | None = None,
    device: str = "auto",
    pixel_spacing_mm: float | tuple[float, float] | None = None,
    overwrite: bool = False,
    workers: int = 2,
    show_progress: bool = True,
    generator_path: Path | None = None,
) -> dict[str, Any]:
    """Segment a batch (see the module docstring); under torchrun, this rank's share.

    Images already finished with the same settings are skipped unless ``overwrite``; finished
    with other settings, they are refused (before any work) unless ``overwrite``.
    ``workers``: reader threads of :func:`run_jobs` (0: no pipelining). ``generator_path``:
    TT-GPR's generator when ``config.refine`` (``None``: the shipped one). ``model_path``:
    ``segment --model``: ``"auto"`` or ``None`` (per image by its spacing), ``"coarse"``,
    ``"fine"`` or a model folder (:mod:`mcgenref.inference.model_choice`); the settings an
    image is compared with on reruns are those of the model it gets.

    Returns (on every rank, for the whole batch): ``out``, ``rows`` (one dict per image, job
    order: :data:`SUMMARY_COLUMNS`), ``done`` / ``skipped`` (prefixes), ``failed`` (dicts
    with ``input``, ``prefix``, ``error``, ``kind``), ``n_images``, ``summary_csv``,
    ``world_size``, ``seconds``. A failed image does not raise here: see
    :func:`raise_for_failures`.

    Raises:
        McGenRefError: bad inputs, unusable output folder or model (before any work, on
            every rank); OutputError when the folder becomes unusable during the batch (the
            summary of what was done is written if the folder still takes it).
    """
    t_start = time.perf_counter()
    out = Path(out)
    # gloo whatever the device: only small Python objects are exchanged, never tensors
    ddp = setup_distributed("gloo")
    synchronised = False
    try:
        try:
            summary = _segment_batch(inputs, out, config, model_path, device, pixel_spacing_mm,
                                     overwrite, workers, show_progress, ddp, generator_path)
        except McGenRefError:
            synchronised = True  # raised on every rank alike, after a collective
            raise
        synchronised = True
        summary["seconds"] = round(time.perf_counter() - t_start, 3)
        return summary
    finally:
        teardown_distributed(ddp, synchronised)


def progress_label(n_mine: int, n_todo: int, world_size: int) -> str:
    """The progress bar's text. Under torchrun only rank 0 draws a bar and it counts rank 0's
    own images, so it says that it shows rank 0's share (of ``n_todo`` images to do)."""
    if world_size <= 1:
        return "segmenting"
    return f"segmenting (rank 0's share: {n_mine} of {n_todo} images, {world_size} ranks)"


def _segment_batch(
    inputs: Sequence[str | Path], out: Path, config: Any, model_path: str | Path | None, device: str,
    pixel_spacing_mm: float | tuple[float, float] | None, overwrite: bool, workers: int,
    show_progress: bool, ddp: Distributed, generator_path: Path | None = None,
) -> dict[str, Any]:
    from mcgenref.inference.model_choice import ModelSelector
    from mcgenref.io.atomic import check_writable_dir
    from mcgenref.progress import progress_bar

    error: McGenRefError | None = None
    jobs: list[Job] = []
    skipped: list[tuple[int, dict[str, Any]]] = []
    todo: list[tuple[int, Job]] = []
    segmenter = None
    try:
        paths = [p for p in expand_inputs(inputs) if not is_own_output(p, out)]
        if not paths:
            raise ConfigError("no input image to segment")
        jobs = make_jobs(paths)
        check_writable_dir(out)
        segmenter = ModelSelector(config, model_path, rank_device(device, ddp),
                                  pixel_spacing_mm=pixel_spacing_mm, generator_path=generator_path)
        for i, job in enumerate(jobs):
            # the settings of the model this image gets (auto: by its spacing)
            state = segmenter.done_state(job.out_dir(out), job.stem)
            if state is True and not overwrite:
                skipped.append((i, skipped_row(job, out)))
            elif state is False and not overwrite:
                raise OutputError(
                    f"{job.out_dir(out) / (job.stem + '_meta.json')} was made with other "
                    "settings (use --overwrite)"
                )
            else:
                todo.append((i, job))
    except McGenRefError as exc:
        error = exc
    # every rank planned from the same files before any rank starts writing (this collective
    # is the barrier), so the shares agree; an error on one rank stops them all, none hangs
    error = share_error(error, ddp)
    if error is not None:
        raise error

    mine = todo[ddp.rank :: ddp.world_size]
    show = show_progress and ddp.is_main and bool(mine)
    with progress_bar(enabled=show) as progress:
        task = progress.add_task(progress_label(len(mine), len(todo), ddp.world_size),
                                 total=len(mine))

        def on_row(row: dict[str, Any]) -> None:
            if row["status"] == "failed" and len(jobs) > 1:
                warnings.warn(f"{row['input']}: skipped: {row['error']}", McGenRefWarning,
                              stacklevel=2)
            progress.advance(task)

        result = run_jobs(segmenter, [job for _, job in mine], out, workers, on_row)
    index = {job.prefix: i for i, job in enumerate(jobs)}
    kinds = {prefix: type(exc).__name__ for prefix, exc in result.errors.items()}
    gathered = gather((result.rows, kinds, error_record(result.fatal)), ddp)
    rows_by_index = dict(skipped)
    all_kinds: dict[str, str] = {}
    for rank_rows, rank_kinds, _ in gathered:
        all_kinds.update(rank_kinds)
        for row in rank_rows:
            rows_by_index[index[row["prefix"]]] = row
    rows = [rows_by_index[i] for i in sorted(rows_by_index)]
    fatal = result.fatal or error_from_records([g[2] for g in gathered])

    summary_error: McGenRefError | None = None
    if ddp.is_main:
        try:
            write_summary(out, rows)
        except OutputError as exc:
            summary_error = exc
    if fatal is not None:
        raise fatal  # the summary was written if the folder still took it; its error is moot
    summary_error = share_error(summary_error, ddp)
    if summary_error is not None:
        raise summary_error
    return {
        "out": str(out),
        "rows": rows,
        "done": [r["prefix"] for r in rows if r["status"] == "done"],
        "skipped": [r["prefix"] for r in rows if r["status"] == "skipped"],
        "failed": [{"input": r["input"], "prefix": r["prefix"], "error": r["error"],
                    "kind": all_kinds.get(r["prefix"], "McGenRefError")}
                   for r in rows if r["status"] == "failed"],
        "n_images": len(jobs),
        "summary_csv": str(out / SUMMARY_NAME),
        "world_size": ddp.world_size,
    }


def raise_for_failures(summary: dict[str, Any]) -> None:
    """Raise if an image of the batch failed: a single input's own error, else how many."""
    failed = summary["failed"]
    if not failed:
        return
    if summary["n_images"] == 1:
        error = error_from_records([(failed[0]["kind"], failed[0]["error"])])
        assert error is not None
        raise error
    raise McGenRefError(
        f"{len(failed)} of {summary['n_images']} images failed (see warnings above; "
        f"{summary['summary_csv']} lists them)"
    )

