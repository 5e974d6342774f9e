"""MAGIC-5 crops: listing, cases and regions (shifted windows count once), the 8-bit scale; ROI
folders and the split by case (stratified, seeded)."""

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


def test_split_keeps_cases_whole_stratified_and_seeded() -> None:
    cases = [f"{i:04d}" for i in range(20) for _ in range(3)]
    labels = [0 if i < 8 else 1 for i in range(20) for _ in range(3)]
    cases += ["0099"] * 2
    labels += [0, 1]  # a case holding both classes
    dev, test = magic5.split_cases(cases, labels, 0.5, seed=0)
    assert not set(dev) & set(test) and set(dev) | set(test) == set(cases)
    normal_only = {f"{i:04d}" for i in range(8)}
    assert len(normal_only & set(test)) == 4  # half of each stratum
    assert magic5.split_cases(cases, labels, 0.5, seed=0) == (dev, test)
    assert magic5.split_cases(cases, labels, 0.5, seed=1) != (dev, test)


def test_list_crops_refuses_a_folder_without_label_folders(tmp_path) -> None:
    with pytest.raises(InputError, match="normal/ and calcification/"):
        magic5.list_roi_crops(tmp_path)


@pytest.mark.realdata
def test_the_real_split() -> None:
    root = magic5.magic5_dir()
    if not root.is_dir():
        pytest.skip(f"MAGIC-5 crops not found at {root} (set MCGENREF_DATA)")
    crops = magic5.list_roi_crops(root)
    assert len(crops) == 636 and sum(c.label for c in crops) == 306
    assert len({c.case for c in crops}) == 78
    dev, test = magic5.split_crops(crops)
    assert len({c.case for c in dev}) == 39 and len({c.case for c in test}) == 39
    assert not {c.case for c in dev} & {c.case for c in test}
    assert {c.label for c in dev} == {c.label for c in test} == {0, 1}
