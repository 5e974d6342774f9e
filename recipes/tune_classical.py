"""Tune the classical baseline's scales on development data with Optuna, so the yardstick is fair.

    pip install optuna   # the 'tune' extra
    python recipes/tune_classical.py [--trials 16] [--normals 40]

Search space: ``sigma_spot_mm`` in [0.05, 0.2], ``sigma_background_mm`` in [0.3, 1.5],
``sigma_noise_mm`` in [1, 8]. Objective: mean cluster sensitivity at 0.25, 0.5, 1 and 2 false
clusters per normal image (the FROC region that matters), on the 8 mini-MIAS calcification
images (development data) and the first ``--normals`` normals of the ``calibration`` part of
the split (:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`; 20 images: never the training
or test women). TPE sampler with a fixed seed; trial 0 is the current default. Prints the
best parameters and writes them to benchmarks/results/classical_tuning.json; ClassicalConfig's defaults are
set from that file by hand (the model card records the result).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

import default_segmentor as recipe  # noqa: E402

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402
from mcgenref.evaluation.evaluate import HIGH_THRESHOLDS, THRESHOLD_RANGE  # noqa: E402
from mcgenref.evaluation.metrics import froc_clusters, sensitivity_at  # noqa: E402
from mcgenref.evaluation.truth import read_mias_info  # noqa: E402
from mcgenref.inference.classical import ClassicalConfig, classical_score  # noqa: E402
from mcgenref.inference.segment import SegmentConfig, Segmenter, fill_outside  # noqa: E402

FP_RATES = (0.25, 0.5, 1.0, 2.0)


def main() -> None:
    import optuna

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--normals", type=int, default=40)
    args = ap.parse_args()
    calibration = recipe.split().part("calibration")
    refs = calc_refs() + calibration[: args.normals]
    truth = read_mias_info(data_root() / "mini-mias" / "Info.txt")
    spacing = (MIAS_PIXEL_SPACING_MM, MIAS_PIXEL_SPACING_MM)
    seg = Segmenter(SegmentConfig(method="classical"), device="cpu", pixel_spacing_mm=spacing)
    images, regions, circles, normal = [], [], [], []
    for ref, path in zip(refs, recipe.image_paths(refs)):
        res = seg.segment(path)  # the pipeline's own preprocessing: normalised image, region
        images.append(fill_outside(res.image, res.region))
        regions.append(res.region)
        gt = truth[ref]
        circles.append(np.array([c.in_mm(spacing) for c in (gt.clusters or [])]).reshape(-1, 3))
        normal.append(bool(gt.is_normal))
    thresholds = np.concatenate([np.linspace(*THRESHOLD_RANGE, 19), HIGH_THRESHOLDS])

    def objective(trial: optuna.Trial) -> float:
        cfg = ClassicalConfig(
            sigma_spot_mm=trial.suggest_float("sigma_spot_mm", 0.05, 0.2),
            sigma_background_mm=trial.suggest_float("sigma_background_mm", 0.3, 1.5),
            sigma_noise_mm=trial.suggest_float("sigma_noise_mm", 1.0, 8.0),
        )
        probs = [np.where(r, classical_score(im, spacing, cfg), 0.0) for im, r in zip(images, regions)]
        curve = froc_clusters(probs, circles, normal, thresholds, [spacing] * len(probs), regions)
        return float(np.mean([sensitivity_at(curve, f) for f in FP_RATES]))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    default = ClassicalConfig()
    study.enqueue_trial({"sigma_spot_mm": default.sigma_spot_mm,
                         "sigma_background_mm": default.sigma_background_mm,
                         "sigma_noise_mm": default.sigma_noise_mm})
    study.optimize(objective, n_trials=args.trials)
    result = {"best_params": study.best_params, "best_value": study.best_value,
              "default_value": study.trials[0].value, "trials": args.trials,
              "images": f"{len(calc_refs())} calcification + {len(refs) - len(calc_refs())} calibration normals",
              "objective": f"mean cluster sensitivity at {FP_RATES} false clusters per normal"}
    out = REPO / "benchmarks" / "results" / "classical_tuning.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
