"""The three-way split of the mini-MIAS normals by woman: training, calibration, test.

The 152 normal mini-MIAS images (113 women) are divided by woman (films 2k-1 and 2k are one
woman, :func:`~mcgenref.datasets.mias.woman_id`), never by image, into three disjoint parts:

``training``
    backgrounds for the synthetic training data of the segmentor and the generator;
``calibration``
    mining and calibration: hard-negative mining and operating points (thresholds, tuning of
    defaults), never trained on;
``test``
    held out: only for reported quality (false clusters per normal image, synthetic
    validation on unseen tissue), never used to choose anything.

The rule (:func:`split_normals`): the first split of the project, :func:`split_by_woman` with
25 % of the women held out and seed 0, gives ``training``, what the shipped models (up to
issue 12) were trained on; the held-out women are divided again with
:func:`split_by_woman` (half of them, seed 0) into ``calibration`` and ``test``, so that both
are unseen by those models. :data:`MIAS_NORMAL_SPLIT` is that split written out (113 / 20 /
19 images; 85 / 14 / 14 women); ``tests/datasets/test_mias_split.py`` pins the rule to it.

The 8 calcification images are not part of this split: they are development data (the only
real MCs with cluster labels), used both to choose operating points and to report quality,
and never trained on. Four of their women also have a normal film in ``training``
(:data:`TRAINING_NORMALS_OF_CALCIFICATION_WOMEN`): the shipped models saw the other breast of
those women.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mcgenref.datasets.mias import split_by_woman, woman_id
from mcgenref.errors import InputError

__all__ = [
    "MIAS_NORMAL_SPLIT",
    "NormalSplit",
    "SPLIT_PARTS",
    "SPLIT_RULE",
    "TRAINING_NORMALS_OF_CALCIFICATION_WOMEN",
    "split_normals",
    "split_record",
]

#: The parts, in order, and what each may be used for.
SPLIT_PARTS: dict[str, str] = {
    "training": "backgrounds for synthetic training data",
    "calibration": "mining and calibration: hard-negative mining, operating points, tuning; "
                   "never trained on",
    "test": "held-out test: reported quality only; never trained on, never used to choose "
            "anything",
}

#: The parameters of :func:`split_normals` that give :data:`MIAS_NORMAL_SPLIT`.
SPLIT_RULE: dict[str, Any] = {"held_out_fraction": 0.25, "seed": 0,
                              "test_fraction_of_held_out": 0.5, "held_out_seed": 0}


@dataclass(frozen=True)
class NormalSplit:
    """Normal images split by woman into three disjoint parts (sorted refs in each)."""

    training: tuple[str, ...]
    calibration: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        parts = (self.training, self.calibration, self.test)
        women = [{woman_id(r) for r in p} for p in parts]
        if women[0] & women[1] or women[0] & women[2] or women[1] & women[2]:
            raise InputError("a woman's films are in two parts of the split")

    def part(self, name: str) -> list[str]:
        """The refs of part ``name`` (one of :data:`SPLIT_PARTS`)."""
        if name not in SPLIT_PARTS:
            raise InputError(f"unknown split part {name!r}; expected one of {list(SPLIT_PARTS)}")
        return list(getattr(self, name))

    def part_of(self, ref: str) -> str | None:
        """The part holding ``ref``, or ``None`` for an image outside the split."""
        for name in SPLIT_PARTS:
            if ref in getattr(self, name):
                return name
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record: the refs of each part, their counts and the rule."""
        out: dict[str, Any] = {name: self.part(name) for name in SPLIT_PARTS}
        out["counts"] = {name: {"images": len(getattr(self, name)),
                                 "women": len({woman_id(r) for r in getattr(self, name)})}
                         for name in SPLIT_PARTS}
        return out


