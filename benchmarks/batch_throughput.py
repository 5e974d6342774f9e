"""Batch throughput: sequential vs pipelined ``segment`` over generated example mammograms.

    python benchmarks/batch_throughput.py [--images 20] [--methods model,classical]
                                          [--workers 0,1,2] [--torch-threads 1] [--repeats 1]
                                          [--out benchmarks/results/batch_throughput.md]

The inputs are ``--images`` example mammograms (:mod:`mcgenref.synthesis.example`: 1024 x 832,
0.2 mm, 12-bit DICOM MG, one seed each), so every image also gets its DICOM SEG. Each
(method, workers) variant is one :func:`mcgenref.workflows.run_segment` call over the folder
into a fresh output folder, in this process, timed from call to return (model loading
included, once per call): ``workers=0`` reads, segments and writes one image after the other;
``workers=N`` reads the next images in N threads and writes in another while the current one
is segmented (:mod:`mcgenref.inference.batch`). Variants alternate within each repeat so a
neighbour's load on the shared machine hits them alike; the best repeat is reported.
``--torch-threads`` sets torch's intra-op threads (default 1: on the shared 2-core build
machine, 2 threads made the model ~10x slower than 1 whenever other jobs were running, as
OpenMP threads wait for cores that are busy elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def make_inputs(folder: Path, n: int) -> list[Path]:
    from mcgenref.synthesis.example import write_example

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        path = folder / f"example{seed:03d}.dcm"
        write_example(path, seed=seed)
        paths.append(path)
    return paths


def run_variant(images: Path, out: Path, method: str, workers: int) -> dict[str, float]:
    from mcgenref.workflows import SegmentOptions, run_segment

    t0 = time.perf_counter()
    options = SegmentOptions(method=method, device="cpu", workers=workers, show_progress=False)
    summary = run_segment([str(images)], out, options)
    wall = time.perf_counter() - t0
    n = len(summary["done"])
    own = sum(float(r["seconds"]) for r in summary["rows"])
    return {"images": n, "wall_s": wall, "images_per_s": n / wall, "own_s_per_image": own / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--methods", default="model,classical")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "batch_throughput.md")
    args = parser.parse_args()
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    methods = args.methods.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mcgenref-batch-") as tmp:
        images = Path(tmp) / "images"
        t0 = time.perf_counter()
        make_inputs(images, args.images)
        print(f"{args.images} inputs made in {time.perf_counter() - t0:.1f} s", flush=True)
        for repeat in range(args.repeats):
            for method in methods:
                for w in workers:
                    out = Path(tmp) / f"out-{method}-{w}-{repeat}"
                    r = run_variant(images, out, method, w)
                    results.setdefault((method, w), []).append(r)
                    print(f"{method} workers={w}: {r['images_per_s']:.3f} images/s "
                          f"({r['wall_s']:.1f} s)", flush=True)
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    lines = [
        "# Batch throughput: sequential vs pipelined `segment`",
        "",
        (f"`python benchmarks/batch_throughput.py --images {args.images} --repeats {args.repeats}` "
         f"on a {os.cpu_count()}-core CPU container ({cpu}; shared with other jobs), no GPU, "
         f"torch {torch.__version__} with {torch.get_num_threads()} intra-op threads, "
         f"Python {platform.python_version()}; load average before / after "
         f"{load_before[0]:.1f} / {os.getloadavg()[0]:.1f} (other jobs). Inputs: {args.images} example mammograms "
         "(1024 x 832, 0.2 mm, DICOM; each also gets a DICOM SEG). One `run_segment` call per "
         "variant, model loading included; best of the repeats."),
        "",
        "| method | workers | images/s | wall (s) | own time per image (s) | speed-up vs workers=0 |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        base = max(r["images_per_s"] for r in results[(method, workers[0])])
        for w in workers:
            best = max(results[(method, w)], key=lambda r: r["images_per_s"])
            lines.append(
                f"| {method} | {w} | {best['images_per_s']:.3f} | {best['wall_s']:.1f} "
                f"| {best['own_s_per_image']:.3f} | {best['images_per_s'] / base:.2f} |"
            )
    lines += [
        "",
        ("`own time per image`: the sum of the image's stage times (read, preprocess, detect, "
         "post-process, write) from `summary.csv`; with workers > 0 the stages of different "
         "images overlap, so wall time per image is less than their sum when there is a "
         "spare core, and each stage runs slower when the cores are contended."),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
