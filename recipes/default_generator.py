"""The recipe of the shipped default generator: training, sample-quality check, install.

    python recipes/default_generator.py train    [--steps N] [--device auto] [--resume]
    python recipes/default_generator.py quality  # seed recall / spurious MCs / background error
    python recipes/default_generator.py install  # copy the model into the package

    python recipes/default_generator.py train --seed-source mined [--steps 1000]
    python recipes/default_generator.py seed-share [--patches 64]  # MC share of mined seeds

The mined variant (``--seed-source mined``, issue 14 item 4; run folder
``runs/mined_generator``): each training patch's seeds are mined from the frozen shipped
segmentor's logits on the observation by TT-GPR's rule
(:class:`mcgenref.training.generator.MinedSeedsConfig`); 128 px patches (the segmentor's
training patch), 8 per step, 6 crops of 32 px centred on their seeds per patch. Sized to
train in the background on the 2-core CPU in at most 2 h: see :func:`train_config` and the
generator's model card for the measured seconds per step. ``seed-share`` reports the share
of MC seeds among the mined seeds on synthetic patches over the calibration normals
(development data) and the seeds per patch on those normals without MCs (where the share is
0 by construction).

Data: the same split as the shipped segmentor (recipes/default_segmentor.py,
:data:`mcgenref.datasets.mias_split.MIAS_NORMAL_SPLIT`): only the ``training`` part's mini-MIAS
normals serve as backgrounds; the ``calibration`` and ``test`` normals and the calcification
images are never trained on; ``quality`` reports on the ``test`` normals. 64-pixel patches (12.8 mm at 0.2 mm, the TT-GPR window),
clusters of 5-30 MCs as for the segmentor, 10 % procedural backgrounds; Poisson(15) decoy
seeds per patch, half of them on the background's MC-like spots (the library's defaults; the
first shipped generator had 3 uniform decoys: ``--decoy-rate 3 --hard-decoy-fraction 0``).

Sized for a CPU: the (16, 32, 64) network trains at ~3 steps/s of 32 patches on 2 cores, so
the default 2500 steps take ~15-25 minutes (docs/generator_model_card.md has the measured run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

from default_segmentor import image_paths, split, write_package_model

from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs
from mcgenref.datasets.mias_split import split_record

RUN_DIR = REPO / "runs" / "default_generator"
MINED_RUN_DIR = REPO / "runs" / "mined_generator"
MINED_STEPS = 1000  # 0.4 s a step on the quiet 2-core CPU, 1.5-2.5 s loaded: 15 min (docs/generator_model_card.md)
SEED_SHARE_SEED = 51_515_003  # fresh: no network, tuning or benchmark used it
PACKAGE_MODEL = REPO / "src" / "mcgenref" / "weights" / "generator"
PACKAGE_SEGMENTOR = REPO / "src" / "mcgenref" / "weights" / "segmentor"


def train_config(steps: int, hard_decoy_fraction: float = 0.5, decoy_rate: float = 15.0,
                 seed_source: str = "synthetic", init_from: str | None = None):
    """The recipe's training config (see docs/generator_model_card.md).

    ``seed_source="mined"``: the same network and synthesis, on 128 px patches (the
    segmentor's training patch, so its logits are those of its own context size), batch 8 with
    6 crops of 32 px each (48 crops a step, 49 k pixels against the 131 k of 32 64 px patches:
    the segmentor forward on the patches costs about as much as the generator step), val 32
    patches. ``init_from``: a generator folder of the same network to start from (the recipe
    passes the synthetic-seed generator that ``train`` writes to runs/default_generator/model:
    1000 CPU steps adapt it to the mined seeds rather than train one from scratch; lr 5e-4,
    warm-up 100), ``None``: fresh weights (a longer, GPU run).
    """
    from mcgenref.models.generator import GeneratorConfig
    from mcgenref.synthesis.config import ClusterConfig, SynthesisConfig
    from mcgenref.training.generator import MinedSeedsConfig, TrainGeneratorConfig

    if seed_source == "mined":
        return dataclasses.replace(
            train_config(steps, hard_decoy_fraction, decoy_rate),
            synthesis=SynthesisConfig(patch_size_px=128, cluster=ClusterConfig(n_mcs_range=(5, 30))),
            seed_source="mined",
            mined=MinedSeedsConfig(segmentor=None, crop_px=32, crops_per_sample=6),
            batch_size=8,
            val_size=32,
            init_from=init_from,
            lr=5e-4 if init_from is not None else 1e-3,
            warmup_steps=100 if init_from is not None else 200,
        )
    return TrainGeneratorConfig(
        model=GeneratorConfig(channels=(16, 32, 64), time_embedding_dim=32, condition_dropout=0.1),
        synthesis=SynthesisConfig(patch_size_px=64, cluster=ClusterConfig(n_mcs_range=(5, 30))),
        procedural_spacing_mm=(MIAS_PIXEL_SPACING_MM, MIAS_PIXEL_SPACING_MM),
        procedural_fraction=0.1,
        hard_decoy_fraction=hard_decoy_fraction,
        decoy_rate=decoy_rate,
        steps=steps,
        batch_size=32,
        lr=1e-3,
        warmup_steps=200,
        ema_decay=0.999,
        val_size=128,
        val_every=500,
        checkpoint_every=250,
        num_workers=1,
        seed=0,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from mcgenref.training import run_training

    parts = split()
    train = parts.part("training")
    forbidden = set(calc_refs()) | set(parts.calibration) | set(parts.test)
    assert not forbidden & set(train), "training set overlaps calcification or held-out images"
    run_dir = args.run_dir or (MINED_RUN_DIR if args.seed_source == "mined" else RUN_DIR)
    steps = args.steps or (MINED_STEPS if args.seed_source == "mined" else 2500)
    init = None if args.init_from in (None, "none") else args.init_from
    if args.seed_source == "mined" and args.init_from is None:
        # the mined recipe adapts the synthetic-seed generator that `train` makes (the shipped
        # generator is itself the mined one: starting from it would not reproduce it)
        init = str(RUN_DIR / "model")
        if not (RUN_DIR / "model" / "model.json").is_file():
            raise SystemExit(f"error: {RUN_DIR / 'model'} holds no synthetic-seed generator: run `train` "
                             "(synthetic seeds) first, or pass --init-from DIR")
    config = train_config(steps, args.hard_decoy_fraction, args.decoy_rate, args.seed_source, init)
    summary = run_training(
        "generator", run_dir,
        None if args.resume else image_paths(train),
        None if args.resume else config,
        device=args.device, steps=steps if not args.resume else None,
        resume=args.resume, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM,
        stop_at_step=args.stop_at_step,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "val_history"}, indent=2))


def cmd_quality(args: argparse.Namespace) -> None:
    from mcgenref.evaluation.generator_quality import generator_quality

    test = split().part("test")  # reported quality: the held-out test women only
    model = Path(args.model) if args.model else RUN_DIR / "model"
    config = train_config(1)
    result = generator_quality(model, PACKAGE_SEGMENTOR, image_paths(test),
                               synthesis=config.synthesis, condition=config.condition_config(),
                               patches=config.patches,
                               procedural_spacing_mm=config.procedural_spacing_mm,
                               pixel_spacing_mm=MIAS_PIXEL_SPACING_MM, n_samples=args.samples,
                               t_start=args.t_start, steps=args.sampler_steps)
    print(json.dumps(result, indent=2))


def cmd_seed_share(args: argparse.Namespace) -> None:
    """The share of MC seeds among the mined seeds, as the mined training sees them, on
    synthetic patches over the calibration normals (development data; never trained on),
    and the seeds per patch on the same normals without MCs (share 0 there)."""
    import numpy as np
    import torch

    from mcgenref.models.checkpoint import load_segmentor
    from mcgenref.synthesis.dataset import SyntheticMCDataset
    from mcgenref.synthesis.patches import NegativePatchSampler
    from mcgenref.training.generator import GeneratorTask, label_mined_seeds, seeds_from_logits

    torch.set_num_threads(1)  # a shared 2-core machine
    config = train_config(1, seed_source="mined")
    task = GeneratorTask(config)
    seg, _, _ = load_segmentor(config.mined.segmentor_path(), "cpu")
    sampler = NegativePatchSampler(image_paths(split().part("calibration")), config.synthesis.patch_size_px,
                                   config.patches, pixel_spacing_mm=MIAS_PIXEL_SPACING_MM)
    data = SyntheticMCDataset(args.patches, SEED_SHARE_SEED, config.synthesis, sampler)
    counts = {"seeds": 0, "on_mc": 0, "dropped_on_invisible": 0, "visible_mcs": 0, "visible_seeded": 0,
              "normal_seeds": 0}
    for i in range(args.patches):
        sample = data.sample(i)
        item = task.item(sample, i)
        spacing = tuple(float(v) for v in item["spacing_mm"])
        with torch.no_grad():
            z = seg(torch.stack([item["observation"], torch.from_numpy(sample.background)[None]]))[:, 0].numpy()
        owner = item["mc_owner"][0].numpy()
        mined = label_mined_seeds(seeds_from_logits(z[0], spacing, config.mined.seeds), owner)
        counts["seeds"] += len(mined.seeds)
        counts["on_mc"] += int(np.sum(mined.on_mc))
        counts["dropped_on_invisible"] += mined.dropped
        counts["visible_mcs"] += int(sample.record["n_visible"])
        counts["visible_seeded"] += len(mined.seeded_mcs)
        counts["normal_seeds"] += len(seeds_from_logits(z[1], spacing, config.mined.seeds))
    n = args.patches
    print(json.dumps({
        "data": f"{n} synthetic patches of {config.synthesis.patch_size_px} px at {MIAS_PIXEL_SPACING_MM} mm "
                f"on the calibration normals (seed {SEED_SHARE_SEED}), observation gain "
                f"{list(config.observation_gain)}; 'normal': the same patches without MCs",
        **counts,
        "mc_share_of_seeds": counts["on_mc"] / max(counts["seeds"], 1),
        "seeds_per_patch": counts["seeds"] / n,
        "visible_mcs_seeded": counts["visible_seeded"] / max(counts["visible_mcs"], 1),
        "normal_seeds_per_patch": counts["normal_seeds"] / n,
        "normal_mc_share": 0.0,
    }, indent=2))


def _repo_relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it, else unchanged."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def cmd_install(args: argparse.Namespace) -> None:
    """Copy the trained generator into the package with its data split and recipe."""
    args.run_dir = args.run_dir or RUN_DIR
    src = args.run_dir / "model"
    if not (src / "model.json").is_file():
        raise SystemExit(f"no trained model in {src}; run `train` first")
    meta = json.loads((src / "model.json").read_text())
    parts = split()
    meta["name"] = "mcgenref-default-generator"
    meta["data"] = {
        "backgrounds": "mini-MIAS normal images (research use only; see docs/generator_model_card.md)",
        "training_refs": parts.part("training"),
        "held_out_refs": sorted(parts.calibration + parts.test),
        "split": "the segmentor's (recipes/default_segmentor.py): see data_split",
        "never_trained_on": calc_refs(),
    }
    config = json.loads((args.run_dir / "config.json").read_text())
    mined = config.get("seed_source") == "mined"
    chosen = {  # which data chose each number (docs/generator_model_card.md)
        "sample quality (docs/generator_model_card.md, benchmarks/results/generator_quality.json; stage 1)":
            "96 synthetic patches on the old held-out normals (calibration + test)",
        "training_config decoy_rate 15, hard_decoy_fraction 0.5 (stage 1)":
            "benchmarks/tt_gpr.py's seed evidence on 300 synthetic patches over the old held-out normals "
            "(calibration + test), comparing trained generators",
        "RefineConfig (TT-GPR) energy defaults": "set by hand; proximity 0.1 with the oracle projector on 32 "
                                                 "calibration-normal patches (docs/tt_gpr.md)",
        "training_config.synthesis (the realism-calibrated synthesis defaults)":
            "the 8 calcification images + all 152 normals (docs/realism.md at the time; issue 12 reran the "
            "calibration on the training women only)",
    }
    if mined:
        chosen["shipping stage 2 (mined seeds) rather than stage 1"] = (
            "benchmarks/tt_gpr.py --split dev evidence sets: 48 + 48 synthetic patches on the calibration "
            "normals (seeds 51515011, 51515012)")
        chosen["stage 2 budget (1000 steps, 6 crops of 32 px, lr 5e-4)"] = "set by hand to fit the CPU"
    meta["data_split"] = {
        **split_record(parts),
        "seen_by_this_model": {
            "training": "trained on: backgrounds of its synthetic training and validation patches "
                        "(with 10 % procedural backgrounds)",
            "calibration": "never trained on; its sample quality (stage 1) was measured on the old held-out "
                           "normals (calibration + test)" + ("; the choice of stage 2 was made on "
                                                             "synthetic patches over it" if mined else ""),
            "test": "never trained on; its sample quality (stage 1) was measured on the old held-out normals "
                    "(calibration + test)" + ("; TT-GPR's test run (once) used it" if mined else ""),
            "calcification_images": "never trained on",
        },
        "numbers_chosen_on": chosen,
    }
    meta["recipe"] = (f"python recipes/default_generator.py train --seed-source mined --run-dir {args.run_dir} "
                      f"&& ... install --run-dir {args.run_dir}" if mined
                      else "python recipes/default_generator.py train && ... install")
    meta["training_config"] = config
    if mined:  # machine paths -> repository-relative ones (the sha256 beside them identifies the files)
        condition = meta["extra"]["condition"]["mined"]
        condition["segmentor"] = _repo_relative(condition["segmentor"])
        start = meta["extra"].get("training", {}).get("init_from")
        if isinstance(start, dict) and start.get("path"):
            start["path"] = _repo_relative(start["path"])
        if config.get("init_from"):
            config["init_from"] = _repo_relative(config["init_from"])
    write_package_model(src, PACKAGE_MODEL, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--steps", type=int, default=None,
                       help="default 2500 (synthetic seeds) or 1000 (mined seeds)")
    train.add_argument("--init-from", default=None,
                       help="a generator folder to start from; 'none': fresh weights (default: fresh "
                            "for synthetic seeds; for mined seeds the synthetic-seed generator in "
                            "runs/default_generator/model, which `train` makes)")
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--stop-at-step", type=int, default=None)
    train.add_argument("--hard-decoy-fraction", type=float, default=0.5,
                       help="share of decoy seeds put on the background's MC-like spots")
    train.add_argument("--decoy-rate", type=float, default=15.0, help="mean decoy seeds per patch")
    train.add_argument("--seed-source", choices=("synthetic", "mined"), default="synthetic",
                       help="synthetic: the sample's MCs + decoys; mined: seeds mined from the frozen "
                            "segmentor's logits by TT-GPR's rule (run folder runs/mined_generator)")
    train.set_defaults(func=cmd_train)
    share = sub.add_parser("seed-share")
    share.add_argument("--patches", type=int, default=64)
    share.set_defaults(func=cmd_seed_share)
    quality = sub.add_parser("quality")
    quality.add_argument("--model", default=None)
    quality.add_argument("--samples", type=int, default=256)
    quality.add_argument("--t-start", type=float, default=0.3)
    quality.add_argument("--sampler-steps", type=int, default=4)
    quality.set_defaults(func=cmd_quality)
    sub.add_parser("install").set_defaults(func=cmd_install)
    for p in (train, sub.choices["install"]):
        p.add_argument("--run-dir", type=Path, default=None,
                       help="default runs/default_generator (runs/mined_generator with --seed-source mined)")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
