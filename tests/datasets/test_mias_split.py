"""The three-way split of the mini-MIAS normals by woman: the rule, the committed split, and
the record in the shipped models' model.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcgenref.datasets import mias
from mcgenref.datasets.mias_split import (
    MIAS_NORMAL_SPLIT,
    SPLIT_PARTS,
    SPLIT_RULE,
    TRAINING_NORMALS_OF_CALCIFICATION_WOMEN,
    NormalSplit,
    split_normals,
    split_record,
)
from mcgenref.errors import InputError

WEIGHTS = Path(mias.__file__).resolve().parents[1] / "weights"
ALL_NORMALS = sorted(MIAS_NORMAL_SPLIT.training + MIAS_NORMAL_SPLIT.calibration
                     + MIAS_NORMAL_SPLIT.test)


def _women(refs) -> set[int]:
    return {mias.woman_id(r) for r in refs}


def test_the_rule_gives_the_committed_split() -> None:
    assert split_normals(ALL_NORMALS, **SPLIT_RULE) == MIAS_NORMAL_SPLIT
    assert split_normals(list(reversed(ALL_NORMALS)), **SPLIT_RULE) == MIAS_NORMAL_SPLIT
    counts = MIAS_NORMAL_SPLIT.to_dict()["counts"]
    assert counts == {"training": {"images": 113, "women": 85},
                      "calibration": {"images": 20, "women": 14},
                      "test": {"images": 19, "women": 14}}


def test_parts_are_disjoint_by_woman_and_cover_the_normals() -> None:
    s = MIAS_NORMAL_SPLIT
    assert len(ALL_NORMALS) == len(set(ALL_NORMALS)) == 152
    assert not _women(s.training) & _women(s.calibration)
    assert not _women(s.training) & _women(s.test)
    assert not _women(s.calibration) & _women(s.test)
    for name in SPLIT_PARTS:
        assert s.part(name) == sorted(s.part(name))
        assert all(s.part_of(r) == name for r in s.part(name))
    assert s.part_of("mdb211") is None  # a calcification image is in no part
    with pytest.raises(InputError, match="unknown split part"):
        s.part("validation")


def test_training_is_the_old_two_way_split_and_the_rest_is_its_held_out_side() -> None:
    train, held_out = mias.split_by_woman(ALL_NORMALS, 0.25, 0)
    assert list(MIAS_NORMAL_SPLIT.training) == train
    assert sorted(MIAS_NORMAL_SPLIT.calibration + MIAS_NORMAL_SPLIT.test) == held_out


def test_a_split_that_separates_a_woman_is_refused() -> None:
    with pytest.raises(InputError, match="two parts"):
        NormalSplit(("mdb001",), ("mdb002",), ())


def test_rule_on_other_refs_never_separates_a_woman() -> None:
    refs = [f"mdb{i:03d}" for i in range(1, 323) if i % 5 != 0]
    for seed in range(4):
        s = split_normals(refs, seed=seed, held_out_seed=seed)
        assert sorted(s.training + s.calibration + s.test) == sorted(refs)
        assert s == split_normals(list(reversed(refs)), seed=seed, held_out_seed=seed)
    assert split_normals(refs, seed=0) != split_normals(refs, seed=1)


def test_calcification_women_with_training_normals() -> None:
    calc = ["mdb211", "mdb212", "mdb218", "mdb222", "mdb226", "mdb236", "mdb238", "mdb253"]
    found = tuple(r for r in MIAS_NORMAL_SPLIT.training if mias.woman_id(r) in _women(calc))
    assert found == TRAINING_NORMALS_OF_CALCIFICATION_WOMEN


@pytest.mark.parametrize("name", ["segmentor", "generator"])
def test_shipped_model_json_records_the_split(name: str) -> None:
    meta = json.loads((WEIGHTS / name / "model.json").read_text())
    block = meta["data_split"]
    record = split_record()
    for key in ("rule", "counts", *SPLIT_PARTS):
        assert block[key] == record[key], key
    # what the model saw, truthfully: trained on 'training' only (the old split's training side)
    assert meta["data"]["training_refs"] == block["training"]
    assert sorted(meta["data"]["held_out_refs"]) == sorted(block["calibration"] + block["test"])
    assert set(block["seen_by_this_model"]) == {*SPLIT_PARTS, "calcification_images"}
    assert block["numbers_chosen_on"]


_HAVE_MIAS = (mias.mias_dir() / "Info.txt").is_file() and (mias.mias_dir() / "images").is_dir()


@pytest.mark.realdata
@pytest.mark.skipif(not _HAVE_MIAS, reason="mini-MIAS not found in $MCGENREF_DATA")
def test_real_normals_give_the_committed_split() -> None:
    assert split_normals(mias.normal_refs(), **SPLIT_RULE) == MIAS_NORMAL_SPLIT
    calc_women = _women(mias.calc_refs())
    assert tuple(r for r in MIAS_NORMAL_SPLIT.training
                 if mias.woman_id(r) in calc_women) == TRAINING_NORMALS_OF_CALCIFICATION_WOMEN
