"""The golden end-to-end case: the generated example mammogram segmented by the shipped model.

``run_example(work)`` makes the example (``mcgenref example``, seed 0, deterministic) and
segments it with the shipped segmentor on the CPU (``mcgenref segment``), both through the CLI
in-process; ``compare(outputs, reference)`` holds the mask, the MC table and the clusters
against the stored reference in ``tests/golden/example/`` and returns what is out of
tolerance (nothing when the outputs agree).

Tolerances (the reference was made on a 2-core x86-64 CPU, one torch thread; another CPU,
BLAS or torch build may move the probabilities by float rounding, never by more):

- mask: Dice >= ``MIN_MASK_DICE`` (0.99) against the reference mask. The example's mask has
  49 pixels, so this allows no pixel to differ; it holds because no probability lies near the
  threshold (0.98): the nearest are 0.9768 outside and 0.9877 inside the mask, 0.003 away,
  against float rounding of ~1e-6;
- MCs: the same number (+-0); paired one to one, every centroid within ``MAX_CENTROID_PX``
  (0.5 px) of its reference, its area within ``AREA_REL_TOL`` (10 %) or one pixel's area,
  whichever is larger (most MCs here are 1-5 px, where one pixel is already 20-100 %), its
  mean and peak probability within ``MAX_PROB_DIFF`` (0.01), and in a cluster exactly when
  its reference is;
- clusters: the same number (+-0); paired one to one, every centre within ``MAX_CENTROID_PX``,
  the same member count, the score within ``MAX_PROB_DIFF``.

Regenerate the reference (only when a change of the outputs is intended, e.g. new shipped
weights; say why in the commit), from the repository root::

    PYTHONPATH=src python -m tests.golden.reference

which rewrites ``tests/golden/example/`` (mask.png, calcifications.csv, clusters.json,
reference.json with the software, model and machine it was made with).
"""

from __future__ import annotations

import csv
import json
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

REFERENCE = Path(__file__).resolve().parent / "example"
STEM = "example"
# the stored files and the segment outputs they are copies of
FILES = {"mask.png": "_mask.png", "calcifications.csv": "_calcifications.csv",
         "clusters.json": "_clusters.json"}
REGENERATE = "PYTHONPATH=src python -m tests.golden.reference"

MIN_MASK_DICE = 0.99
MAX_CENTROID_PX = 0.5
AREA_REL_TOL = 0.10
MAX_PROB_DIFF = 0.01


@dataclass(frozen=True)
class Outputs:
    """What the golden case compares: the binary mask, the MC rows and the clusters."""

    mask: np.ndarray  # bool [row, col]
    mcs: list[dict[str, float]]  # the MC table's rows (numbers)
    clusters: list[dict]  # the "clusters" of <stem>_clusters.json
    pixel_area_mm2: float
    model_sha256: str | None = None

    @classmethod
    def read(cls, folder: Path, names: dict[str, str]) -> Outputs:
        """Read the files ``names`` (role -> file name: mask, mcs, clusters, meta) in ``folder``."""
        mask = np.asarray(Image.open(folder / names["mask"])) > 0
        with open(folder / names["mcs"], newline="") as f:
            mcs = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        clusters_file = json.loads((folder / names["clusters"]).read_text())
        row_mm, col_mm = clusters_file["pixel_spacing_mm"]
        sha = None
        if (folder / names["meta"]).is_file():
            meta = json.loads((folder / names["meta"]).read_text())
            sha = (meta.get("model") or {}).get("sha256")
        return cls(mask, mcs, clusters_file["clusters"], row_mm * col_mm, sha)


def segment_outputs(folder: Path) -> Outputs:
    """The outputs of ``mcgenref segment`` for the example in ``folder``."""
    return Outputs.read(folder, {"mask": f"{STEM}_mask.png", "mcs": f"{STEM}_calcifications.csv",
                                 "clusters": f"{STEM}_clusters.json", "meta": f"{STEM}_meta.json"})


def reference_outputs(folder: Path = REFERENCE) -> Outputs:
    """The stored reference (``model_sha256`` from its reference.json)."""
    return Outputs.read(folder, {"mask": "mask.png", "mcs": "calcifications.csv",
                                 "clusters": "clusters.json", "meta": "reference.json"})


