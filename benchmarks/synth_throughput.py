"""Synthesis throughput: pairs per second per core, in memory, through the on-the-fly dataset.

Measures on-the-fly synthesis as a DataLoader delivers it: ``SyntheticMCStream`` items
(tensors; the trainer's map-style dataset calls the same ``generate_sample``) at 256x256 on
real mini-MIAS negatives (0.2 mm) and on procedural backgrounds, without writing files. Preparing
the negatives (reading, breast masks) is a one-off cost reported separately.

    python benchmarks/synth_throughput.py [--seconds 20] [--out benchmarks/results/synth_throughput]

Writes ``table.md`` and ``table.json``. Target (issue 2): >= 250 pairs/s/core.
The "1 process" row is one core by construction (torch and BLAS limited to one thread);
the "N workers" row runs N DataLoader worker processes and divides by N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, normal_refs  # noqa: E402
from mcgenref.synthesis.config import SynthesisConfig  # noqa: E402
from mcgenref.synthesis.dataset import SyntheticMCStream  # noqa: E402
from mcgenref.synthesis.patches import NegativePatchSampler  # noqa: E402
from mcgenref.synthesis.sample import generate_sample  # noqa: E402


def _rate(stream: SyntheticMCStream, seconds: float, workers: int) -> tuple[int, float]:
    loader = DataLoader(stream, batch_size=None, num_workers=workers,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(max(8, 4 * workers)):  # warm-up (worker start, caches)
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 1
    elapsed = time.perf_counter() - t0
    del it
    return n, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--negatives", type=int, default=40, help="number of mini-MIAS normals")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/synth_throughput")
    args = ap.parse_args()
    torch.set_num_threads(1)

    config = SynthesisConfig(patch_size_px=256)
    images = data_root() / "mini-mias" / "images"
    rows = []
    t0 = time.perf_counter()
    paths = [images / f"{ref}.png" for ref in normal_refs()[: args.negatives]]
    sampler = NegativePatchSampler(paths, 256, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    prep = time.perf_counter() - t0
    for name, smp in (("mini-MIAS negatives (0.2 mm)", sampler), ("procedural (0.1 mm)", None)):
        stream = SyntheticMCStream(0, config, smp, start=0)
        n, el = _rate(stream, args.seconds, 0)
        rows.append({"backgrounds": name, "processes": 1, "pairs": n, "seconds": round(el, 2),
                     "pairs_per_s_per_core": round(n / el, 1)})
        if args.workers > 1:
            n, el = _rate(SyntheticMCStream(0, config, smp, start=0), args.seconds, args.workers)
            rows.append({"backgrounds": name, "processes": args.workers, "pairs": n,
                         "seconds": round(el, 2),
                         "pairs_per_s_per_core": round(n / el / args.workers, 1)})
    # mean number of MCs per pair, to say what was rendered
    mcs = [generate_sample(i, config, sampler).record["n_mcs"] for i in range(200)]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    result = {
        "machine": machine,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "patch_size_px": 256,
        "negatives": len(sampler),
        "prepare_negatives_s": round(prep, 2),
        "mean_mcs_per_pair": round(float(np.mean(mcs)), 1),
        "target_pairs_per_s_per_core": 250,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Synthesis throughput (256x256 pairs, in memory, on-the-fly dataset)",
        "",
        f"Machine: {machine}; Python {result['python']}; torch {result['torch']}.",
        f"Negatives: {len(sampler)} mini-MIAS normals, prepared once in {prep:.1f} s. "
        f"Mean MCs per pair: {result['mean_mcs_per_pair']}. Target: >= 250 pairs/s/core.",
        "",
        "| backgrounds | processes | pairs | seconds | pairs/s/core |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['backgrounds']} | {r['processes']} | {r['pairs']} | {r['seconds']} | "
              f"{r['pairs_per_s_per_core']} |" for r in rows]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
