from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.io import read_image
from mcgenref.synthesis.example import EXAMPLE_SHAPE, example_mammogram


def test_example_is_deterministic_and_has_visible_clusters() -> None:
    a, b = example_mammogram(3), example_mammogram(3)
    assert a.pixels.tobytes() == b.pixels.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.pixels.shape == EXAMPLE_SHAPE and a.pixels.dtype == np.uint16
    assert a.pixels.max() <= 4095
    visible = [m for m in a.mcs if m["visible"]]
    assert len(visible) >= 5 and len({m["cluster_id"] for m in visible}) >= 2
    for m in visible:  # every visible MC has mask pixels within 1 px of its centre
        r, c = int(round(m["y_px"])), int(round(m["x_px"]))
        assert a.mask[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any()
    assert example_mammogram(4).pixels.tobytes() != a.pixels.tobytes()


def test_example_command_writes_readable_dicom(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ex.dcm"
    res = runner.invoke(app, ["example", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = pydicom.dcmread(out)
    assert ds.Modality == "MG" and [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.2]
    image, meta = read_image(out)
    assert meta.spacing_source == "ImagerPixelSpacing" and image.shape == EXAMPLE_SHAPE
    mask = np.asarray(Image.open(tmp_path / "ex_truth" / "ex.png"))
    assert set(np.unique(mask)) <= {0, 255} and mask.any()
    again = runner.invoke(app, ["example", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(app, ["example", "--out", str(tmp_path / "ex.jpg")])
    assert bad.exit_code == 2 and bad.output.startswith("error:")
