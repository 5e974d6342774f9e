"""Full-field segmentation speed: network time vs whole pipeline, and plain MONAI inference.

    python benchmarks/segment_speed.py [--model DIR] [--device auto] [--repeats 2]
                                       [--out benchmarks/results/segment_speed]

The input is a generated 70 um full-field mammogram (4096 x 3328, 12-bit DICOM with
ImagerPixelSpacing 0.07): a procedural power-law breast texture inside a half-ellipse against
the chest wall, air around it. Each variant runs in its own process, so its peak memory
(``ru_maxrss``) is its own:

- ``pipeline``: ``Segmenter.segment`` (read, breast mask, normalisation, resampling to the
  model's spacing, breast-only sliding windows, resampling back, MC/cluster post-processing),
  then ``write_outputs`` timed separately;
- ``monai``: ``monai.inferers.sliding_window_inference`` at its defaults (overlap 0.25,
  constant blending, sw_batch_size 1) over the whole image on the model's grid: network plus
  MONAI's own stitching, nothing else.

Targets (issue 3): pipeline overhead (everything but the network, file writing excluded)
<= 30 % of network time; a full field within 120 s on a 2-core CPU; network part <= 0.1 s on GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ROWS, COLS, SPACING = 4096, 3328, 0.07


def make_dicom(path: Path, seed: int = 0) -> None:
    from mcgenref.io.dicom_write import dataset_bytes, mammogram_dataset
    from mcgenref.synthesis.config import BackgroundConfig
    from mcgenref.synthesis.background import procedural_background

    rng = np.random.default_rng(seed)
    texture = procedural_background(rng, (ROWS, COLS), (SPACING, SPACING), BackgroundConfig())
    r, c = np.mgrid[0:ROWS, 0:COLS]
    inside = ((r - ROWS / 2) / (0.45 * ROWS)) ** 2 + (c / (0.85 * COLS)) ** 2 <= 1
    img = np.where(inside, 1200 + 1800 * np.clip(texture, 0, 1.5), 80 + rng.normal(0, 5, (ROWS, COLS)))
    pixels = np.clip(img, 0, 4095).astype(np.uint16)
    path.write_bytes(dataset_bytes(mammogram_dataset(pixels, (SPACING, SPACING))))


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM (Linux) belongs to the process image, unlike
    ru_maxrss, which a child inherits from the parent it was forked from."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def variant_pipeline(dicom: Path, model: Path, device: str, repeats: int) -> dict:
    from mcgenref.inference.segment import Segmenter, write_outputs

    seg = Segmenter(model_path=model, device=device)
    seg.segment(dicom)  # warm-up (allocator, MKL/cuDNN kernels)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = seg.segment(dicom)
        total = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as out:
            write_s = write_outputs(result, Path(out))["write_s"]
        t = result.meta.timings
        network = result.meta.detector["network_s"]
        runs.append({"total_s": total, "network_s": network, "write_s": write_s,
                     "overhead_s": total - network, **t,
                     "windows": result.meta.detector["windows"],
                     "windows_total": result.meta.detector["windows_total"]})
    best = min(runs, key=lambda x: x["total_s"])
    best["peak_rss_mb"] = _peak_rss_mb()
    best["device"] = str(seg.device)
    return best


def variant_monai(dicom: Path, model: Path, device: str, repeats: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from mcgenref.inference.segment import Segmenter
    from mcgenref.io import fit_normalization, read_image, segment_breast
    from mcgenref.io.resample import resample, zoom_factors

    seg = Segmenter(model_path=model, device=device)
    raw, meta = read_image(dicom)
    region = segment_breast(raw, meta).breast
    image = fit_normalization(raw, region).apply(raw).astype(np.float32)
    work = resample(image, zoom_factors(meta.pixel_spacing_mm, seg.model_spacing), order=1)
    x = torch.from_numpy(np.ascontiguousarray(work))[None, None].to(seg.device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            with seg.autocast():
                out = sliding_window_inference(x, (256, 256), 1, seg.model)
            out.float().cpu()
            if i:  # the first run is the warm-up
                times.append(time.perf_counter() - t0)
    return {"network_and_stitching_s": min(times), "peak_rss_mb": _peak_rss_mb(),
            "device": str(seg.device), "grid": list(work.shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "src/mcgenref/weights/segmentor")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/segment_speed")
    ap.add_argument("--variant", choices=["pipeline", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--dicom", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:  # child process
        fn = variant_pipeline if args.variant == "pipeline" else variant_monai
        print(json.dumps(fn(args.dicom, args.model, args.device, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        dicom = Path(tmp) / "fullfield_70um.dcm"
        make_dicom(dicom)
        res = {}
        for variant in ("pipeline", "monai"):
            proc = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--dicom", str(dicom),
                 "--model", str(args.model), "--device", args.device,
                 "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True,
            )
            res[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    p, m = res["pipeline"], res["monai"]
    import torch

    machine = (torch.cuda.get_device_name(0) if p["device"].startswith("cuda")
               else f"CPU {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    overhead = p["total_s"] - p["network_s"]
    result = {"machine": machine, "image": f"{ROWS} x {COLS} at {SPACING} mm (generated)",
              "pipeline": p, "monai_default": m,
              "overhead_fraction_of_network": overhead / p["network_s"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Full-field segmentation speed",
        "",
        f"`python benchmarks/segment_speed.py` on {machine}. Image: {result['image']}; "
        f"best of {args.repeats} after a warm-up; each variant in its own process.",
        "",
        "| variant | seconds | what it includes | peak RSS (MB) |",
        "|---|---|---|---|",
        f"| mcgenref pipeline, network only | {p['network_s']:.2f} | {p['windows']} of {p['windows_total']} windows (breast only) on the {SPACING}->model-spacing grid | |",
        f"| mcgenref pipeline, whole | {p['total_s']:.2f} | read {p['read_s']:.2f}, preprocess {p['preprocess_s']:.2f}, detect {p['detect_s']:.2f} (incl. network and resampling), postprocess {p['postprocess_s']:.2f} | {p['peak_rss_mb']:.0f} |",
        f"| file writing (separate) | {p['write_s']:.2f} | the 8 output files of a DICOM input (incl. the DICOM SEG), atomic | |",
        f"| plain MONAI sliding_window_inference, defaults | {m['network_and_stitching_s']:.2f} | whole {m['grid'][0]}x{m['grid'][1]} grid, no breast restriction, no pre/post-processing | {m['peak_rss_mb']:.0f} |",
        "",
        f"Pipeline overhead (whole minus network, writing excluded): {overhead:.2f} s = "
        f"{100 * overhead / p['network_s']:.0f} % of network time (target <= 30 %).",
    ]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
