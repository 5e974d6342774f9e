"""The recipe of the shipped default segmentor: data split, training, operating point, install.

    python recipes/default_segmentor.py train     [--steps N] [--device auto] [--resume]
                                                  [--channels 16,32,64,128] [--run DIR]
    python recipes/default_segmentor.py calibrate  # choose the operating threshold
    python recipes/default_segmentor.py install    # copy the model into the package

Data (from $MCGENREF_DATA, default ../shared/data; never copied into the repo):
- the 152 normal mini-MIAS images, split BY WOMAN (pairs 2k-1, 2k) into three parts,
  :data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`: ``training`` (113 images; the
  backgrounds for synthetic MCs), ``calibration`` (20; mining and operating points, never
  trained on) and ``test`` (19; only for the reported quality of ``benchmarks/quality.py``);
- the 8 calcification images are development data: they are used here to choose the operating
  threshold and are never trained on.

The operating point (``calibrate``): segment the calcification images and the calibration
normals, sweep the threshold with ``mcgenref evaluate``'s cluster FROC, and take the threshold
with the highest cluster sensitivity at <= 1 false cluster per (calibration) normal image; ties
go to the highest threshold. The same rule picks the classical baseline's threshold. (The
shipped model's operating point predates the three-way split: it was chosen on the training
normals; its model.json ``data_split`` says so.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcgenref.datasets import data_root  # noqa: E402
from mcgenref.datasets.mias import (  # noqa: E402
    MIAS_PIXEL_SPACING_MM,
    calc_refs,
    normal_refs,
)
from mcgenref.datasets.mias_split import (  # noqa: E402
    MIAS_NORMAL_SPLIT,
    SPLIT_RULE,
    NormalSplit,
    split_normals,
    split_record,
)

RUN_DIR = REPO / "runs" / "default_segmentor"
PACKAGE_MODEL = REPO / "src" / "mcgenref" / "weights" / "segmentor"
MAX_FALSE_CLUSTERS_PER_NORMAL = 1.0


def split() -> NormalSplit:
    """The three-way split by woman of the mini-MIAS normals (training / calibration / test),
    checked against the normals found in $MCGENREF_DATA."""
    if split_normals(normal_refs(), **SPLIT_RULE) != MIAS_NORMAL_SPLIT:
        raise SystemExit("the mini-MIAS normals found differ from the committed split "
                         "(mcgenref.datasets.mias_split); check $MCGENREF_DATA")
    return MIAS_NORMAL_SPLIT


def image_paths(refs: list[str]) -> list[Path]:
    folder = data_root() / "mini-mias" / "images"
    return [folder / f"{ref}.png" for ref in refs]


def synthetic_patches(refs: list[str], n: int, seed: int, patch: int = 256,
                      n_mcs_range: tuple[int, int] | None = None) -> list:
    """``n`` synthetic samples (:class:`mcgenref.synthesis.sample.Sample`) of ``patch`` px on
    the normals ``refs`` with base seed ``seed`` (clusters of ``n_mcs_range`` MCs; default:
    the synthesis default), for evaluation and tuning."""
    from mcgenref.synthesis.config import ClusterConfig, SynthesisConfig
    from mcgenref.synthesis.dataset import SyntheticMCDataset
    from mcgenref.synthesis.patches import NegativePatchSampler

    sampler = NegativePatchSampler(image_paths(refs), patch, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    config = SynthesisConfig(patch_size_px=patch)
    if n_mcs_range is not None:
        config = SynthesisConfig(patch_size_px=patch, cluster=ClusterConfig(n_mcs_range=n_mcs_range))
    data = SyntheticMCDataset(n, seed, config, sampler)
    return [data.sample(i) for i in range(n)]


def train_config(steps: int):  # noqa: ANN201
    """The recipe's training config (see docs/model_card.md for why each value)."""
    from mcgenref.models.segmentor import SegmentorConfig
    from mcgenref.synthesis.config import ClusterConfig, SynthesisConfig
    from mcgenref.training.segmentor import TrainSegmentorConfig

    return TrainSegmentorConfig(
        model=SegmentorConfig(),
        # BI-RADS "grouped" means >= 5 MCs; with realistic contrast most synthetic MCs are
        # below the visibility CNR, so clusters of >= 5 give the network more visible ones.
        synthesis=SynthesisConfig(patch_size_px=128, cluster=ClusterConfig(n_mcs_range=(5, 30))),
        procedural_spacing_mm=(MIAS_PIXEL_SPACING_MM, MIAS_PIXEL_SPACING_MM),
        procedural_fraction=0.1,
        steps=steps,
        batch_size=16,
        lr=2e-3,
        warmup_steps=100,
        ema_decay=0.995,
        val_size=64,
        val_every=250,
        checkpoint_every=250,
        num_workers=1,
        seed=0,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from mcgenref.training import run_training

    train = training_refs()
    config = train_config(args.steps)
    if args.channels:  # the capacity study (issue 13): the same recipe, a wider network
        import dataclasses

        width = tuple(int(c) for c in args.channels.split(","))
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, channels=width))
    summary = run_training(
        "segmentor", args.run,
        None if args.resume else image_paths(train),
        None if args.resume else config,
        device=args.device, steps=args.steps if not args.resume else None,
        resume=args.resume, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM,
        stop_at_step=args.stop_at_step,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "val_history"}, indent=2))


