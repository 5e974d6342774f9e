"""report.html shows TT-GPR's uncertainty map beside the overlay when ``--refine`` ran."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from mcgenref.report import write_segment_report


def _folder(tmp_path: Path, refine: bool, with_map: bool = True) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    meta = {"input": "a.dcm", "method": "model", "refine": refine, "pixel_spacing_mm": [0.1, 0.1],
            "image_size": [80, 60], "n_calcifications": 0, "n_clusters": 0}
    (out / "a_meta.json").write_text(json.dumps(meta))
    (out / "a_clusters.json").write_text(json.dumps({"clusters": []}))
    Image.fromarray(np.zeros((80, 60, 3), np.uint8)).save(out / "a_overlay.png")
    if with_map:
        spread = np.zeros((80, 60), np.uint16)
        spread[:, :30] = 65535  # left half: the largest spread (0.5), right half: none
        Image.fromarray(spread).save(out / "a_uncertainty.png")
    return out


def _images(html: str) -> dict[str, str]:
    """alt text -> src of every <img>."""
    return {alt: src for src, alt in re.findall(r'<img[^>]*src="([^"]+)"[^>]*alt="([^"]+)"', html)}


def test_uncertainty_map_beside_the_overlay(tmp_path: Path) -> None:
    out = _folder(tmp_path, refine=True)
    html = write_segment_report(out, [{"input": "a.dcm", "prefix": "a", "status": "done"}]).read_text()
    imgs = _images(html)
    assert "overlay of a" in imgs and "TT-GPR uncertainty of a" in imgs
    # both in one side-by-side block, overlay first
    block = html[html.index('<div class="pair">'):]
    block = block[: block.index("</div>")]
    assert block.index("overlay of a") < block.index("TT-GPR uncertainty of a")
    src = imgs["TT-GPR uncertainty of a"]
    assert src.startswith("data:image/png;base64,")
    pic = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    assert pic.shape == (80, 60)
    assert (pic[:, :29] == 255).all() and (pic[:, 31:] == 0).all()


def test_no_uncertainty_without_refine(tmp_path: Path) -> None:
    out = _folder(tmp_path, refine=False)
    html = write_segment_report(out, [{"input": "a.dcm", "prefix": "a", "status": "done"}]).read_text()
    assert "TT-GPR uncertainty" not in html and "overlay of a" in _images(html)


def test_missing_uncertainty_map_is_a_note(tmp_path: Path) -> None:
    out = _folder(tmp_path, refine=True, with_map=False)
    html = write_segment_report(out, [{"input": "a.dcm", "prefix": "a", "status": "done"}]).read_text()
    assert "No uncertainty picture: a_uncertainty.png not found." in html
