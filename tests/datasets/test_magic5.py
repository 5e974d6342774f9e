"""MAGIC-5 crops: listing, cases and regions (shifted windows count once), the 8-bit scale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mcgenref.datasets import magic5
from mcgenref.errors import InputError


def _folder(tmp_path):
    root = tmp_path / "data"
    for cls in magic5.MAGIC5_CLASSES:
        (root / "magic5-microcal" / cls).mkdir(parents=True)
    names = ["0006s1_1_1_1.pgm_1.pgm", "0006s1_1_1_1.pgm_3.pgm", "0007s2_0.pgm_1.pgm"]
    for k, name in enumerate(names):
        arr = np.full((60, 60), 10 * k, np.uint8)
        arr[30, 30] = 255
        Image.fromarray(arr).save(root / "magic5-microcal" / "calcification" / name)
    return root


def test_list_regions_cases_and_scale(tmp_path) -> None:
    root = _folder(tmp_path)
    crops = magic5.list_crops("calcification", root)
    assert [p.name for p in crops] == ["0006s1_1_1_1.pgm_1.pgm", "0006s1_1_1_1.pgm_3.pgm",
                                      "0007s2_0.pgm_1.pgm"]
    assert [magic5.case_id(p) for p in crops] == ["0006", "0006", "0007"]
    assert magic5.region_id(crops[1]) == "0006s1_1_1_1"
    assert [p.name for p in magic5.one_crop_per_region(crops)] == ["0006s1_1_1_1.pgm_1.pgm",
                                                                  "0007s2_0.pgm_1.pgm"]
    v = magic5.read_crop(crops[1])
    assert v.dtype == np.float32 and v.shape == (60, 60)
    assert v[30, 30] == 1.0 and v[0, 0] == pytest.approx(10 / 255)
    assert magic5.list_crops("normal", root) == []
    with pytest.raises(InputError, match="unknown"):
        magic5.list_crops("benign", root)
    with pytest.raises(InputError, match="not found"):
        magic5.list_crops("normal", tmp_path / "nowhere")


@pytest.mark.realdata
@pytest.mark.skipif(not (magic5.magic5_dir() / "calcification").is_dir(),
                    reason="MAGIC-5 crops not found in $MCGENREF_DATA")
def test_real_counts() -> None:
    calc, normal = magic5.list_crops("calcification"), magic5.list_crops("normal")
    assert (len(calc), len(normal)) == (306, 330)
    assert len({magic5.case_id(p) for p in calc + normal}) == 78
    assert len(magic5.one_crop_per_region(calc)) == 160