def split_normals(refs: Iterable[str], held_out_fraction: float = 0.25, seed: int = 0,
                  test_fraction_of_held_out: float = 0.5, held_out_seed: int = 0) -> NormalSplit:
    """The three-way split of ``refs`` by woman (the rule in the module docstring).

    ``training`` is :func:`split_by_woman` ``(refs, held_out_fraction, seed)``'s training
    side; its held-out side is split again by
    :func:`split_by_woman` ``(held_out, test_fraction_of_held_out, held_out_seed)`` into
    ``calibration`` and ``test``. Deterministic; the order of ``refs`` does not matter.
    """
    training, held_out = split_by_woman(refs, held_out_fraction, seed)
    calibration, test = split_by_woman(held_out, test_fraction_of_held_out, held_out_seed)
    return NormalSplit(tuple(training), tuple(calibration), tuple(test))


#: The split of the 152 mini-MIAS normals (:func:`split_normals` with :data:`SPLIT_RULE`).
MIAS_NORMAL_SPLIT = NormalSplit(
    training=(
        "mdb006", "mdb009", "mdb011", "mdb014", "mdb016", "mdb020", "mdb022", "mdb037",
        "mdb038", "mdb041", "mdb042", "mdb043", "mdb044", "mdb047", "mdb048", "mdb049",
        "mdb050", "mdb051", "mdb052", "mdb055", "mdb056", "mdb064", "mdb065", "mdb066",
        "mdb067", "mdb068", "mdb071", "mdb076", "mdb079", "mdb084", "mdb085", "mdb086",
        "mdb087", "mdb088", "mdb093", "mdb094", "mdb103", "mdb106", "mdb108", "mdb109",
        "mdb112", "mdb113", "mdb114", "mdb119", "mdb122", "mdb123", "mdb128", "mdb133",
        "mdb137", "mdb138", "mdb139", "mdb140", "mdb143", "mdb147", "mdb151", "mdb156",
        "mdb157", "mdb159", "mdb161", "mdb162", "mdb164", "mdb166", "mdb168", "mdb169",
        "mdb172", "mdb176", "mdb180", "mdb182", "mdb183", "mdb185", "mdb187", "mdb192",
        "mdb194", "mdb196", "mdb197", "mdb200", "mdb201", "mdb203", "mdb205", "mdb208",
        "mdb217", "mdb229", "mdb230", "mdb235", "mdb237", "mdb254", "mdb257", "mdb258",
        "mdb261", "mdb262", "mdb266", "mdb268", "mdb277", "mdb278", "mdb281", "mdb282",
        "mdb285", "mdb286", "mdb289", "mdb293", "mdb294", "mdb295", "mdb296", "mdb299",
        "mdb300", "mdb303", "mdb304", "mdb309", "mdb310", "mdb311", "mdb316", "mdb317", "mdb318",
    ),
    calibration=(
        "mdb024", "mdb039", "mdb040", "mdb053", "mdb054", "mdb060", "mdb098", "mdb100",
        "mdb118", "mdb173", "mdb174", "mdb221", "mdb225", "mdb269", "mdb291", "mdb292",
        "mdb301", "mdb302", "mdb305", "mdb306",
    ),
    test=(
        "mdb018", "mdb027", "mdb029", "mdb035", "mdb036", "mdb045", "mdb046", "mdb057",
        "mdb070", "mdb089", "mdb189", "mdb259", "mdb260", "mdb273", "mdb297", "mdb298",
        "mdb307", "mdb308", "mdb313",
    ),
)

#: Training normals whose woman's other film is one of the 8 calcification images.
TRAINING_NORMALS_OF_CALCIFICATION_WOMEN: tuple[str, ...] = ("mdb217", "mdb235", "mdb237", "mdb254")


def split_record(split: NormalSplit = MIAS_NORMAL_SPLIT) -> dict[str, Any]:
    """The split as model.json's ``data_split`` block records it (what the parts are for,
    the rule, and the refs and counts of each part); the model adds what it saw."""
    return {
        "dataset": "mini-MIAS normal images, split by woman (films 2k-1 and 2k are one woman)",
        "rule": "mcgenref.datasets.mias_split.split_normals(normal_refs(), "
                + ", ".join(f"{k}={v!r}" for k, v in SPLIT_RULE.items()) + ")",
        "purposes": dict(SPLIT_PARTS),
        **split.to_dict(),
        "training_normals_of_calcification_women": list(TRAINING_NORMALS_OF_CALCIFICATION_WOMEN),
    }
