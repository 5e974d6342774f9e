"""Load: one ``segment`` batch over many small images; memory, file handles and throughput.

    python benchmarks/load.py [--images 500] [--methods classical,model]
                              [--rows 320 --cols 256] [--threads 1]
                              [--out benchmarks/results/load]

Issue 6 (part 5): segmenting a batch of many images must keep memory flat, leak no file
handle, and keep its throughput from the first image to the last. CI runs the same function
on 50 images (``tests/reliability/test_load.py``).

The inputs are generated mammogram-like PNGs (uint8, ``rows`` x ``cols``, a textured
half-ellipse against the left edge, dark air, noise and a few bright specks; fixed seed per
image) read at ``--pixel-spacing 0.2`` (the shipped model's spacing, so no resampling and no
"no spacing in file" warning). Each method runs :func:`mcgenref.workflows.run_segment` once
over the whole folder, in this process. After every image (a wrapper around
``mcgenref.inference.segment.write_outputs``, which ``run_segment`` looks up at call time,
restored afterwards) we sample the process's resident memory (``VmRSS`` in
``/proc/self/status``, raw and after glibc's ``malloc_trim(0)``: see :func:`live_rss_mb`), its
open file descriptors (``/proc/self/fd``; those on the inputs, which the batch's reader
threads hold for a moment while reading ahead, are counted once the batch has returned
instead, and must then be 0) and the clock. The write wrapper runs in the batch's writer
thread.

Reported per method: RSS after image 10, after half the images and after the last; the
least-squares slope of RSS over the second half (MB per 100 images); the fd count after the
first few images against the last; throughput (images/s) over the first and the last 10 %
of the images, both as count / elapsed and as 1 / median per-image time (robust to a
neighbour's job stealing the shared CPU for a moment).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: the fd count is compared with the one after this many images (lazy imports, caches and
#: the like open their files during the first images)
FD_REFERENCE_IMAGE = 5


# --------------------------------------------------------------------------- inputs


def phantom(rows: int, cols: int, seed: int) -> np.ndarray:
    """A uint8 'left breast': textured half-ellipse against the left edge, air, specks."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    inside = ((r - rows / 2) / (0.42 * rows)) ** 2 + (c / (0.8 * cols)) ** 2 <= 1.0
    phase = rng.uniform(0, 2 * np.pi, 2)
    tissue = (120 + 30 * np.sin(r / 9.0 + phase[0]) * np.cos(c / 13.0 + phase[1])
              + rng.normal(0, 6, (rows, cols)))
    img = np.where(inside, tissue, 8.0) + rng.normal(0, 2, (rows, cols))
    # a few bright 1-2 px specks inside the breast, so post-processing has something to do
    ys, xs = np.nonzero(inside[: rows, : int(cols * 0.6)])
    for k in rng.choice(len(ys), size=min(8, len(ys)), replace=False):
        y, x = ys[k], xs[k]
        img[y : y + 2, x : x + 2] += 70
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(folder: Path, n: int, rows: int = 320, cols: int = 256, seed: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        Image.fromarray(phantom(rows, cols, seed * 1_000_003 + i)).save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- sampling


def rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another libc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def live_rss_mb() -> float:
    """RSS after handing free heap pages back to the OS (glibc ``malloc_trim(0)``).

    Raw RSS of a process that frees large arrays depends on where glibc placed them: its
    dynamic mmap threshold rises after the first large free, later arrays come from the heap,
    and freed heap pages stay resident until trimmed. Between images the raw RSS of the model
    method swings by ~50 MB that way, up and down, which hides a slow leak; after a trim
    what stays resident is memory still allocated (or fragmented), which is what a leak grows.
    """
    if _TRIM is not None:
        _TRIM(0)
    return rss_mb()


def open_fds(skip_under: Path | None = None) -> int:
    """Open file descriptors of this process, not counting those on files under
    ``skip_under``: the inputs that ``segment``'s reader threads open for a moment while they
    read ahead (a sample may fall inside such a read). Those are checked once the batch has
    returned instead (:func:`fds_under`)."""
    # listdir itself holds one fd on /proc/self/fd while listing: the same in every sample
    names = os.listdir("/proc/self/fd")
    return len(names) - (fds_under(skip_under, names) if skip_under is not None else 0)


def fds_under(folder: Path, names: list[str] | None = None) -> int:
    """How many of this process's open fds are on files under ``folder``."""
    root = os.path.realpath(folder) + os.sep
    count = 0
    for name in names if names is not None else os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith(root):
                count += 1
    return count


@contextlib.contextmanager
def sample_after_each_image(samples: list[dict[str, float]],
                            inputs: Path | None = None) -> Iterator[None]:
    """Wrap ``write_outputs`` (looked up by ``run_segment`` at call time) to sample after it."""
    import mcgenref.inference.segment as segment_module

    original = segment_module.write_outputs
    state = {"last": None}

    def wrapped(result, out_dir):
        out = original(result, out_dir)
        now = time.perf_counter()
        own = sum(result.meta.timings.values()) + out["write_s"]
        gap = own if state["last"] is None else now - state["last"]
        state["last"] = now
        raw = rss_mb()
        live = live_rss_mb()
        samples.append({"t": now, "rss_raw_mb": raw, "rss_mb": live, "fds": open_fds(inputs),
                        "gap_s": gap, "own_s": own})
        # the sampling (trim included) is not the next image's time
        state["last"] = time.perf_counter()
        return out

    segment_module.write_outputs = wrapped
    try:
        yield
    finally:
        segment_module.write_outputs = original


# --------------------------------------------------------------------------- one run


def _throughput(gaps: np.ndarray) -> dict[str, float]:
    return {
        "images_per_s": float(len(gaps) / gaps.sum()),
        "images_per_s_median": float(1.0 / np.median(gaps)),
    }


def summarise(samples: list[dict[str, float]], rss_before_mb: float, fds_before: int) -> dict[str, Any]:
    n = len(samples)
    rss = np.array([s["rss_mb"] for s in samples])
    raw = np.array([s["rss_raw_mb"] for s in samples])
    fds = [int(s["fds"]) for s in samples]
    gaps = np.array([s["gap_s"] for s in samples])
    idx = np.arange(1, n + 1)
    half = n // 2
    second = slice(half - 1, n)  # images half .. n
    slope = float(np.polyfit(idx[second], rss[second], 1)[0]) if n - half >= 2 else 0.0
    tenth = max(1, round(n / 10))
    ref = min(FD_REFERENCE_IMAGE, n)
    return {
        "images": n,
        "rss_before_mb": round(rss_before_mb, 1),
        "rss_at_10_mb": round(float(rss[min(10, n) - 1]), 1),
        "rss_at_half_mb": round(float(rss[half - 1]), 1) if half else None,
        "rss_at_end_mb": round(float(rss[-1]), 1),
        "rss_max_mb": round(float(rss.max()), 1),
        "rss_raw_first_half_max_mb": round(float(raw[:half].max()), 1) if half else None,
        "rss_raw_second_half_max_mb": round(float(raw[half:].max()), 1),
        "rss_raw_max_mb": round(float(raw.max()), 1),
        "rss_raw_swing_mb": round(float(np.ptp(raw[min(10, n - 1):])), 1),
        "malloc_trim": _TRIM is not None,
        "rss_growth_second_half_mb": round(float(rss[-1] - rss[half - 1]), 2) if half else 0.0,
        "rss_slope_second_half_mb_per_100": round(100.0 * slope, 3),
        "fds_before": fds_before,
        "fd_reference_image": ref,
        "fds_at_reference": fds[ref - 1],
        "fds_at_end": fds[-1],
        "fds_max": max(fds),
        "images_in_each_tenth": tenth,
        "first_tenth": {k: round(v, 2) for k, v in _throughput(gaps[:tenth]).items()},
        "last_tenth": {k: round(v, 2) for k, v in _throughput(gaps[-tenth:]).items()},
        "overall_images_per_s": round(float(n / gaps.sum()), 2),
        "series": {
            "rss_mb": [round(float(v), 2) for v in rss],
            "rss_raw_mb": [round(float(v), 2) for v in raw],
            "fds": fds,
            "seconds": [round(float(v), 4) for v in gaps],
        },
    }


def run_load(n_images: int, method: str = "classical", workdir: Path | None = None,
             rows: int = 320, cols: int = 256, seed: int = 0,
             images: Path | None = None) -> dict[str, Any]:
    """Segment ``n_images`` generated images in one ``run_segment`` call; per-image samples.

    ``images``: an existing folder of inputs (made by :func:`make_images`) to reuse.
    """
    from mcgenref.workflows import SegmentOptions, run_segment

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcgenref-load-")))
        if images is None:
            images = workdir / "images"
            make_images(images, n_images, rows, cols, seed)
        out = workdir / f"out-{method}"
        samples: list[dict[str, float]] = []
        rss_before, fds_before = live_rss_mb(), open_fds()
        t0 = time.perf_counter()
        with sample_after_each_image(samples, images):
            summary = run_segment(
                [str(images)], out,
                SegmentOptions(method=method, device="cpu", pixel_spacing="0.2", show_progress=False),
            )
        wall = time.perf_counter() - t0
        if len(summary["done"]) != n_images or len(samples) != n_images:
            raise RuntimeError(f"{method}: {len(summary['done'])} of {n_images} images done")
        result = summarise(samples, rss_before, fds_before)
        result.update({"method": method, "wall_s": round(wall, 2), "image_shape": [rows, cols],
                       "input_fds_open_after": fds_under(images)})
        return result


# --------------------------------------------------------------------------- report


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def write_report(results: list[dict[str, Any]], out: Path, machine: dict[str, Any],
                 total_s: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(
        {"machine": machine, "total_s": round(total_s, 1), "runs": results}, indent=1) + "\n")
    n = results[0]["images"]
    rows, cols = results[0]["image_shape"]
    lines = [
        "# Load: one segment batch over many small images",
        "",
        (f"`python benchmarks/load.py --images {n}` on {machine['cpu']}, {machine['cores']} cores "
         f"(shared container), torch threads {machine['torch_threads']}, torch {machine['torch']}. "
         f"Inputs: {n} generated {rows} x {cols} uint8 PNG phantoms at 0.2 mm; each method is one "
         "`run_segment` call over the folder, sampled in-process after every image. "
         f"Total {total_s:.0f} s."),
        "",
        ("| method | RSS before (MB) | RSS @10 | RSS @50 % | RSS @100 % "
         "| RSS slope, 2nd half (MB/100 img) | raw RSS max, 1st / 2nd half (MB) "
         f"| open fds @img {FD_REFERENCE_IMAGE} -> end | img/s first 10 % (median-based) "
         "| img/s last 10 % (median-based) | img/s overall | wall (s) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f, la = r["first_tenth"], r["last_tenth"]
        lines.append(
            f"| {r['method']} | {r['rss_before_mb']} | {r['rss_at_10_mb']} | {r['rss_at_half_mb']} "
            f"| {r['rss_at_end_mb']} | {r['rss_slope_second_half_mb_per_100']:+.2f} "
            f"| {r['rss_raw_first_half_max_mb']} / {r['rss_raw_second_half_max_mb']} "
            f"| {r['fds_at_reference']} -> {r['fds_at_end']} (max {r['fds_max']}) "
            f"| {f['images_per_s']} ({f['images_per_s_median']}) "
            f"| {la['images_per_s']} ({la['images_per_s_median']}) "
            f"| {r['overall_images_per_s']} | {r['wall_s']} |"
        )
    swings = ", ".join(f"{r['method']} {r['rss_raw_swing_mb']} MB" for r in results)
    lines += [
        "",
        ("RSS is `VmRSS` after the image's files are written and glibc's free heap pages are "
         "handed back (`malloc_trim(0)`): the memory still allocated, which is what a leak grows; "
         "the slope is a least-squares fit over images n/2 .. n. Raw RSS (before the trim) goes "
         "up and down from image to image as glibc keeps or returns the pages of freed arrays "
         f"(range after image 10: {swings}; see the plot); its maximum per half is in the table. "
         "Throughput: images / elapsed seconds over the first and last "
         f"{results[0]['images_in_each_tenth']} images (in brackets: 1 / median per-image time, "
         "insensitive to a neighbour's job on the shared CPU). The first 10 % includes one-off "
         "lazy imports. Methods ran one after the other in one process, classical first. "
         "Plot: [load.png](load.png)."),
        "",
    ]
    (out / "table.md").write_text("\n".join(lines))
    plot(results, out / "load.png")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for r in results:
        idx = np.arange(1, r["images"] + 1)
        line, = axes[0].plot(idx, r["series"]["rss_mb"], lw=1.2, label=f"{r['method']} (after trim)")
        axes[0].plot(idx, r["series"]["rss_raw_mb"], lw=0.5, alpha=0.6, color=line.get_color(),
                     ls="--", label=f"{r['method']} (raw)")
        axes[1].plot(idx, np.asarray(r["series"]["seconds"]) * 1000, lw=0.6, label=r["method"])
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend(loc="upper left", fontsize=7, ncol=2)
    axes[1].set_ylabel("per-image time (ms)")
    axes[1].set_xlabel("image index")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--methods", default="classical,model")
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load")
    args = parser.parse_args(argv)
    if args.images < 10:
        parser.error("--images must be at least 10")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="mcgenref-load-") as tmp:
        images = Path(tmp) / "images"
        make_images(images, args.images, args.rows, args.cols, args.seed)
        print(f"{args.images} images made in {time.perf_counter() - t0:.1f} s", flush=True)
        for method in args.methods.split(","):
            r = run_load(args.images, method.strip(), Path(tmp), args.rows, args.cols,
                         args.seed, images=images)
            results.append(r)
            print(f"{r['method']}: RSS {r['rss_at_10_mb']} -> {r['rss_at_half_mb']} -> "
                  f"{r['rss_at_end_mb']} MB, slope {r['rss_slope_second_half_mb_per_100']} MB/100, "
                  f"fds {r['fds_at_reference']} -> {r['fds_at_end']}, img/s "
                  f"{r['first_tenth']['images_per_s']} -> {r['last_tenth']['images_per_s']}, "
                  f"{r['wall_s']} s", flush=True)
    total = time.perf_counter() - t0
    write_report(results, args.out, _machine(), total)
    print(f"total {total:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
