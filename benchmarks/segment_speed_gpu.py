"""Full-field segmentation speed on a CUDA GPU, side by side with plain MONAI inference.

    python benchmarks/segment_speed_gpu.py [--model DIR] [--spacing 0.07]
                                           [--batch-sizes 8,16,32] [--no-compile]
                                           [--repeats 5] [--out benchmarks/results/segment_speed_gpu]

Needs a CUDA GPU: on a CPU-only machine it prints one ``error:`` line and exits with status 2
(the CPU numbers are ``benchmarks/segment_speed.py``'s). It has not been run on the 2-core
build machine, which has no GPU; run it where one is lent and commit the table it writes.

On the generated full-field image of ``benchmarks/segment_speed.py`` (same field, any
``--spacing``, any ``--model``), in one process and one run, so the ratios are comparable:

- ``mcgenref network``: :func:`mcgenref.inference.sliding.sliding_window_logits` over the
  breast-only windows of the model grid, for each batch size, in four forms: fp32, bf16
  autocast, bf16 + channels-last, bf16 + channels-last + ``torch.compile`` (skipped with
  ``--no-compile``; its compile time is reported, not counted);
- ``mcgenref pipeline``: ``Segmenter.segment`` on ``cuda`` (bf16 autocast as shipped), read to
  clusters, and ``write_outputs``;
- ``monai``: ``monai.inferers.sliding_window_inference`` over the whole model grid, on the GPU,
  same batch sizes, bf16 autocast, constant blending (its defaults otherwise).

Every time is the best of ``--repeats`` after a warm-up, with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def best_time(fn, repeats: int) -> float:
    import torch

    fn()  # warm-up (cuDNN autotuning, compilation)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "src/mcgenref/weights/segmentor")
    ap.add_argument("--spacing", type=float, default=0.07)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/segment_speed_gpu")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: segment_speed_gpu.py needs a CUDA GPU and none is visible "
              "(CPU timings: benchmarks/segment_speed.py)", file=sys.stderr)
        return 2
    from monai.inferers import sliding_window_inference

    from mcgenref.inference.segment import Segmenter, SegmentConfig, fill_outside, write_outputs
    from mcgenref.inference.sliding import sliding_window_logits
    from mcgenref.io.resample import resample, zoom_factors
    from mcgenref.runtime import Autocast
    from segment_speed import image_shape, make_dicom

    torch.backends.cudnn.benchmark = True
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    device = torch.device("cuda")
    rows, cols = image_shape(args.spacing)
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "image": f"{rows} x {cols} at {args.spacing:g} mm (generated)"}
    with tempfile.TemporaryDirectory() as tmp:
        dicom = Path(tmp) / "fullfield.dcm"
        make_dicom(dicom, spacing=args.spacing)
        seg = Segmenter(model_path=args.model, device="cuda")
        res["model"] = seg.model_info["name"]
        prepared = seg.prepare(dicom)
        zoom = zoom_factors(prepared.spacing, seg.model_spacing or prepared.spacing)
        work_region = resample(prepared.region.view(np.uint8), zoom, order=0) > 0
        work = fill_outside(resample(prepared.image, zoom, order=1), work_region)
        res["model_grid"] = list(work.shape)
        model = seg.model
        bf16 = Autocast.for_device(device)
        fp32 = None
        # a copy: Module.to converts in place, and the other forms keep contiguous weights
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def channels_last(net):
            return lambda x: net(x.contiguous(memory_format=torch.channels_last))

        forms = {"fp32": (model, fp32), "bf16": (model, bf16),
                 "bf16 channels-last": (channels_last(model_cl), bf16)}
        if not args.no_compile:
            t0 = time.perf_counter()
            compiled = torch.compile(model_cl)
            forms["bf16 channels-last compiled"] = (channels_last(compiled), bf16)
            res["compile_started_s"] = time.perf_counter() - t0
        network: dict = {}
        for name, (predict, autocast) in forms.items():
            for b in batch_sizes:
                t0 = time.perf_counter()
                sliding_window_logits(work, work_region, predict, seg.config.window_px,
                                      seg.config.overlap, b, device, autocast)
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                network[f"{name}, batch {b}"] = {
                    "first_call_s": first,
                    "seconds": best_time(lambda: sliding_window_logits(
                        work, work_region, predict, seg.config.window_px, seg.config.overlap,
                        b, device, autocast), args.repeats)}
        res["mcgenref_network"] = network
        x = torch.from_numpy(np.ascontiguousarray(work))[None, None].to(device)
        monai: dict = {}
        with torch.inference_mode():
            for b in batch_sizes:
                def run_monai() -> None:
                    with bf16():
                        out = sliding_window_inference(x, (seg.config.window_px,) * 2, b, model)
                    out.float().cpu()
                monai[f"bf16, sw_batch_size {b}"] = best_time(run_monai, args.repeats)
        res["monai_whole_grid"] = monai
        pipeline: dict = {}
        for b in batch_sizes:
            s = Segmenter(SegmentConfig(batch_size=b), model_path=args.model, device="cuda")
            result = s.segment(dicom)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = s.segment(dicom)
                times.append(time.perf_counter() - t0)
            with tempfile.TemporaryDirectory() as out:
                write_outputs(result, Path(out))
                write_s = write_outputs(result, Path(out))["write_s"]
            pipeline[f"batch {b}"] = {"whole_s": min(times), "network_s": result.meta.detector["network_s"],
                                      "write_s": write_s, "timings": result.meta.timings}
        res["mcgenref_pipeline"] = pipeline
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"# Full-field segmentation speed on {res['gpu']}", "",
             f"`python benchmarks/segment_speed_gpu.py`; model {res['model']}; image {res['image']}, "
             f"model grid {res['model_grid'][0]}x{res['model_grid'][1]}; best of {args.repeats} after a warm-up.",
             "", "| variant | seconds |", "|---|---|"]
    lines += [f"| mcgenref network, {k} | {v['seconds']:.3f} |" for k, v in network.items()]
    lines += [f"| plain MONAI whole grid, {k} | {v:.3f} |" for k, v in monai.items()]
    lines += [f"| mcgenref whole pipeline, {k} (write {v['write_s']:.2f} s separate) | {v['whole_s']:.3f} |"
              for k, v in pipeline.items()]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
