"""Ground-truth readers: mask folders, INbreast XML (plist), mini-MIAS Info.txt, detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import ConfigError, InputError
from mcgenref.evaluation.truth import (
    ClusterCircle,
    GroundTruth,
    detect_truth_format,
    mask_centroids,
    parse_point,
    read_inbreast_xml,
    read_mask_folder,
    read_mias_info,
    read_truth,
)

INBREAST_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>Images</key>
\t<array>
\t\t<dict>
\t\t\t<key>ImageIndex</key>
\t\t\t<integer>0</integer>
\t\t\t<key>NumberOfROIs</key>
\t\t\t<integer>3</integer>
\t\t\t<key>ROIs</key>
\t\t\t<array>
\t\t\t\t<dict>
\t\t\t\t\t<key>Area</key>
\t\t\t\t\t<real>0.0</real>
\t\t\t\t\t<key>Center</key>
\t\t\t\t\t<string>(12.000000, 7.000000, 0.000000)</string>
\t\t\t\t\t<key>IndexInImage</key>
\t\t\t\t\t<integer>0</integer>
\t\t\t\t\t<key>Name</key>
\t\t\t\t\t<string>Calcification</string>
\t\t\t\t\t<key>NumberOfPoints</key>
\t\t\t\t\t<integer>1</integer>
\t\t\t\t\t<key>Point_mm</key>
\t\t\t\t\t<array>
\t\t\t\t\t\t<string>(0.840000, 0.490000, 0.000000)</string>
\t\t\t\t\t</array>
\t\t\t\t\t<key>Point_px</key>
\t\t\t\t\t<array>
\t\t\t\t\t\t<string>(12.000000, 7.000000)</string>
\t\t\t\t\t</array>
\t\t\t\t\t<key>Type</key>
\t\t\t\t\t<integer>19</integer>
\t\t\t\t</dict>
\t\t\t\t<dict>
\t\t\t\t\t<key>Area</key>
\t\t\t\t\t<real>0.16</real>
\t\t\t\t\t<key>IndexInImage</key>
\t\t\t\t\t<integer>1</integer>
\t\t\t\t\t<key>Name</key>
\t\t\t\t\t<string>Calcification</string>
\t\t\t\t\t<key>NumberOfPoints</key>
\t\t\t\t\t<integer>4</integer>
\t\t\t\t\t<key>Point_px</key>
\t\t\t\t\t<array>
\t\t\t\t\t\t<string>(20.000000, 30.000000)</string>
\t\t\t\t\t\t<string>(24.000000, 30.000000)</string>
\t\t\t\t\t\t<string>(24.000000, 34.000000)</string>
\t\t\t\t\t\t<string>(20.000000, 34.000000)</string>
\t\t\t\t\t</array>
\t\t\t\t\t<key>Type</key>
\t\t\t\t\t<integer>15</integer>
\t\t\t\t</dict>
\t\t\t\t<dict>
\t\t\t\t\t<key>Name</key>
\t\t\t\t\t<string>Mass</string>
\t\t\t\t\t<key>NumberOfPoints</key>
\t\t\t\t\t<integer>3</integer>
\t\t\t\t\t<key>Point_px</key>
\t\t\t\t\t<array>
\t\t\t\t\t\t<string>(2.5, 40.0)</string>
\t\t\t\t\t\t<string>(8.5, 40.0)</string>
\t\t\t\t\t\t<string>(5.0, 45.0)</string>
\t\t\t\t\t</array>
\t\t\t\t</dict>
\t\t\t</array>
\t\t</dict>
\t</array>
</dict>
</plist>
"""


def test_parse_point():
    assert parse_point("(12.5, 7.25)") == (12.5, 7.25)
    assert parse_point("(1, 2, 0)") == (1.0, 2.0)
    with pytest.raises(ValueError):
        parse_point("12 7")


def test_read_inbreast_xml(tmp_path: Path):
    xml = tmp_path / "20586908.xml"
    xml.write_text(INBREAST_XML)
    truths = read_inbreast_xml(xml)
    assert list(truths) == ["20586908"]
    gt = truths["20586908"]
    assert not gt.is_normal
    # one-point ROI at x=12, y=7 -> (row 7, col 12); polygon centroid (x=22, y=32) -> (32, 22)
    assert gt.points.tolist() == [[7.0, 12.0], [32.0, 22.0]]
    assert len(gt.polygons) == 1  # the Mass ROI is ignored
    assert gt.clusters == []
    assert gt.mask is None
    drawn = gt.with_shape((50, 60))
    assert drawn.mask.shape == (50, 60)
    assert drawn.mask[7, 12]  # the one-point MC is its pixel
    assert drawn.mask[30:35, 20:25].all()  # the filled polygon (vertices included)
    assert drawn.mask.sum() == 1 + 25
    assert not drawn.mask[40:46, 2:9].any()  # no mass
    assert drawn.object_points().tolist() == gt.points.tolist()
    # folder form and shape given up front
    assert read_inbreast_xml(tmp_path, image_shape=(50, 60))["20586908"].mask.sum() == 26
    assert detect_truth_format(tmp_path) == "inbreast"
    assert detect_truth_format(xml) == "inbreast"


