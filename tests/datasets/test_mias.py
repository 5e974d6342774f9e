"""mini-MIAS Info.txt parser, cluster circles (y flip) and the split by woman."""

from __future__ import annotations

import pytest

from mcgenref.datasets import data_root
from mcgenref.datasets import mias
from mcgenref.errors import InputError

SAMPLE = """\
This file lists the films ...
1st column: MIAS database reference number.
mdb001 G CIRC B 535 425 197
mdb003 D NORM 
mdb004 D NORM
mdb059 F CIRC B
mdb211 G CALC M 680 327 13
mdb216 D CALC M *NOTE 3* 
mdb226 D CALC B 287 610 7
mdb226 D CALC B 329 550 25
=================================================================
"""


def test_parse_info_known_rows():
    recs = mias.parse_info(SAMPLE)
    assert [r.ref for r in recs] == ["mdb001", "mdb003", "mdb004", "mdb059", "mdb211",
                                     "mdb216", "mdb226", "mdb226"]
    r = recs[0]
    assert (r.tissue, r.cls, r.severity, r.x, r.y, r.radius) == ("G", "CIRC", "B", 535, 425, 197)
    assert recs[1].cls == "NORM" and recs[1].severity is None and not recs[1].has_location
    assert recs[3].severity == "B" and recs[3].x is None
    note = recs[5]
    assert (note.cls, note.severity, note.has_location) == ("CALC", "M", False)
    assert recs[6].radius == 7 and recs[7].radius == 25


def test_clusters_y_flip_and_presence():
    recs = mias.parse_info(SAMPLE)
    cl = mias.calc_clusters(records=recs, present={"mdb211", "mdb216", "mdb226"})
    assert len(cl) == 3  # mdb216 has no location
    c = cl[0]
    assert (c.ref, c.centre_row, c.centre_col, c.radius_px) == ("mdb211", 1024 - 327, 680, 13)
    m = c.mask((1024, 1024))
    assert m[697, 680] and m[697 + 13, 680] and not m[697 + 14, 680]
    assert mias.calc_clusters(records=recs, present={"mdb226"})[1].centre_row == 1024 - 550
    assert mias.calc_refs(records=recs, present={"mdb211", "mdb003"}) == ["mdb211"]
    assert mias.normal_refs(records=recs, present={"mdb211", "mdb003"}) == ["mdb003"]


def test_woman_id():
    assert mias.woman_id("mdb001") == mias.woman_id("mdb002") == 1
    assert mias.woman_id("mdb211") == mias.woman_id("mdb212") == 106
    assert mias.woman_id("mdb212") != mias.woman_id("mdb213")
    with pytest.raises(InputError):
        mias.woman_id("foo12")


def test_split_never_separates_a_pair_and_is_deterministic():
    refs = [f"mdb{i:03d}" for i in range(1, 323) if i % 7 != 0]
    for seed in range(5):
        train, test = mias.split_by_woman(refs, 0.25, seed)
        assert sorted(train + test) == sorted(refs)
        assert not {mias.woman_id(r) for r in train} & {mias.woman_id(r) for r in test}
        assert (train, test) == mias.split_by_woman(list(reversed(refs)), 0.25, seed)
    n_women = len({mias.woman_id(r) for r in refs})
    test_women = {mias.woman_id(r) for r in mias.split_by_woman(refs, 0.25, 0)[1]}
    assert len(test_women) == round(0.25 * n_women)
    assert mias.split_by_woman(refs, 0.25, 0) != mias.split_by_woman(refs, 0.25, 1)
    assert mias.split_by_woman(refs, 0.0, 0)[1] == []


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MCGENREF_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("MCGENREF_DATA")
    assert data_root().parts[-2:] == ("shared", "data")


_HAVE_MIAS = (mias.mias_dir() / "Info.txt").is_file() and (mias.mias_dir() / "images").is_dir()


@pytest.mark.realdata
@pytest.mark.skipif(not _HAVE_MIAS, reason="mini-MIAS not found in $MCGENREF_DATA")
def test_real_mias_counts():
    assert len(mias.normal_refs()) == 152
    assert mias.calc_refs() == ["mdb211", "mdb212", "mdb218", "mdb222", "mdb226", "mdb236",
                                "mdb238", "mdb253"]
    assert len(mias.calc_clusters()) == 10
    assert mias.image_path("mdb211").is_file()
