"""segment --model auto|coarse|fine|PATH: the rule, the per-image choice, its record, reruns.

The shipped fine model may not be installed: tests build a tiny coarse (0.2 mm) and a tiny
fine (0.1 mm) model folder with different weights and operating points, and point
``model_choice.shipped_model_path`` at them.
"""

from __future__ import annotations

import fnmatch
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.errors import ConfigError, McGenRefWarning
from mcgenref.inference import model_choice as mc
from mcgenref.inference.model_choice import (
    FINE_BELOW_MM,
    ModelSelector,
    auto_rule,
    resolve_model,
)
from mcgenref.inference.segment import SegmentConfig, default_model_path
from mcgenref.io.dicom_write import mammogram_dataset
from mcgenref.models.checkpoint import save_model
from mcgenref.models.segmentor import SegmentorConfig, build_segmentor

from ..conftest import REPO, phantom_mammogram

runner = CliRunner()

#: the operating points of the two tiny models (the threshold each image must get)
COARSE_THRESHOLD, FINE_THRESHOLD = 0.6, 0.7


def _tiny(folder: Path, spacing: float, seed: int, name: str, threshold: float) -> Path:
    torch.manual_seed(seed)  # another seed: other weights, another sha256
    cfg = SegmentorConfig(channels=(4, 8, 16))
    extra = {"pixel_spacing_mm": [spacing, spacing], "threshold_logit": 0.0,
             "intensity": {"low_percentile": 1.0, "high_percentile": 99.0}}
    save_model(folder, build_segmentor(cfg), cfg, extra)
    meta = json.loads((folder / "model.json").read_text())
    meta["name"] = name
    meta["operating_point"] = {"threshold": threshold}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shipped")
    return {
        "coarse": _tiny(root / "segmentor", 0.2, 0, "tiny-coarse", COARSE_THRESHOLD),
        "fine": _tiny(root / "segmentor_fine", 0.1, 1, "tiny-fine", FINE_THRESHOLD),
    }


@pytest.fixture()
def shipped(monkeypatch: pytest.MonkeyPatch, tiny_pair: dict[str, Path]) -> dict[str, Path]:
    """Both tiny models installed as the shipped ones."""
    monkeypatch.setattr(mc, "shipped_model_path", lambda kind: tiny_pair[kind])
    return tiny_pair


@pytest.fixture()
def coarse_only(monkeypatch: pytest.MonkeyPatch, tiny_pair: dict[str, Path],
                tmp_path: Path) -> dict[str, Path]:
    """Only the coarse model installed (the fine folder does not exist)."""
    folders = {"coarse": tiny_pair["coarse"], "fine": tmp_path / "absent" / "segmentor_fine"}
    monkeypatch.setattr(mc, "shipped_model_path", lambda kind: folders[kind])
    return folders


def _dicom(path: Path, spacing: float, seed: int = 0) -> Path:
    pixels = phantom_mammogram((400, 300), seed=seed).astype(np.uint16) * 16
    mammogram_dataset(pixels, (spacing, spacing), uid_entropy=[path.name]).save_as(
        path, enforce_file_format=True)
    return path


@pytest.fixture()
def mixed(tmp_path: Path) -> dict[str, Path]:
    """Two DICOMs that record different spacings: one for each model under auto."""
    folder = tmp_path / "in"
    folder.mkdir()
    return {"fine": _dicom(folder / "digital.dcm", 0.07), "coarse": _dicom(folder / "film.dcm", 0.2, 1)}


def _meta(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}_meta.json").read_text())


def _segment(inputs: list[Path], out: Path, *args: str):
    return runner.invoke(app, ["segment", *map(str, inputs), "--out", str(out), "--no-seg",
                               "--no-report", "--no-progress", "--workers", "0", *args])


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("spacing, expected", [
    (0.05, "fine"), (0.07, "fine"), (0.1, "fine"),
    (0.141, "fine"),  # 0.141 < sqrt(0.02) = 0.14142: the brief's "0.141" is a rounding
    (FINE_BELOW_MM, "coarse"),  # exactly at the boundary: coarse
    (0.1415, "coarse"), (0.2, "coarse"), (0.3, "coarse"),
    ((0.1, 0.2), "coarse"),  # the larger of row and column decides
    ((0.07, 0.05), "fine"),
])
def test_the_auto_rule(spacing: float | tuple[float, float], expected: str) -> None:
    kind, reason = auto_rule(spacing)
    assert kind == expected
    assert reason.endswith(f"-> {expected}") and "0.1414 mm" in reason