def run_example(work: Path) -> Path:
    """Make the example in ``work`` and segment it (shipped model, CPU); the output folder."""
    from typer.testing import CliRunner

    from mcgenref.cli import app

    runner = CliRunner()
    image = work / f"{STEM}.dcm"
    out = work / "segmentation"
    for args in (["example", "--out", str(image)],
                 ["segment", str(image), "--out", str(out), "--device", "cpu", "--no-seg",
                  "--no-report", "--no-progress", "--workers", "0"]):
        res = runner.invoke(app, args)
        if res.exit_code != 0:
            raise RuntimeError(f"mcgenref {' '.join(args)} failed ({res.exit_code}): {res.output}")
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _pair(got: list[dict], ref: list[dict]) -> list[tuple[int, int, float]]:
    """One-to-one pairing of ``got`` and ``ref`` by (x, y) in px, least total distance."""
    if not got or not ref:
        return []
    g = np.array([[r["x"], r["y"]] for r in got], float)
    e = np.array([[r["x"], r["y"]] for r in ref], float)
    dist = np.linalg.norm(g[:, None, :] - e[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(dist)
    return [(int(i), int(j), float(dist[i, j])) for i, j in zip(rows, cols)]


def compare(got: Outputs, ref: Outputs) -> list[str]:
    """What in ``got`` is out of tolerance against ``ref`` (module docstring); [] if nothing."""
    problems: list[str] = []
    if got.mask.shape != ref.mask.shape:
        return [f"mask shape {got.mask.shape} != reference {ref.mask.shape}"]
    d = dice(got.mask, ref.mask)
    if d < MIN_MASK_DICE:
        problems.append(f"mask Dice {d:.4f} < {MIN_MASK_DICE}")

    if len(got.mcs) != len(ref.mcs):
        problems.append(f"{len(got.mcs)} MCs, reference {len(ref.mcs)}")
    for i, j, dist in _pair(got.mcs, ref.mcs):
        mc, want = got.mcs[i], ref.mcs[j]
        where = f"MC {int(want['id'])} at (x={want['x']}, y={want['y']})"
        if dist > MAX_CENTROID_PX:
            problems.append(f"{where}: centroid {dist:.2f} px away (> {MAX_CENTROID_PX})")
        area_tol = max(AREA_REL_TOL * want["area_mm2"], ref.pixel_area_mm2) + 1e-9
        if abs(mc["area_mm2"] - want["area_mm2"]) > area_tol:
            problems.append(f"{where}: area {mc['area_mm2']} mm2, reference {want['area_mm2']}")
        for key in ("mean_prob", "peak_prob"):
            if abs(mc[key] - want[key]) > MAX_PROB_DIFF:
                problems.append(f"{where}: {key} {mc[key]}, reference {want[key]}")
        if (mc["cluster_id"] < 0) != (want["cluster_id"] < 0):
            problems.append(f"{where}: in a cluster {mc['cluster_id'] >= 0}, reference {want['cluster_id'] >= 0}")

    if len(got.clusters) != len(ref.clusters):
        problems.append(f"{len(got.clusters)} clusters, reference {len(ref.clusters)}")
    for i, j, dist in _pair(got.clusters, ref.clusters):
        cl, want = got.clusters[i], ref.clusters[j]
        where = f"cluster {want['id']} at (x={want['x']}, y={want['y']})"
        if dist > MAX_CENTROID_PX:
            problems.append(f"{where}: centre {dist:.2f} px away (> {MAX_CENTROID_PX})")
        if cl["count"] != want["count"]:
            problems.append(f"{where}: {cl['count']} members, reference {want['count']}")
        if abs(cl["score"] - want["score"]) > MAX_PROB_DIFF:
            problems.append(f"{where}: score {cl['score']}, reference {want['score']}")
    return problems


def write_reference(out: Path, folder: Path = REFERENCE) -> None:
    """Copy the golden files of the segment output folder ``out`` into ``folder``."""
    import torch

    import mcgenref

    meta = json.loads((out / f"{STEM}_meta.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for name, suffix in FILES.items():
        shutil.copyfile(out / f"{STEM}{suffix}", folder / name)
    record = {
        "made_by": REGENERATE,
        "case": "mcgenref example (seed 0), then mcgenref segment --device cpu (shipped model)",
        "software": f"mcgenref {mcgenref.__version__}",
        # read back like a <stem>_meta.json: the model's sha256 under "model"
        "model": {"name": meta["model"]["name"], "sha256": meta["model"]["sha256"]},
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}, CPU, torch threads 1",
    }
    (folder / "reference.json").write_text(json.dumps(record, indent=1) + "\n")


def main() -> int:
    import tempfile

    import torch

    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    with tempfile.TemporaryDirectory() as tmp:
        out = run_example(Path(tmp))
        write_reference(out)
    ref = reference_outputs()
    print(f"wrote {REFERENCE}: {len(ref.mcs)} MCs, {len(ref.clusters)} clusters, "
          f"{int(ref.mask.sum())} mask pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