def choose_threshold(metrics: dict) -> dict:
    """Highest cluster sensitivity at <= MAX false clusters per normal; ties -> highest t."""
    froc = metrics["cluster"]["froc"]
    best = None
    for t, sens, fpr in zip(froc["thresholds"], froc["sensitivity"],
                            froc["false_clusters_per_normal_image"]):
        if sens is None or fpr is None or fpr > MAX_FALSE_CLUSTERS_PER_NORMAL:
            continue
        if best is None or sens > best["sensitivity"] or (
            sens == best["sensitivity"] and t > best["threshold"]
        ):
            best = {"threshold": float(t), "sensitivity": float(sens),
                    "false_clusters_per_normal_image": float(fpr)}
    if best is None:
        raise SystemExit("no threshold reaches <= 1 false cluster per normal image")
    return best


def calibrate(method: str, model: Path | None, work: Path) -> dict:
    """Segment the development images and return the chosen operating point."""
    from mcgenref.workflows import SegmentOptions, run_evaluate, run_segment

    inputs = [str(p) for p in image_paths(calc_refs() + split().part("calibration"))]
    pred = work / f"pred-{method}"
    run_segment(inputs, pred, SegmentOptions(model=model, device="auto",
                                             pixel_spacing=str(MIAS_PIXEL_SPACING_MM),
                                             threshold=0.5, method=method, overwrite=True))
    metrics = run_evaluate(pred, data_root() / "mini-mias" / "Info.txt", work / f"eval-{method}",
                           "mias", n_bootstrap=200)
    return {**choose_threshold(metrics), "skin_margin_mm": segment_skin_margin_mm()}


def segment_skin_margin_mm() -> float:
    """The skin margin ``segment`` searches with by default (the operating point depends on it)."""
    from mcgenref.inference.segment import SegmentConfig

    return SegmentConfig().skin_margin_mm


def training_refs() -> list[str]:
    """The training part of the split, checked to share no image with the calcification images
    or the held-out parts."""
    parts = split()
    train = parts.part("training")
    forbidden = set(calc_refs()) | set(parts.calibration) | set(parts.test)
    assert not forbidden & set(train), "training set overlaps calcification or held-out images"
    return train


