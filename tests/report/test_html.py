"""report.html of ``segment`` and ``evaluate``: structure (parsed in Python, runs everywhere) and
rendering in headless Chromium (skipped where chromium is absent; CI installs it)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcgenref.cli import app
from mcgenref.errors import McGenRefError, OutputError
from mcgenref.report import REPORT_NAME, write_evaluation_report, write_segment_report
from mcgenref.report import html as report_html
from mcgenref.workflows import SegmentOptions, run_segment

from ..inference.test_segment import _with_specks

runner = CliRunner()
BANNER = "Research use only — not a medical device"


class Page(HTMLParser):
    """The structural facts the tests check: images, links, table rows by table class, text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.refs: list[str] = []  # every src / href value
        self.tags: list[str] = []
        self.rows: dict[str, int] = {}
        self.text: list[str] = []
        self._table: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        for key in ("src", "href"):
            if key in a:
                self.refs.append(a[key])
        if tag == "img":
            self.imgs.append(a)
        if tag == "table":
            self._table.append(a.get("class", ""))
        if tag == "tr" and self._table:
            self.rows[self._table[-1]] = self.rows.get(self._table[-1], 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def _decode(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _assert_self_contained(text: str, page: Page) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    for ref in page.refs:
        assert ref.startswith(("data:image/", "#")), ref[:60]
    assert "@import" not in text and "url(" not in text


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two images with one planted cluster each and one unreadable input, segmented (classical)."""
    root = tmp_path_factory.mktemp("batch")
    inputs = root / "PATIENT-FOLDER"
    inputs.mkdir()
    for name, seed in (("left one", 0), ("right", 0)):
        Image.fromarray(_with_specks(seed)).save(inputs / f"{name}.png")
    (inputs / "broken.png").write_bytes(b"not a png")
    out = root / "out"
    with pytest.warns(Warning), pytest.raises(McGenRefError, match="1 of 3 images failed"):
        run_segment([str(inputs)], out,
                    SegmentOptions(method="classical", pixel_spacing="0.1", show_progress=False))
    return inputs, out


def test_segment_report_structure(batch: tuple[Path, Path]) -> None:
    inputs, out = batch
    text = (out / REPORT_NAME).read_text()
    page = Page(text)
    assert BANNER in page.all_text
    _assert_self_contained(text, page)
    # summary: a header row and one row per input, the failure with its reason
    assert page.rows["summary"] == 1 + 3
    assert "failed" in page.all_text and "broken.png" in page.all_text
    # no folder name (could identify a person) anywhere: only file names
    assert "PATIENT-FOLDER" not in text and str(inputs) not in text
    n_clusters = sum(len(json.loads((out / f"{s}_clusters.json").read_text())["clusters"])
                     for s in ("left one", "right"))
    assert n_clusters >= 2
    thumbs = [i for i in page.imgs if "thumb" in i.get("class", "")]
    crops = [i for i in page.imgs if "crop" in i.get("class", "")]
    assert len(thumbs) == 2 and len(crops) == n_clusters
    assert page.rows["clusters"] == 2 + n_clusters  # a header row per image
    for s in ("left one", "right"):  # each cluster's descriptors are in its table
        for cl in json.loads((out / f"{s}_clusters.json").read_text())["clusters"]:
            d = cl["descriptors"]
            assert d["distribution"] in page.all_text and f"{d['extent_mm']:.3f}" in page.all_text
    for img in thumbs + crops:
        im = _decode(img["src"])
        assert max(im.size) <= report_html.THUMB_MAX_PX
    # the overlay is 400 x 300: its thumbnail is the full picture, not upscaled
    assert _decode(thumbs[0]["src"]).size == (300, 400)


def test_report_not_taken_for_an_input_and_no_report_flag(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(_with_specks()).save(folder / "a.png")
    args = ["segment", str(folder), "--out", str(folder), "--method", "classical",
            "--pixel-spacing", "0.1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "1 segmented" in res.output, res.output
    assert (folder / REPORT_NAME).is_file()
    res = runner.invoke(app, args)  # the report and outputs in the input folder are no inputs
    assert res.exit_code == 0 and "1 already done" in res.output, res.output
    page = Page((folder / REPORT_NAME).read_text())
    assert "skipped" in page.all_text and len(page.imgs) >= 1  # a skipped image is shown too
    other = tmp_path / "other"
    res = runner.invoke(app, ["segment", str(folder / "a.png"), "--out", str(other),
                              *args[4:], "--no-report"])
    assert res.exit_code == 0, res.output
    assert (other / "a_meta.json").is_file() and not (other / REPORT_NAME).exists()


def _fake_outputs(out: Path, prefix: str, shape: tuple[int, int], spacing: float,
                  clusters: list[dict]) -> None:
    """A folder 'segmented earlier': only the files the report reads."""
    (out / prefix).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    overlay = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    Image.fromarray(overlay).save(out / f"{prefix}_overlay.png", compress_level=0)
    meta = {"input": Path(prefix).name + ".dcm", "method": "model", "threshold": 0.9,
            "model": {"name": "m", "sha256": "ab" * 32}, "pixel_spacing_mm": [spacing, spacing],
            "image_size": list(shape), "n_calcifications": 3 * len(clusters),
            "n_clusters": len(clusters)}
    (out / f"{prefix}_meta.json").write_text(json.dumps(meta))
    (out / f"{prefix}_clusters.json").write_text(json.dumps({"clusters": clusters}))


def test_large_image_thumbnail_and_crops_are_bounded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a 70 um image (scaled down to keep the test fast): a small and a huge cluster, and more
    # clusters than crops are shown for
    clusters = [{"id": 1, "x": 100.0, "y": 120.0, "radius_mm": 1.0, "count": 3, "score": 0.99},
                {"id": 2, "x": 1500.0, "y": 1200.0, "radius_mm": 30.0, "count": 9, "score": 0.98}]
    clusters += [{"id": i, "x": 800.0, "y": 900.0, "radius_mm": 2.0, "count": 3, "score": 0.5}
                 for i in range(3, 3 + report_html.MAX_CROPS_PER_IMAGE)]
    _fake_outputs(out, "siteA/img1", (2400, 1800), 0.07, clusters)
    path = write_segment_report(out, [{"input": "/secret/place/img1.dcm", "prefix": "siteA/img1",
                                       "status": "skipped", "error": None}])
    page = Page(path.read_text())
    thumbs = [_decode(i["src"]) for i in page.imgs if "thumb" in i.get("class", "")]
    crops = [_decode(i["src"]) for i in page.imgs if "crop" in i.get("class", "")]
    assert len(thumbs) == 1 and max(thumbs[0].size) == report_html.THUMB_MAX_PX
    assert len(crops) == report_html.MAX_CROPS_PER_IMAGE
    # the small cluster at full resolution: (1 + 2 + 3) mm = 85.7 px around the centre at
    # 0.07 mm, so columns floor(100 - 85.7) = 14 to ceil(100 + 85.7) = 186, rows 35 to 206
    assert crops[0].size == (173, 173)
    assert max(crops[1].size) == report_html.CROP_MAX_PX  # the huge one, downsampled
    assert "2 more cluster(s)" in page.all_text and "/secret/place" not in path.read_text()
    assert page.rows["clusters"] == 1 + len(clusters)  # every cluster listed
    assert "n/a" in page.all_text  # clusters without descriptors (older folders) still show


def test_missing_outputs_are_notes_and_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    entries = [{"input": "x.png", "prefix": "x", "status": "done", "error": None}]
    path = write_segment_report(out, entries)
    assert "missing or unreadable" in path.read_text()
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted half-way")

    monkeypatch.setattr(report_html, "_segment_image_section", boom)
    with pytest.raises(RuntimeError):
        write_segment_report(out, entries)
    assert path.read_bytes() == before  # never half-written
    assert sorted(p.name for p in out.iterdir()) == [REPORT_NAME]  # no temporary file left
    with pytest.raises(OutputError, match="cannot write"):
        write_segment_report(tmp_path / "no such folder", entries)


def test_unwritable_report_is_one_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_with_specks()).save(folder / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / REPORT_NAME).mkdir()  # report.html cannot be replaced
    res = runner.invoke(app, ["segment", str(folder), "--out", str(out), "--method", "classical",
                              "--pixel-spacing", "0.1"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: cannot write") and REPORT_NAME in lines[-1]
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def evaluation(batch: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, pred = batch
    truth = tmp_path_factory.mktemp("truth")
    for name in ("left one", "right"):
        mask = np.asarray(Image.open(pred / f"{name}_mask.png"))
        Image.fromarray(mask).save(truth / f"{name}.png")
    out = tmp_path_factory.mktemp("eval") / "ev"
    res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--truth", str(truth),
                              "--out", str(out), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    return out


def test_evaluation_report_structure(evaluation: Path) -> None:
    text = (evaluation / REPORT_NAME).read_text()
    page = Page(text)
    assert BANNER in page.all_text
    _assert_self_contained(text, page)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert page.rows["metrics pixel"] == 1 + len(metrics["pixel"]["pooled"])
    assert page.rows["metrics object"] == 1 + 3
    lo, hi = metrics["pixel"]["pooled_ci"]["dice"]
    assert f"[{lo:.3f}, {hi:.3f}]" in page.all_text  # the CI as in metrics.json
    plots = [i for i in page.imgs if "plot" in i.get("class", "")]
    assert len(plots) == (evaluation / "froc_objects.png").is_file() + (
        evaluation / "froc_clusters.png").is_file() >= 1
    thumbs = [i for i in page.imgs if "thumb" in i.get("class", "")]
    assert len(thumbs) == 2  # one overlay per prediction
    assert page.rows["per-image"] == 1 + 2


def test_evaluation_report_without_overlays_or_metrics(tmp_path: Path) -> None:
    path = write_evaluation_report(tmp_path, tmp_path / "nothing")
    page = Page(path.read_text())
    assert "metrics.json is missing" in page.all_text and not page.imgs


# --- headless Chromium --------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (CI installs Debian's chromium in .ci/run)")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",  # type: ignore[list-item]
                           "--disable-dev-shm-usage", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@needs_chromium
@pytest.mark.parametrize("which", ["segment", "evaluate"])
def test_renders_in_headless_chromium(which: str, batch: tuple[Path, Path], evaluation: Path,
                                      tmp_path: Path) -> None:
    report = (batch[1] if which == "segment" else evaluation) / REPORT_NAME
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        im.verify()
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # not a blank page
    # the banner is drawn: its red (#b00020) across the top of the page
    with Image.open(shot) as im:
        top = np.asarray(im.convert("RGB"))[5:30, 100:1100].reshape(-1, 3).astype(int)
    assert (np.abs(top - [176, 0, 32]).sum(axis=1) < 40).mean() > 0.5
    dom = _chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)
    assert BANNER in page.all_text
    _assert_self_contained(dom.stdout, page)
    if which == "segment":
        assert page.rows["summary"] == 1 + 3
        assert len([i for i in page.imgs if "thumb" in i.get("class", "")]) == 2
    else:
        assert "metrics pixel" in page.rows and page.rows["per-image"] == 1 + 2