def test_inbreast_cluster_roi_and_normal(tmp_path: Path):
    xml = INBREAST_XML.replace("<string>Mass</string>", "<string>Cluster</string>")
    (tmp_path / "a.xml").write_text(xml)
    gt = read_inbreast_xml(tmp_path / "a.xml")["a"]
    assert len(gt.clusters) == 1
    c = gt.clusters[0]
    assert (c.row, c.col) == pytest.approx((125 / 3, 16 / 3))
    empty = INBREAST_XML.split("<key>ROIs</key>")[0] + "<key>ROIs</key><array/></dict></array></dict></plist>"
    (tmp_path / "b.xml").write_text(empty)
    assert read_inbreast_xml(tmp_path / "b.xml")["b"].is_normal
    (tmp_path / "bad.xml").write_text("<plist><dict><key>x</key>")
    with pytest.raises(InputError):
        read_inbreast_xml(tmp_path / "bad.xml")


def test_read_mask_folder(tmp_path: Path):
    m = np.zeros((10, 12), np.uint8)
    m[2:4, 3:5] = 255
    Image.fromarray(m).save(tmp_path / "img1_mask.png")
    Image.fromarray(np.full((10, 12), 9, np.uint8)).save(tmp_path / "img1.png")  # the image
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "img2.png")
    Image.fromarray(np.zeros((10, 12), np.uint16)).save(tmp_path / "img3_prob.png")
    truths = read_mask_folder(tmp_path)
    assert sorted(truths) == ["img1", "img2"]
    assert truths["img1"].mask.sum() == 4 and not truths["img1"].is_normal
    assert truths["img2"].is_normal
    assert truths["img1"].object_points().tolist() == [[2.5, 3.5]]
    assert detect_truth_format(tmp_path) == "masks"
    assert sorted(read_truth(tmp_path)) == ["img1", "img2"]
    with pytest.raises(ConfigError):
        read_truth(tmp_path, "dicom")
    with pytest.raises(InputError):
        read_mask_folder(tmp_path / "nope")


def test_mask_centroids_and_shape_check():
    m = np.zeros((5, 5), bool)
    m[0, 0] = m[4, 4] = True
    assert sorted(mask_centroids(m).tolist()) == [[0.0, 0.0], [4.0, 4.0]]
    with pytest.raises(InputError):
        GroundTruth("x", mask=m).with_shape((6, 6))


MIAS_INFO = """\
mdb211 G CALC M 680 327 13
mdb216 D CALC M *NOTE 3*
mdb226 D CALC B 287 610 7
mdb226 D CALC B 329 550 25
mdb003 D NORM
mdb001 G CIRC B 535 425 197
"""


def test_read_mias_info_y_flip(tmp_path: Path):
    info = tmp_path / "Info.txt"
    info.write_text(MIAS_INFO)
    truths = read_mias_info(info)
    assert sorted(truths) == ["mdb003", "mdb211", "mdb216", "mdb226"]  # CIRC-only left out
    assert truths["mdb211"].clusters == [ClusterCircle(1024 - 327, 680, 13)]
    assert truths["mdb211"].points is None and not truths["mdb211"].is_normal
    assert len(truths["mdb226"].clusters) == 2
    assert truths["mdb216"].clusters == [] and not truths["mdb216"].is_normal
    assert truths["mdb003"].is_normal and truths["mdb003"].clusters == []
    assert detect_truth_format(tmp_path) == "mias"
    assert detect_truth_format(info) == "mias"
    # the image height is taken from images/<ref>.png when present
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((800, 1024), np.uint8)).save(tmp_path / "images" / "mdb211.png")
    gt = read_mias_info(tmp_path)["mdb211"]
    assert gt.clusters[0].row == 800 - 327 and gt.shape == (800, 1024)
    y, x, r = gt.clusters[0].in_mm((0.2, 0.2))
    assert (y, x, r) == pytest.approx(((800 - 327) * 0.2, 680 * 0.2, 13 * 0.2))


def test_detect_truth_format_errors(tmp_path: Path):
    with pytest.raises(InputError):
        detect_truth_format(tmp_path / "missing")
    with pytest.raises(InputError):
        detect_truth_format(tmp_path)  # empty folder
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(InputError):
        detect_truth_format(tmp_path / "x.csv")


@pytest.mark.realdata
def test_real_mias_info(real_data: Path):
    from mcgenref.datasets.mias import present_refs

    truths = read_mias_info(real_data / "mini-mias" / "Info.txt")
    present = present_refs(real_data)
    calc = {s: t for s, t in truths.items() if s in present and t.clusters}
    assert len(calc) == 8
    assert sum(len(t.clusters) for t in calc.values()) == 10
    assert sum(1 for s, t in truths.items() if s in present and t.is_normal) == 152
    gt = truths["mdb211"]
    assert gt.shape == (1024, 1024)
    assert (gt.clusters[0].row, gt.clusters[0].col) == (1024 - 327, 680)