def cmd_calibrate(args: argparse.Namespace) -> None:
    model = RUN_DIR / "model"
    with tempfile.TemporaryDirectory() as tmp:
        points = {
            "model": calibrate("model", model, Path(tmp)),
            "classical": calibrate("classical", None, Path(tmp)),
        }
    points["chosen_on"] = (
        f"cluster FROC on the {len(calc_refs())} mini-MIAS calcification images (development "
        f"data) and the {len(split().calibration)} calibration-part normals; rule: highest "
        f"cluster sensitivity at "
        f"<= {MAX_FALSE_CLUSTERS_PER_NORMAL:g} false cluster per normal image, ties to the "
        "highest threshold"
    )
    out = RUN_DIR / "operating_points.json"
    out.write_text(json.dumps(points, indent=2) + "\n")
    print(json.dumps(points, indent=2))


def cmd_install(args: argparse.Namespace) -> None:
    """Copy the trained model into the package with its operating point and data split."""
    install_model(RUN_DIR / "model", json.loads((RUN_DIR / "operating_points.json").read_text()),
                  json.loads((RUN_DIR / "config.json").read_text()),
                  "python recipes/default_segmentor.py train && ... calibrate && ... install")


def install_model(src: Path, points: dict, training_config: dict, recipe: str,
                  seen_extra: dict | None = None) -> None:
    """Install the model folder ``src`` as the shipped film segmentor, with ``points``
    (``{"model": {threshold, sensitivity, false_clusters_per_normal_image}, "classical":
    {threshold}, "chosen_on": str}``), its training config and the recipe that made it."""
    meta = json.loads((src / "model.json").read_text())
    parts = split()
    meta["name"] = "mcgenref-default-segmentor"
    meta["operating_point"] = {
        "threshold": points["model"]["threshold"],
        "classical_threshold": points["classical"]["threshold"],
        "chosen_on": points["chosen_on"],
        "development_sensitivity": points["model"]["sensitivity"],
        "development_false_clusters_per_normal_image": points["model"]["false_clusters_per_normal_image"],
        **skin_margin_record(points["model"]),
    }
    meta["data"] = {
        "backgrounds": "mini-MIAS normal images (research use only; see docs/model_card.md)",
        "training_refs": parts.part("training"),
        "held_out_refs": sorted(parts.calibration + parts.test),
        "split": "by woman, three parts: see data_split",
        "never_trained_on": calc_refs(),
    }
    seen = {
        "training": "trained on: backgrounds of its synthetic training and validation patches",
        "calibration": "never trained on; chose the operating point",
        "test": "never seen",
        "calcification_images": "never trained on; chose the operating point",
    }
    meta["data_split"] = {
        **split_record(parts),
        "seen_by_this_model": {**seen, **(seen_extra or {})},
        "numbers_chosen_on": {
            "operating_point.threshold, operating_point.classical_threshold": points["chosen_on"],
            "extra.training.val_dice": "synthetic validation patches on the training normals",
        },
    }
    meta["recipe"] = recipe
    meta["training_config"] = training_config
    write_package_model(src, PACKAGE_MODEL, meta)


def skin_margin_record(point: dict) -> dict:
    """``{"skin_margin_mm": m}`` for an operating point that records the margin it was chosen
    at (calibrations before issue 13 did not: then nothing)."""
    return {} if point.get("skin_margin_mm") is None else {"skin_margin_mm": point["skin_margin_mm"]}


def write_package_model(src: Path, dest: Path, meta: dict) -> None:
    """Replace the package model folder ``dest`` by ``src``'s weights and ``meta``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(src / "model.safetensors", dest / "model.safetensors")
    (dest / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"installed into {dest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--stop-at-step", type=int, default=None)
    t.add_argument("--channels", default=None, help="network width per level (default: the "
                   "model config's 16,32,64,128)")
    t.add_argument("--run", type=Path, default=RUN_DIR, help="run folder (default runs/default_segmentor; "
                   "calibrate and install use the default)")
    sub.add_parser("calibrate")
    sub.add_parser("install")
    args = ap.parse_args()
    {"train": cmd_train, "calibrate": cmd_calibrate, "install": cmd_install}[args.cmd](args)


if __name__ == "__main__":
    main()