def test_the_boundary_is_the_geometric_mean_of_the_shipped_spacings() -> None:
    assert FINE_BELOW_MM == pytest.approx(math.sqrt(0.1 * 0.2), abs=1e-15)
    assert auto_rule(0.07)[1] == "spacing 0.07 mm < 0.1414 mm -> fine"
    assert auto_rule(0.2)[1] == "spacing 0.2 mm >= 0.1414 mm -> coarse"


def test_the_shipped_models_record_the_spacings_the_rule_assumes() -> None:
    assert mc.shipped_model_path("coarse") == default_model_path()
    coarse = json.loads((default_model_path() / "model.json").read_text())
    assert coarse["extra"]["pixel_spacing_mm"] == [mc.SHIPPED_SPACING_MM["coarse"]] * 2
    fine = mc.shipped_model_path("fine")
    assert fine.name == "segmentor_fine" and fine.parent == default_model_path().parent
    if mc.is_installed(fine):  # once recipes/fine_segmentor.py install has run
        meta = json.loads((fine / "model.json").read_text())
        assert meta["extra"]["pixel_spacing_mm"] == [mc.SHIPPED_SPACING_MM["fine"]] * 2
        assert meta["name"] == "mcgenref-fine-segmentor" and "threshold" in meta["operating_point"]


def test_the_fine_weights_would_ship_in_the_wheel() -> None:
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["mcgenref"]
    for name in ("model.json", "model.safetensors"):
        for folder in ("segmentor", "segmentor_fine"):
            assert any(fnmatch.fnmatch(f"weights/{folder}/{name}", g) for g in globs), (folder, name)


# --------------------------------------------------------------------------- resolution


def test_resolve_with_both_models(shipped: dict[str, Path]) -> None:
    c = resolve_model(None, (0.07, 0.07))
    assert (c.asked, c.model, c.path) == ("auto", "shipped fine", shipped["fine"])
    assert c.reason == "auto: spacing 0.07 mm < 0.1414 mm -> fine" and not c.fell_back
    c = resolve_model("auto", (0.2, 0.2))
    assert (c.model, c.path) == ("shipped coarse", shipped["coarse"])
    c = resolve_model("coarse", (0.07, 0.07))  # asked for: the spacing does not matter
    assert (c.model, c.reason) == ("shipped coarse", "--model coarse")
    c = resolve_model("fine", (0.3, 0.3))
    assert (c.model, c.path, c.reason) == ("shipped fine", shipped["fine"], "--model fine")
    c = resolve_model(shipped["fine"], (0.2, 0.2))
    assert (c.model, c.path, c.reason) == (str(shipped["fine"]), shipped["fine"], "--model PATH")
    assert resolve_model("./fine", (0.2, 0.2)).path == Path("fine")  # a folder, not the word


def test_refine_takes_the_coarse_model(shipped: dict[str, Path]) -> None:
    c = resolve_model("auto", (0.07, 0.07), refine=True)
    assert c.path == shipped["coarse"] and "--refine" in c.reason and "coarse (0.2 mm)" in c.reason
    assert resolve_model(shipped["fine"], (0.07, 0.07), refine=True).path == shipped["fine"]
    with pytest.raises(ConfigError, match="--refine cannot use --model fine: the shipped "
                                          "generator works with the coarse"):
        resolve_model("fine", (0.07, 0.07), refine=True)


