"""``report.html``: one self-contained page per output folder, readable offline.

* **Self-contained**: pictures are ``data:`` URIs (base64 PNG/JPEG), the CSS is inline, there
  is no script and no reference to any network resource; the file can be mailed or archived.
* **No patient identifiers**: the page shows only the input *file names* and output names
  (which the user chose), what mcgenref computed, and pictures of the pixels. No DICOM header
  field is shown; burned-in text in the pixels would show in the pictures like any pixel.
  Error messages are shown with the input's folder left out.
* **Research use only**: every page opens with a visible banner saying it is not a medical
  device, and the cluster descriptors are labelled descriptive, not diagnostic.
* **Bounded size and memory**: one overlay is in memory at a time; a thumbnail is at most
  :data:`THUMB_MAX_PX` on its long side (JPEG); cluster crops are full-resolution PNG windows
  of the overlay around each cluster (its circle plus :data:`CROP_MARGIN_MM`), at most
  :data:`CROP_MAX_PX` on a side (larger windows are downsampled, and say so), and at most
  :data:`MAX_CROPS_PER_IMAGE` per image (the highest scores); the table lists every cluster.
* **Atomic**: the page is streamed to a temporary file and renamed (never half-written).

Everything is read from the files in the folder, so a folder segmented earlier can be
reported again; a missing or unreadable file is a note on the page, not an error.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import mcgenref
from mcgenref.errors import InputError
from mcgenref.io.atomic import atomic_text_writer
from mcgenref.io.predictions import (
    CLUSTERS_SUFFIX,
    OVERLAY_SUFFIX,
    UNCERTAINTY_SUFFIX,
    PredictionMeta,
    decode_prob,
    output_path,
    read_meta,
)

REPORT_NAME = "report.html"
BANNER = "Research use only — not a medical device"
THUMB_MAX_PX = 640
CROP_MAX_PX = 320
CROP_MARGIN_MM = 3.0
MAX_CROPS_PER_IMAGE = 12
#: The overlay draws each cluster's circle this much outside its radius (render_overlay).
_CIRCLE_PAD_MM = 2.0

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:0 16px 40px}
.banner{background:#b00020;color:#fff;font-weight:700;font-size:1.15em;padding:12px 16px;text-align:center}
.privacy{background:#fff4d6;border:1px solid #e6c66a;padding:8px 12px;margin:12px 0;font-size:.9em}
h1{font-size:1.5em;margin:18px 0 6px} h2{font-size:1.2em;margin:24px 0 6px;border-bottom:2px solid #ccc}
table{border-collapse:collapse;margin:8px 0;font-size:.88em;background:#fff}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef1f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.status-done{color:#11632a;font-weight:600} .status-skipped{color:#555;font-weight:600}
.status-failed{color:#b00020;font-weight:600}
.thumb{max-width:100%;height:auto;border:1px solid #999;background:#000}
.crops{display:flex;flex-wrap:wrap;gap:10px} .crops figure{margin:0}
.crops img{border:1px solid #999;image-rendering:pixelated;background:#000}
figcaption{font-size:.8em;color:#444;max-width:340px}
.pair{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start} .pair figure{margin:0;min-width:0}
.note{color:#555;font-size:.88em} .error{color:#b00020}
.scroll{overflow-x:auto;max-width:100%}
.plot{max-width:100%;height:auto;border:1px solid #ccc;background:#fff}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: None/NaN -> n/a, floats to ``digits`` decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _ci(pair: Any, digits: int = 3) -> str:
    if isinstance(pair, (list, tuple)) and len(pair) == 2:
        return f"[{_fmt(pair[0], digits)}, {_fmt(pair[1], digits)}]"
    return "n/a"


def _data_uri(image: Any, fmt: str = "PNG") -> str:
    """``data:`` URI of a PIL image (PNG lossless, or JPEG for photographic thumbnails)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, format="JPEG", quality=85)
        mime = "image/jpeg"
    else:
        image.save(buf, format="PNG", optimize=False, compress_level=6)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _thumbnail(image: Any, max_px: int = THUMB_MAX_PX) -> Any:
    """Downsampled copy, long side <= ``max_px`` (integer box reduction, then Lanczos)."""
    from PIL import Image

    factor = max(1, max(image.size) // (2 * max_px))
    small = image.reduce(factor) if factor > 1 else image
    small = small.copy()
    small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    return small


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_meta(out_dir: Path, prefix: str) -> PredictionMeta | None:
    try:
        return read_meta(out_dir, prefix)
    except InputError:
        return None


def _open_rgb(path: Path) -> tuple[Any | None, str | None]:
    """(the image as RGB, None) or (None, why it could not be read)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None, f"{path.name} not found"
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"cannot read {path.name}: {type(exc).__name__}"


def _page_start(fh: IO[str], title: str) -> None:
    fh.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             "<meta name=\"referrer\" content=\"no-referrer\">\n"
             f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n")
    fh.write(f"<div class=\"banner\" id=\"banner\">{_esc(BANNER)}. The results are not a "
             "diagnosis and must not be used for patient care.</div>\n<main>\n")
    fh.write(f"<h1>{_esc(title)}</h1>\n")
    fh.write("<p class=\"privacy\">This page shows no patient identifier: only the file names "
             "and output names chosen by the user, the numbers mcgenref computed, and pictures "
             "of the image pixels (no DICOM header field is shown; text burned into the pixels "
             "would appear in the pictures). It needs no network: pictures and styles are "
             "embedded.</p>\n")


def _page_end(fh: IO[str]) -> None:
    fh.write(f"<p class=\"note\">Generated by mcgenref {_esc(mcgenref.__version__)}.</p>\n"
             "</main>\n</body>\n</html>\n")


def _table(fh: IO[str], header: Sequence[str] | None, rows: Iterable[Sequence[Any]],
           cls: str = "", numeric_from: int = 1) -> None:
    """A table (inside a horizontally scrolling box); ``("html", markup)`` cells are not escaped."""
    fh.write(f"<div class=\"scroll\"><table class=\"{_esc(cls)}\">\n")
    if header:
        fh.write("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>\n")
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if isinstance(v, tuple) and len(v) == 2 and v[0] == "html":
                cells.append(f"<td>{v[1]}</td>")  # pre-escaped markup
            else:
                num = " class=\"num\"" if i >= numeric_from and isinstance(v, (int, float)) else ""
                cells.append(f"<td{num}>{_esc(_fmt(v))}</td>")
        fh.write("<tr>" + "".join(cells) + "</tr>\n")
    fh.write("</table></div>\n")


# ---------------------------------------------------------------------------------------------
# segment


def _safe_error(entry: dict[str, Any]) -> str:
    """The entry's error with the input's folder left out (folder names may identify people)."""
    error = str(entry.get("error") or "")
    source = str(entry.get("input") or "")
    if source:
        error = error.replace(source, Path(source).name)
    return error


def _cluster_crop(overlay: Any, cluster: dict[str, Any], spacing: tuple[float, float]) -> tuple[Any, bool]:
    """(crop of the overlay around ``cluster``, whether it had to be downsampled)."""
    from PIL import Image

    reach = float(cluster.get("radius_mm", 0.0)) + _CIRCLE_PAD_MM + CROP_MARGIN_MM
    half_r, half_c = reach / spacing[0], reach / spacing[1]
    x, y = float(cluster["x"]), float(cluster["y"])
    w, h = overlay.size
    # pixels floor(centre - reach) to ceil(centre + reach), inclusive, clipped to the image
    box = (max(0, math.floor(x - half_c)), max(0, math.floor(y - half_r)),
           min(w, math.ceil(x + half_c) + 1), min(h, math.ceil(y + half_r) + 1))
    crop = overlay.crop(box)
    if max(crop.size) > CROP_MAX_PX:
        crop.thumbnail((CROP_MAX_PX, CROP_MAX_PX), Image.Resampling.LANCZOS)
        return crop, True
    return crop, False


def _descriptor_cells(d: dict[str, Any] | None) -> list[Any]:
    if not d:
        return ["n/a"] * 6
    size = f"{_fmt(d.get('size_mean_mm'))} ± {_fmt(d.get('size_sd_mm'))} (CV {_fmt(d.get('size_cv'), 2)})"
    elong = f"{_fmt(d.get('mc_elongation_mean'), 2)} ± {_fmt(d.get('mc_elongation_sd'), 2)}"
    return [d.get("distribution", "n/a"), d.get("extent_mm"), d.get("area_mm2"),
            d.get("density_per_cm2"), size, elong]


def _uncertainty_figure(fh: IO[str], path: Path, prefix: str) -> None:
    """TT-GPR's uncertainty map (``--refine``) as a grey thumbnail beside the overlay.

    The PNG stores ``2 * spread`` encoded as a probability (:mod:`mcgenref.io.predictions`):
    white is the largest spread TT-GPR gives (0.5), black none (and everything outside the
    searched region).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        fh.write(f"<p class=\"note\">No uncertainty picture: {_esc(path.name)} not found.</p>\n")
        return
    try:
        with Image.open(path) as im:
            values = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        fh.write(f"<p class=\"note\">No uncertainty picture: cannot read {_esc(path.name)}: "
                 f"{_esc(type(exc).__name__)}.</p>\n")
        return
    if values.ndim != 2:
        fh.write(f"<p class=\"note\">No uncertainty picture: {_esc(path.name)} is not a "
                 "grey image.</p>\n")
        return
    grey = Image.fromarray(np.round(np.clip(decode_prob(values), 0.0, 1.0) * 255.0).astype(np.uint8))
    del values
    thumb = _thumbnail(grey)
    fh.write(f"<figure><img class=\"thumb\" src=\"{_data_uri(thumb)}\" "
             f"width=\"{thumb.width}\" height=\"{thumb.height}\" "
             f"alt=\"TT-GPR uncertainty of {_esc(prefix)}\">"
             "<figcaption>TT-GPR uncertainty (--refine; downsampled): the spread of the "
             "refined probability, black 0 to white 0.5; black outside the searched region."
             "</figcaption></figure>\n")


def _segment_image_section(fh: IO[str], out_dir: Path, index: int, entry: dict[str, Any],
                           meta: PredictionMeta | None, clusters_doc: dict[str, Any] | None) -> None:
    prefix = str(entry["prefix"])
    fh.write(f"<section class=\"image\" id=\"image-{index}\">\n<h2>{_esc(prefix)}</h2>\n")
    if meta is None:
        fh.write(f"<p class=\"error\">{_esc(prefix)}_meta.json is missing or unreadable: no "
                 "results to show.</p>\n</section>\n")
        return
    spacing = meta.pixel_spacing_mm or (0.1, 0.1)
    model = meta.model or {}
    facts = [
        ("input file", meta.input if meta.input is not None
         else Path(str(entry.get("input", ""))).name),
        ("status in this run", entry.get("status")),
        ("method", meta.method),
        ("model", f"{model.get('name', 'n/a')}"
         + (f" (sha256 {str(model['sha256'])[:12]}…)" if model.get("sha256") else "")),
        ("threshold", meta.threshold),
        ("pixel spacing (mm)", " x ".join(_fmt(s, 4) for s in spacing)
         + f" ({meta.pixel_spacing_source or 'n/a'})"),
        ("image size (px)", " x ".join(str(v) for v in (meta.image_size or ()))),
        ("breast area searched (mm²)", meta.breast_area_mm2),
        ("MCs", meta.n_calcifications),
        ("clusters", meta.n_clusters),
    ]
    _table(fh, None, facts, cls="facts", numeric_from=1)
    overlay, why = _open_rgb(output_path(out_dir, prefix, OVERLAY_SUFFIX))
    fh.write("<div class=\"pair\">\n")
    if overlay is None:
        fh.write(f"<p class=\"note\">No overlay picture: {_esc(why)}.</p>\n")
    else:
        thumb = _thumbnail(overlay)
        fh.write(f"<figure><img class=\"thumb\" src=\"{_data_uri(thumb, 'JPEG')}\" "
                 f"width=\"{thumb.width}\" height=\"{thumb.height}\" alt=\"overlay of {_esc(prefix)}\">"
                 "<figcaption>Overlay (downsampled): MC outlines red, cluster circles yellow "
                 "(radius + 2 mm), searched region's edge blue.</figcaption></figure>\n")
    if meta.refine:
        _uncertainty_figure(fh, output_path(out_dir, prefix, UNCERTAINTY_SUFFIX), prefix)
    fh.write("</div>\n")
    clusters = (clusters_doc or {}).get("clusters") if clusters_doc else None
    if clusters_doc is None:
        fh.write(f"<p class=\"note\">{_esc(prefix)}_clusters.json is missing or unreadable.</p>\n")
    elif not clusters:
        fh.write("<p>No cluster found.</p>\n")
    else:
        fh.write("<p class=\"note\">Cluster descriptors are descriptive geometry, not a "
                 "diagnosis; the distribution class is a fixed geometric rule inspired by, but "
                 "not, BI-RADS (see docs/segment.md).</p>\n")
        header = ["cluster", "score", "MCs", "centre x, y (px)", "distribution", "extent (mm)",
                  "hull area (mm²)", "density (MCs/cm²)", "MC size mean ± sd (mm)",
                  "MC elongation mean ± sd"]
        rows = []
        for cl in clusters:
            rows.append([cl.get("id"), cl.get("score"), cl.get("count"),
                         f"{_fmt(cl.get('x'), 1)}, {_fmt(cl.get('y'), 1)}",
                         *_descriptor_cells(cl.get("descriptors"))])
        _table(fh, header, rows, cls="clusters")
        if overlay is not None:
            ranked = sorted(clusters, key=lambda c: -float(c.get("score") or 0.0))
            shown = ranked[:MAX_CROPS_PER_IMAGE]
            fh.write("<div class=\"crops\">\n")
            for cl in shown:
                try:
                    crop, reduced = _cluster_crop(overlay, cl, spacing)  # type: ignore[arg-type]
                except (KeyError, TypeError, ValueError):
                    continue
                note = " (downsampled to fit)" if reduced else " (full resolution)"
                fh.write(f"<figure><img class=\"crop\" src=\"{_data_uri(crop)}\" "
                         f"width=\"{max(crop.width, 160) if not reduced else crop.width}\" "
                         f"alt=\"cluster {_esc(cl.get('id'))} of {_esc(prefix)}\">"
                         f"<figcaption>cluster {_esc(cl.get('id'))}: score {_esc(_fmt(cl.get('score')))}, "
                         f"{_esc(cl.get('count'))} MCs{note}</figcaption></figure>\n")
            fh.write("</div>\n")
            if len(ranked) > len(shown):
                fh.write(f"<p class=\"note\">{len(ranked) - len(shown)} more cluster(s) listed "
                         "above without a crop.</p>\n")
    del overlay
    fh.write("</section>\n")


def write_segment_report(out_dir: Path, entries: list[dict[str, Any]]) -> Path:
    """Write ``out_dir/report.html`` for a ``mcgenref segment`` run; returns its path.

    ``entries``: one per input, ``{"input": str, "prefix": str, "status": "done" | "skipped" |
    "failed", "error": str | None}``; ``prefix`` is the output path prefix relative to
    ``out_dir`` (outputs ``out_dir/<prefix>_meta.json``, ``_overlay.png``, ``_clusters.json``).
    Sections follow the order of ``entries``; failed inputs appear in the summary only.
    """
    out_dir = Path(out_dir)
    path = out_dir / REPORT_NAME
    counts = {s: sum(1 for e in entries if e.get("status") == s) for s in ("done", "skipped", "failed")}
    with atomic_text_writer(path) as fh:
        _page_start(fh, "mcgenref segment report")
        fh.write(f"<p>{len(entries)} input(s): {counts['done']} segmented in this run, "
                 f"{counts['skipped']} already done (skipped), {counts['failed']} failed.</p>\n")
        fh.write("<h2>Summary</h2>\n")
        summary_rows = []
        metas: list[PredictionMeta | None] = []
        docs: list[dict[str, Any] | None] = []
        for i, e in enumerate(entries, start=1):
            prefix = str(e.get("prefix", ""))
            meta = docs_ = None
            if e.get("status") != "failed":
                meta = _read_meta(out_dir, prefix)
                docs_ = _read_json(output_path(out_dir, prefix, CLUSTERS_SUFFIX))
            metas.append(meta)
            docs.append(docs_)
            cl = (docs_ or {}).get("clusters") or []
            top = max((float(c.get("score") or 0.0) for c in cl), default=None)
            status = str(e.get("status"))
            name = ("html", f"<a href=\"#image-{i}\">{_esc(prefix)}</a>") if status != "failed" else prefix
            summary_rows.append([
                i, Path(str(e.get("input", ""))).name, name,
                ("html", f"<span class=\"status-{_esc(status)}\">{_esc(status)}</span>"),
                meta.n_calcifications if meta else None, meta.n_clusters if meta else None, top,
                _safe_error(e) if status == "failed" else "",
            ])
        _table(fh, ["#", "input file", "outputs", "status", "MCs", "clusters",
                    "top cluster score", "error"], summary_rows, cls="summary")
        for i, (e, meta, doc) in enumerate(zip(entries, metas, docs), start=1):
            if e.get("status") == "failed":
                continue
            _segment_image_section(fh, out_dir, i, e, meta, doc)
        _page_end(fh)
    return path


# ---------------------------------------------------------------------------------------------
# evaluate

_PIXEL_NAMES = ("dice", "iou", "precision", "recall", "fnr", "specificity",
                "balanced_accuracy", "g_mean")


def _metric_rows(block: dict[str, Any], names: Sequence[str]) -> list[list[Any]]:
    return [[n, block.get(n), _ci(block.get(f"{n}_ci"))] for n in names if n in block]


def write_evaluation_report(out_dir: Path, pred_dir: Path | None = None) -> Path:
    """Write ``out_dir/report.html`` from ``metrics.json``, ``per_image.csv`` and the FROC
    plots in ``out_dir``, with thumbnails of ``pred_dir``'s overlays where present
    (``pred_dir`` default: the one recorded in ``metrics.json``); returns its path."""
    out_dir = Path(out_dir)
    metrics = _read_json(out_dir / "metrics.json") or {}
    settings = metrics.get("settings") or {}
    if pred_dir is None and settings.get("pred_dir"):
        pred_dir = Path(settings["pred_dir"])
    path = out_dir / REPORT_NAME
    with atomic_text_writer(path) as fh:
        _page_start(fh, "mcgenref evaluation report")
        if not metrics:
            fh.write("<p class=\"error\">metrics.json is missing or unreadable.</p>\n")
        elif metrics.get("truth_format") != "roi":
            fh.write(f"<p>{_esc(metrics.get('n_images'))} image(s) scored; truth format "
                     f"{_esc(metrics.get('truth_format'))}; MC hit within "
                     f"{_esc(settings.get('tolerance_mm'))} mm; cluster circle enlarged by "
                     f"{_esc(settings.get('cluster_tolerance_mm'))} mm; "
                     f"{_esc(int(settings.get('confidence', 0.95) * 100))} % bootstrap "
                     f"confidence intervals ({_esc(settings.get('n_bootstrap'))} resamples of "
                     "the images).</p>\n")
        roi = metrics.get("roi")
        if roi:
            _roi_section(fh, roi)
        px = metrics.get("pixel")
        if px:
            fh.write(f"<h2>Pixel metrics</h2>\n<p class=\"note\">Inside the breast, "
                     f"{_esc(px.get('n_images'))} image(s) with a truth mask.</p>\n")
            pooled, pooled_ci = px.get("pooled") or {}, px.get("pooled_ci") or {}
            mean, mean_ci = px.get("mean_per_image") or {}, px.get("mean_per_image_ci") or {}
            names = [n for n in _PIXEL_NAMES if n in pooled] + [
                n for n in pooled if n not in _PIXEL_NAMES]
            _table(fh, ["metric", "pooled", "95 % CI", "mean per image", "95 % CI"],
                   [[n, pooled.get(n), _ci(pooled_ci.get(n)), mean.get(n), _ci(mean_ci.get(n))]
                    for n in names], cls="metrics pixel")
        obj = metrics.get("object")
        if obj and "sensitivity" in obj:
            fh.write("<h2>Object (MC) metrics</h2>\n")
            fh.write(f"<p class=\"note\">{_esc(obj.get('n_images'))} image(s), "
                     f"{_esc(obj.get('n_truth'))} true MCs: TP {_esc(obj.get('tp'))}, "
                     f"FP {_esc(obj.get('fp'))}, FN {_esc(obj.get('fn'))}.</p>\n")
            _table(fh, ["metric", "value", "95 % CI"],
                   _metric_rows(obj, ("sensitivity", "fp_per_image", "fp_per_cm2")),
                   cls="metrics object")
        cl = metrics.get("cluster")
        if cl and "sensitivity" in cl:
            fh.write("<h2>Cluster metrics</h2>\n")
            fh.write(f"<p class=\"note\">{_esc(cl.get('n_truth_clusters'))} labelled cluster(s) "
                     f"in {_esc(cl.get('n_abnormal_images'))} abnormal image(s), found "
                     f"{_esc(cl.get('found'))}; {_esc(cl.get('n_normal_images'))} normal "
                     f"image(s) with {_esc(cl.get('false_clusters'))} false cluster(s).</p>\n")
            _table(fh, ["metric", "value", "95 % CI"],
                   _metric_rows(cl, ("sensitivity", "false_clusters_per_normal_image",
                                     "unmatched_clusters_per_abnormal_image")),
                   cls="metrics cluster")
        for key, title in (("object", "MC FROC"), ("cluster", "Cluster FROC")):
            froc = (metrics.get(key) or {}).get("froc")
            if not froc:
                continue
            fh.write(f"<h2>{_esc(title)}</h2>\n")
            at = froc.get("sensitivity_at") or {}
            rows = [[f"sensitivity at {k} FP", v.get("sensitivity"), _ci(v.get("ci"))]
                    for k, v in at.items() if isinstance(v, dict)]
            rows.append(["mean sensitivity (1/8 to 8 FP)", froc.get("mean_sensitivity_1_8_to_8"), ""])
            _table(fh, ["point", "sensitivity", "95 % CI"], rows, cls=f"metrics froc-{key}")
            plot = out_dir / f"froc_{'objects' if key == 'object' else 'clusters'}.png"
            image, why = _open_rgb(plot)
            if image is not None:
                fh.write(f"<figure><img class=\"plot\" src=\"{_data_uri(image)}\" "
                         f"width=\"{image.width}\" alt=\"{_esc(title)} plot\"></figure>\n")
            elif plot.name and why and "not found" not in why:
                fh.write(f"<p class=\"note\">{_esc(why)}</p>\n")
        _per_image_table(fh, out_dir / "per_image.csv")
        notes = list(metrics.get("notes") or [])
        unmatched = metrics.get("unmatched") or {}
        for label, key in (("predictions without truth", "predictions_without_truth"),
                           ("truth images without a prediction", "truth_without_prediction")):
            if unmatched.get(key):
                notes.append(f"{label}: {', '.join(map(str, unmatched[key]))}")
        if notes:
            fh.write("<h2>Notes</h2>\n<ul>\n" + "".join(f"<li>{_esc(n)}</li>\n" for n in notes)
                     + "</ul>\n")
        stems = [str(s) for s in metrics.get("stems") or []]
        if pred_dir is not None and stems:
            shown = 0
            for stem in stems:
                image, _ = _open_rgb(output_path(pred_dir, stem, OVERLAY_SUFFIX))
                if image is None:
                    continue
                if not shown:
                    fh.write("<h2>Prediction overlays</h2>\n<div class=\"crops\">\n")
                thumb = _thumbnail(image, THUMB_MAX_PX // 2)
                del image
                fh.write(f"<figure><img class=\"thumb\" src=\"{_data_uri(thumb, 'JPEG')}\" "
                         f"width=\"{thumb.width}\" height=\"{thumb.height}\" "
                         f"alt=\"overlay of {_esc(stem)}\"><figcaption>{_esc(stem)}</figcaption>"
                         "</figure>\n")
                shown += 1
            if shown:
                fh.write("</div>\n")
        _page_end(fh)
    return path


def _roi_section(fh: IO[str], roi: dict[str, Any]) -> None:
    """ROI AUC of the detector's crop scores beside the crops' trivial statistics."""
    fh.write("<h2>ROI AUC</h2>\n")
    fh.write(f"<p class=\"note\">{_esc(roi.get('n_crops'))} crops "
             f"({_esc(roi.get('n_calcification_crops'))} calcification, "
             f"{_esc(roi.get('n_normal_crops'))} normal) of {_esc(roi.get('n_cases'))} cases; "
             "confidence intervals resample cases. Primary score: "
             f"{_esc(roi.get('primary_score'))}. The trivial statistics need no detector: a "
             "detector's AUC means something only beside them.</p>\n")
    rows = [[f"detector: {k}", v.get("auc"), _ci(v.get("ci"))]
            for k, v in (roi.get("auc") or {}).items()]
    rows += [[f"trivial: {k}", v.get("auc"), _ci(v.get("ci"))]
             for k, v in (roi.get("trivial_auc") or {}).items()]
    _table(fh, ["score", "AUC", "95 % CI"], rows, cls="metrics roi")


def _per_image_table(fh: IO[str], path: Path) -> None:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return
    if not rows:
        return
    columns = list(rows[0])

    def cell(v: str) -> Any:
        try:
            number = float(v)
        except ValueError:
            return v
        return int(number) if number.is_integer() and "." not in v else number

    fh.write("<h2>Per image</h2>\n")
    _table(fh, columns, ([cell(r.get(c, "")) for c in columns] for r in rows),
           cls="per-image")
