"""Model folders: exact round trip, and every defect refused with one clear line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mcgenref.errors import InputError, OutputError
from mcgenref.models.checkpoint import (
    clean_state_dict,
    flatten_optimizer_state,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
    unflatten_optimizer_state,
)
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor

CONFIG = SegmentorConfig(channels=(8, 16, 32))
EXTRA = {"pixel_spacing_mm": [0.1, 0.1], "patch_size_px": 32}


@pytest.fixture()
def model_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_segmentor(CONFIG)
    # make the BatchNorm statistics non-trivial so buffers are really checked
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32))
    model.eval()
    return save_model(tmp_path / "model", model, CONFIG, EXTRA), model


def test_round_trip_gives_identical_outputs(model_dir) -> None:
    folder, model = model_dir
    loaded, meta = load_model(folder, "cpu")
    x = torch.randn(2, 1, 48, 80)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta["kind"] == "mcgenref-segmentor"
    assert meta["extra"] == EXTRA
    assert meta["model"]["channels"] == [8, 16, 32]
    assert meta["tensor_contract"]["size_multiple"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    # model.json and the weights file are accepted as well as the folder
    load_model(folder / "model.json")
    load_model(folder / "model.safetensors")


def test_wrapper_prefixes_are_stripped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_segmentor(CONFIG)
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DistributedDataParallel looks like to state_dict()
    state = clean_state_dict(wrapped.state_dict())
    assert all(not k.startswith("module.") for k in state)
    assert set(state) == set(model.state_dict())
    compiled_like = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    assert set(clean_state_dict(compiled_like)) == set(model.state_dict())


def test_existing_folder_is_not_overwritten_silently(model_dir) -> None:
    folder, model = model_dir
    with pytest.raises(OutputError, match="not empty"):
        save_model(folder, model, CONFIG)
    save_model(folder, model, CONFIG, overwrite=True)


def test_sha_mismatch_is_refused(model_dir) -> None:
    folder, _ = model_dir
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # same size, one byte flipped inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 does not match"):
        load_model(folder)


def test_truncated_weights_are_refused(model_dir) -> None:
    folder, _ = model_dir
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"truncated \(1000 bytes"):
        load_model(folder)


def test_truncated_weights_with_a_matching_record_are_still_refused(model_dir) -> None:
    # someone "fixed" model.json: the safetensors parser must still catch the damage
    import hashlib

    folder, _ = model_dir
    weights = folder / "model.safetensors"
    data = weights.read_bytes()[:1000]
    weights.write_bytes(data)
    meta = json.loads((folder / "model.json").read_text())
    meta["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="corrupt safetensors"):
        load_model(folder)


def test_missing_weights_are_refused(model_dir) -> None:
    folder, _ = model_dir
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="weights file missing"):
        load_model(folder)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "last.ckpt"])
def test_pickles_are_refused(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    path = tmp_path / name
    torch.save(build_segmentor(CONFIG).state_dict(), path)
    with pytest.raises(InputError, match="pickle files are not loaded, use safetensors"):
        load_model(path)


def test_pickle_disguised_as_safetensors_is_refused(model_dir) -> None:
    folder, _ = model_dir
    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="model.safetensors"):
        load_model(folder)


def test_model_json_pointing_at_a_pickle_is_refused(model_dir) -> None:
    folder, _ = model_dir
    meta = json.loads((folder / "model.json").read_text())
    meta["weights"]["file"] = "model.pt"
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="pickle files are not loaded"):
        load_model(folder)


def test_text_files_are_refused(tmp_path: Path, model_dir) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="not a model"):
        load_model(notes)
    folder, _ = model_dir
    (folder / "model.json").write_text("this is not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(folder)


def test_missing_folder_and_wrong_kind(tmp_path: Path, model_dir) -> None:
    with pytest.raises(InputError, match="model not found"):
        load_model(tmp_path / "nowhere")
    folder, _ = model_dir
    meta = json.loads((folder / "model.json").read_text())
    meta["kind"] = "something-else"
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not an mcgenref segmentor"):
        load_model(folder)


def test_shape_mismatch_is_refused(model_dir) -> None:
    folder, _ = model_dir
    meta = json.loads((folder / "model.json").read_text())
    meta["model"]["channels"] = [8, 16, 64]  # the weights were made for (8, 16, 32)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not fit the network.*wrong shape"):
        load_model(folder)


def test_training_state_round_trip_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_segmentor(CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    opt.step()
    tensors, info = flatten_optimizer_state(opt.state_dict())
    save_training_state(tmp_path / "ckpt", tensors, {"step": 7, "optimizer": info}, model, CONFIG)
    loaded, record = load_training_state(tmp_path / "ckpt")
    assert record["step"] == 7
    state = unflatten_optimizer_state(loaded, record["optimizer"])
    opt2 = torch.optim.AdamW(build_segmentor(CONFIG).parameters(), lr=1e-3)
    opt2.load_state_dict(state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for name in a["state"][i]:
            assert torch.equal(a["state"][i][name], b["state"][i][name])
    # the checkpoint folder is also a loadable model folder, and nothing in it is a pickle
    load_model(tmp_path / "ckpt")
    assert {p.suffix for p in (tmp_path / "ckpt").iterdir()} == {".json", ".safetensors"}
    # a damaged training state is detected
    path = tmp_path / "ckpt" / "training_state.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        load_training_state(tmp_path / "ckpt")


def test_a_failed_checkpoint_leaves_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    import mcgenref.models.checkpoint as ckpt

    save_training_state(tmp_path / "ckpt", {"x": torch.ones(3)}, {"step": 1})

    def disk_full(*args, **kwargs):
        raise OutputError("cannot write: No space left on device")

    monkeypatch.setattr(ckpt, "write_json_atomic", disk_full)
    with pytest.raises(OutputError):
        save_training_state(tmp_path / "ckpt", {"x": torch.zeros(3)}, {"step": 2})
    tensors, record = load_training_state(tmp_path / "ckpt")
    assert record["step"] == 1 and torch.equal(tensors["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# --------------------------------------------------------------------------- contracts

TRAINER_EXTRA = {"pixel_spacing_mm": [0.1, 0.2], "threshold_logit": 0.0,
                 "intensity": {"low_percentile": 2.0, "high_percentile": 98.0}}


def _folder_with(tmp_path: Path, extra: dict, **top: object) -> Path:
    torch.manual_seed(0)
    folder = save_model(tmp_path / "m", build_segmentor(CONFIG), CONFIG, extra)
    if top:
        meta = json.loads((folder / "model.json").read_text())
        meta.update(top)
        (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_segmentor_contract_reads_every_key(tmp_path: Path) -> None:
    from mcgenref.models.checkpoint import OperatingPoint, load_segmentor

    folder = _folder_with(tmp_path, TRAINER_EXTRA, name="mine",
                          operating_point={"threshold": 0.9, "classical_threshold": 0.6})
    _, contract, meta = load_segmentor(folder)
    assert contract.name == "mine" and contract.sha256 == meta["weights"]["sha256"]
    assert contract.pixel_spacing_mm == (0.1, 0.2)
    assert contract.intensity_percentiles == (2.0, 98.0)
    assert contract.size_multiple == 4  # (8, 16, 32): two strides of 2
    assert contract.operating_point == OperatingPoint(threshold=0.9, classical_threshold=0.6)


def test_an_uncalibrated_segmentor_is_read_at_the_trainers_threshold(tmp_path: Path) -> None:
    from mcgenref.models.checkpoint import read_model_meta, segmentor_contract

    contract = segmentor_contract(read_model_meta(_folder_with(tmp_path, TRAINER_EXTRA)))
    assert contract.operating_point.threshold == 0.5  # sigmoid(0), exactly
    assert contract.operating_point.classical_threshold is None
    assert contract.name == "m"  # no name recorded: the folder's
    several = dict(TRAINER_EXTRA, pixel_spacing_mm=None, threshold_logit=2.0)
    contract = segmentor_contract(read_model_meta(_folder_with(tmp_path / "b", several)))
    assert contract.pixel_spacing_mm is None
    assert contract.operating_point.threshold == pytest.approx(1 / (1 + np.exp(-2.0)))


@pytest.mark.parametrize("key", ["extra.pixel_spacing_mm", "extra.intensity.low_percentile",
                                 "extra.intensity.high_percentile", "extra.threshold_logit",
                                 "tensor_contract.size_multiple", "operating_point.threshold"])
def test_a_missing_contract_key_is_one_line_naming_file_and_key(tmp_path: Path, key: str) -> None:
    from mcgenref.models.checkpoint import load_segmentor

    folder = _folder_with(tmp_path, TRAINER_EXTRA, operating_point={"threshold": 0.9})
    meta = json.loads((folder / "model.json").read_text())
    *parents, last = key.split(".")
    node = meta
    for part in parents:
        node = node[part]
    del node[last]
    if key == "extra.threshold_logit":
        del meta["operating_point"]  # the trainer's threshold is read only when uncalibrated
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        load_segmentor(folder)
    message = str(err.value)
    assert message == f"{folder / 'model.json'}: model.json has no '{key}', which the model's contract needs"


@pytest.mark.parametrize(("key", "value"), [("pixel_spacing_mm", "0.1"), ("pixel_spacing_mm", [0.1]),
                                            ("threshold_logit", "zero")])
def test_a_malformed_contract_key_is_one_line(tmp_path: Path, key: str, value: object) -> None:
    from mcgenref.models.checkpoint import load_segmentor

    folder = _folder_with(tmp_path, dict(TRAINER_EXTRA, **{key: value}))
    with pytest.raises(InputError, match=rf"model.json 'extra.{key}' must be") as err:
        load_segmentor(folder)
    assert "\n" not in str(err.value)


def test_the_shipped_models_satisfy_their_contracts() -> None:
    from mcgenref.inference.segment import default_generator_path, default_model_path
    from mcgenref.models.checkpoint import generator_contract, read_model_meta, segmentor_contract
    from mcgenref.models.generator import GeneratorContract

    seg = segmentor_contract(read_model_meta(default_model_path()))
    assert seg.pixel_spacing_mm == (0.2, 0.2) and seg.intensity_percentiles == (1.0, 99.0)
    assert seg.size_multiple == 8
    raw = json.loads((default_model_path() / "model.json").read_text())["operating_point"]
    assert seg.operating_point.threshold == raw["threshold"] and 0.5 <= raw["threshold"] < 1.0
    assert seg.operating_point.classical_threshold == pytest.approx(0.545918367)
    gen_meta = read_model_meta(default_generator_path(), "mcgenref-generator")
    assert generator_contract(gen_meta) == GeneratorContract(residual_scale=10.0)