def test_resolve_without_the_fine_model(coarse_only: dict[str, Path]) -> None:
    c = resolve_model("auto", (0.07, 0.07))
    assert c.path == coarse_only["coarse"] and c.fell_back
    assert c.reason == "auto: spacing 0.07 mm < 0.1414 mm -> fine, but the fine model is not " \
                       "installed -> coarse"
    assert not resolve_model("auto", (0.2, 0.2)).fell_back
    with pytest.raises(ConfigError, match="--model fine: the fine model is not installed"):
        resolve_model("fine", (0.07, 0.07))


# --------------------------------------------------------------------------- the selector


def test_models_load_lazily_and_once(shipped: dict[str, Path], mixed: dict[str, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mcgenref.models import checkpoint

    loads: list[Path] = []
    real = checkpoint.load_segmentor
    monkeypatch.setattr(checkpoint, "load_segmentor",
                        lambda path, device="cpu": loads.append(Path(path)) or real(path, device))
    selector = ModelSelector(SegmentConfig(), None, "cpu")
    assert loads == []  # auto: nothing loaded before an image needs it
    film = selector.segment(mixed["coarse"])
    assert loads == [shipped["coarse"]]
    digital = selector.segment(mixed["fine"])
    selector.segment(mixed["fine"], stem="again")
    selector.segment(mixed["coarse"], stem="again")
    assert loads == [shipped["coarse"], shipped["fine"]]  # each once
    assert film.meta.model_choice["model"] == "shipped coarse"
    assert digital.meta.model_choice["model"] == "shipped fine"
    assert digital.meta.detector["model_pixel_spacing_mm"] == [0.1, 0.1]
    assert film.meta.detector["model_pixel_spacing_mm"] == [0.2, 0.2]


def test_a_fixed_choice_loads_its_model_before_any_image(shipped: dict[str, Path]) -> None:
    assert ModelSelector(SegmentConfig(), "fine", "cpu").loaded == [str(shipped["fine"])]
    assert ModelSelector(SegmentConfig(method="classical"), "fine", "cpu").loaded == ["classical"]


# --------------------------------------------------------------------------- through the CLI


def test_a_mixed_batch_picks_per_image_and_records_it(shipped: dict[str, Path],
                                                      mixed: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _segment([mixed["fine"], mixed["coarse"]], out)
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
    sha = {k: json.loads((p / "model.json").read_text())["weights"]["sha256"]
           for k, p in shipped.items()}
    for kind, stem, reason in (("fine", "digital", "auto: spacing 0.07 mm < 0.1414 mm -> fine"),
                               ("coarse", "film", "auto: spacing 0.2 mm >= 0.1414 mm -> coarse")):
        meta = _meta(out, stem)
        assert meta["model_choice"] == {
            "asked": "auto", "model": f"shipped {kind}", "name": f"tiny-{kind}",
            "path": str(shipped[kind]), "sha256": sha[kind],
            "pixel_spacing_mm": [0.1, 0.1] if kind == "fine" else [0.2, 0.2], "reason": reason,
        }
        assert meta["model"]["sha256"] == sha[kind]
        # the operating threshold is the chosen model's own
        assert meta["threshold"] == (FINE_THRESHOLD if kind == "fine" else COARSE_THRESHOLD)
        assert meta["settings"]["threshold"] == meta["threshold"]

    # a rerun with the same choice skips both images
    res = _segment([mixed["fine"], mixed["coarse"]], out)
    assert res.exit_code == 0 and "0 segmented, 2 already done" in res.output, res.output
    # --model coarse: the same model for the film image (skipped), another for the digital one
    res = _segment([mixed["coarse"]], out, "--model", "coarse")
    assert res.exit_code == 0 and "0 segmented, 1 already done" in res.output, res.output
    res = _segment([mixed["fine"], mixed["coarse"]], out, "--model", "coarse")
    assert res.exit_code == 2 and "digital_meta.json was made with other settings" in res.output
    res = _segment([mixed["fine"]], out, "--model", "coarse", "--overwrite")
    assert res.exit_code == 0, res.output
    meta = _meta(out, "digital")
    assert (meta["model_choice"]["asked"], meta["model_choice"]["reason"]) == ("coarse", "--model coarse")
    assert meta["threshold"] == COARSE_THRESHOLD


def test_an_explicit_threshold_overrides_both_models(shipped: dict[str, Path],
                                                     mixed: dict[str, Path],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _segment([mixed["fine"], mixed["coarse"]], out, "--threshold", "0.55")
    assert res.exit_code == 0, res.output
    assert _meta(out, "digital")["threshold"] == _meta(out, "film")["threshold"] == 0.55


def test_without_the_fine_model_auto_warns_once(coarse_only: dict[str, Path],
                                                mixed: dict[str, Path], tmp_path: Path) -> None:
    second = _dicom(mixed["fine"].with_name("digital2.dcm"), 0.05, 2)
    out = tmp_path / "out"
    res = _segment([mixed["fine"], second, mixed["coarse"]], out)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "fine model is not installed" in line]
    assert lines == [f"warning: {mc.fallback_warning()}"], res.output
    for stem in ("digital", "digital2"):
        choice = _meta(out, stem)["model_choice"]
        assert choice["model"] == "shipped coarse" and choice["reason"].endswith(
            "but the fine model is not installed -> coarse")
    # only film images: nothing fell back, no warning
    res = _segment([mixed["coarse"]], tmp_path / "film-only")
    assert res.exit_code == 0 and "warning" not in res.output, res.output


def test_the_fallback_warning_is_a_mcgenref_warning(coarse_only: dict[str, Path],
                                                    mixed: dict[str, Path]) -> None:
    selector = ModelSelector(SegmentConfig(), "auto", "cpu")
    with pytest.warns(McGenRefWarning, match="fine model is not installed") as caught:
        selector.prepare(mixed["fine"])
        selector.prepare(mixed["fine"], stem="again")
    assert len([w for w in caught if "fine model" in str(w.message)]) == 1


def test_model_fine_errors_when_absent_and_with_refine(coarse_only: dict[str, Path],
                                                       mixed: dict[str, Path],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _segment([mixed["fine"]], out, "--model", "fine")
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: --model fine: the fine model is not installed (no model in "
        f"{coarse_only['fine']}); use --model coarse or auto"]
    res = _segment([mixed["fine"]], out, "--model", "fine", "--refine")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith("error: --refine cannot use --model fine: the shipped generator "
                                 "works with the coarse (0.2 mm) segmentor only")
    assert not out.exists() or not any(out.iterdir())


def test_a_model_folder_still_works(shipped: dict[str, Path], mixed: dict[str, Path],
                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _segment([mixed["fine"]], out, "--model", str(shipped["coarse"]))
    assert res.exit_code == 0, res.output
    meta = _meta(out, "digital")
    assert meta["model_choice"]["asked"] == meta["model_choice"]["model"] == str(shipped["coarse"])
    assert meta["model_choice"]["reason"] == "--model PATH"
    assert meta["threshold"] == COARSE_THRESHOLD
    assert meta["detector"]["model_pixel_spacing_mm"] == [0.2, 0.2]


def test_info_says_what_auto_would_pick(shipped: dict[str, Path], mixed: dict[str, Path]) -> None:
    res = runner.invoke(app, ["info", str(mixed["fine"])])
    assert res.exit_code == 0, res.output
    assert "auto model           shipped fine (auto: spacing 0.07 mm < 0.1414 mm -> fine)" \
        in res.stdout, res.stdout
    res = runner.invoke(app, ["info", str(mixed["fine"]), "--pixel-spacing", "0.2", "--json"])
    assert json.loads(res.stdout)[0]["auto_model"] == {
        "model": "shipped coarse", "reason": "auto: spacing 0.2 mm >= 0.1414 mm -> coarse"}


def test_info_without_the_fine_model(coarse_only: dict[str, Path], mixed: dict[str, Path]) -> None:
    res = runner.invoke(app, ["info", str(mixed["fine"]), "--json"])
    assert json.loads(res.stdout)[0]["auto_model"]["reason"].endswith(
        "-> fine, but the fine model is not installed -> coarse")
