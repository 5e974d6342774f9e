"""The prediction-folder format (:mod:`mcgenref.io.predictions`): encodings with known
answers, the one CSV writer, the meta record and a folder written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcgenref.errors import InputError
from mcgenref.io.atomic import write_png_atomic
from mcgenref.io.predictions import (
    ALL_OUTPUT_SUFFIXES,
    BREAST_SUFFIX,
    CLUSTERS_SUFFIX,
    MASK_SUFFIX,
    META_SUFFIX,
    OUTPUT_SUFFIXES,
    PROB_SUFFIX,
    ImageRecord,
    PredictionMeta,
    csv_bytes,
    decode_mask,
    decode_prob,
    encode_mask,
    encode_prob,
    is_complete,
    output_path,
    prediction_stems,
    read_meta,
    read_prediction,
    write_meta,
)


def test_prob_encoding_known_values() -> None:
    p = np.array([[-0.5, 0.0, 0.5], [1.0, 1.5, 1 / 65535]], dtype=np.float32)
    enc = encode_prob(p)
    assert enc.dtype == np.uint16
    # clipped to [0, 1]; 0.5 x 65535 = 32767.5 rounds half to even -> 32768
    assert enc.tolist() == [[0, 0, 32768], [65535, 65535, 1]]
    dec = decode_prob(enc)
    assert dec.dtype == np.float32
    assert dec[1, 0] == 1.0 and dec[0, 0] == 0.0
    assert abs(float(dec[0, 2]) - 32768 / 65535) < 1e-7


def test_prob_round_trip_error_is_below_half_a_step() -> None:
    p = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    err = np.abs(decode_prob(encode_prob(p)) - p).max()
    assert err <= 0.5 / 65535 + 1e-7


def test_eight_bit_maps_of_other_tools_are_read_as_p_x_255() -> None:
    raw = np.array([[0, 51, 255]], dtype=np.uint8)
    assert np.allclose(decode_prob(raw), [[0.0, 0.2, 1.0]])


def test_mask_encoding() -> None:
    m = np.array([[True, False]])
    assert encode_mask(m).tolist() == [[255, 0]]
    assert decode_mask(encode_mask(m)).tolist() == [[True, False]]
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 1, 2] = 7
    assert decode_mask(rgb).tolist() == [[False, True]]


def test_csv_writer_plain_and_formatted() -> None:
    rows = [{"a": 1, "b": 0.123456789, "c": None, "extra": "x"}, {"a": True, "b": float("nan")}]
    plain = csv_bytes(rows, ("a", "b", "c")).decode()
    assert plain == "a,b,c\n1,0.123456789,\nTrue,nan,\n"
    fmt = csv_bytes(rows, ("a", "b", "c"), float_digits=3).decode()
    assert fmt == "a,b,c\n1,0.123,\n1,,\n"


def _meta(**kw) -> PredictionMeta:
    base = dict(
        software="mcgenref x", input="a.dcm", method="model", model={"name": "m", "sha256": "ab"},
        refine=False, generator=None, settings={"threshold": 0.5, "config": {"k": [1, 2]}},
        write_seg=True, pixel_spacing_mm=(0.1, 0.2), pixel_spacing_source="PixelSpacing",
        image_size=(6, 8), threshold=0.5, normalization={"lo": 1.0},
        image=ImageRecord(format="dicom", bits_stored=12, warnings=("w",)),
        breast_area_mm2=4.8, n_calcifications=1, n_clusters=0, detector={"windows": 2},
        timings={"read_s": 0.1})
    base.update(kw)
    return PredictionMeta(**base)


def test_meta_json_keys_and_round_trip(tmp_path: Path) -> None:
    meta = _meta()
    write_meta(tmp_path, "a", meta)
    doc = json.loads((tmp_path / "a_meta.json").read_text())
    # the key order segment has always written
    assert list(doc) == ["software", "input", "method", "model", "model_choice", "refine",
                         "generator", "settings", "write_seg", "pixel_spacing_mm",
                         "pixel_spacing_source", "image_size", "threshold", "normalization",
                         "image", "breast_area_mm2", "n_calcifications", "n_clusters",
                         "detector", "timings"]
    assert doc["pixel_spacing_mm"] == [0.1, 0.2] and doc["image_size"] == [6, 8]
    assert doc["image"]["warnings"] == ["w"] and doc["image"]["format"] == "dicom"
    back = read_meta(tmp_path, "a")
    assert back == meta
    assert back.to_dict() == doc


def test_meta_model_choice_round_trip_and_old_records(tmp_path: Path) -> None:
    choice = {"asked": "auto", "model": "shipped fine", "name": "f", "path": "/m", "sha256": "ab",
              "pixel_spacing_mm": [0.1, 0.1], "reason": "auto: spacing 0.07 mm < 0.1414 mm -> fine"}
    write_meta(tmp_path, "a", _meta(model_choice=choice))
    assert read_meta(tmp_path, "a").model_choice == choice
    # a record written before the choice existed has no key: read as None
    doc = json.loads((tmp_path / "a_meta.json").read_text())
    del doc["model_choice"]
    (tmp_path / "b_meta.json").write_text(json.dumps(doc))
    old = read_meta(tmp_path, "b")
    assert old.model_choice is None and old.settings == _meta().settings
    doc["model_choice"] = "fine"
    (tmp_path / "c_meta.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="'model_choice' must be an object"):
        read_meta(tmp_path, "c")


@pytest.mark.parametrize("bad, message", [
    ({"pixel_spacing_mm": [0, 1]}, "pixel_spacing_mm"),
    ({"pixel_spacing_mm": "x"}, "pixel_spacing_mm"),
    ({"image_size": [3]}, "image_size"),
    ({"threshold": "high"}, "threshold"),
    ([1, 2], "not a JSON object"),
])
def test_malformed_meta_is_one_clear_error(tmp_path: Path, bad, message) -> None:
    (tmp_path / "a_meta.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=message):
        read_meta(tmp_path, "a")


def test_folder_round_trip(tmp_path: Path) -> None:
    prob = np.zeros((6, 8), np.float32)
    prob[2, 3] = 0.9
    prob[4, 6] = 0.3
    mask = prob >= 0.5
    breast = np.ones((6, 8), bool)
    breast[:, 0] = False
    write_png_atomic(output_path(tmp_path, "a", PROB_SUFFIX), encode_prob(prob))
    write_png_atomic(output_path(tmp_path, "a", MASK_SUFFIX), encode_mask(mask))
    write_png_atomic(output_path(tmp_path, "a", BREAST_SUFFIX), encode_mask(breast))
    rule = {"radius_mm": 5.0, "min_count": 3}
    output_path(tmp_path, "a", CLUSTERS_SUFFIX).write_text(json.dumps({"rule": rule}))
    assert not is_complete(tmp_path, "a", _meta())  # no meta, overlay, csv yet
    write_meta(tmp_path, "a", _meta())
    (tmp_path / "notes.txt").write_text("not an output")

    assert prediction_stems(tmp_path) == ["a"]
    got = read_prediction(tmp_path, "a")
    assert got.spacing == (0.1, 0.2) and got.threshold == 0.5
    assert np.array_equal(got.mask, mask) and np.array_equal(got.breast, breast)
    assert got.prob is not None and abs(float(got.prob[2, 3]) - 0.9) < 1e-5
    assert got.rule == rule and got.notes == ()

    for suffix in OUTPUT_SUFFIXES:
        output_path(tmp_path, "a", suffix).touch(exist_ok=True)
    assert not is_complete(tmp_path, "a", _meta())  # a DICOM input needs its SEG
    assert is_complete(tmp_path, "a", _meta(), write_seg=False)
    assert not is_complete(tmp_path, "a", _meta(refine=True), write_seg=False)
    assert all(s in ALL_OUTPUT_SUFFIXES for s in ("_seg.dcm", "_uncertainty.png", META_SUFFIX))


def test_read_back_fallbacks_are_noted(tmp_path: Path) -> None:
    prob = np.zeros((4, 5), np.float32)
    prob[1, 1] = 0.8
    Image.fromarray(encode_prob(prob)).save(tmp_path / "b_prob.png")
    (tmp_path / "b_meta.json").write_text(json.dumps({"pixel_spacing_mm": [0.1, 0.1]}))
    got = read_prediction(tmp_path, "b")
    assert got.threshold == 0.5
    assert got.mask.sum() == 1 and got.breast.all()
    assert got.notes == ("meta has no threshold: 0.5 assumed",
                         "no _mask.png: mask = prob >= threshold",
                         "no _breast.png: the whole image is the region")


def test_read_back_refuses_missing_spacing_and_shape_mismatch(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "c_mask.png")
    (tmp_path / "c_meta.json").write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        read_prediction(tmp_path, "c")
    (tmp_path / "c_meta.json").write_text(json.dumps({"pixel_spacing_mm": [0.1, 0.1],
                                                      "image_size": [5, 5]}))
    with pytest.raises(InputError, match="image_size"):
        read_prediction(tmp_path, "c")
    with pytest.raises(InputError, match="no <stem>_meta.json"):
        prediction_stems(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d
