"""Load (issue 6, part 5), the CI version of ``benchmarks/load.py``: one ``segment`` batch
over 50 generated images, in-process; no file-handle leak, flat memory, steady throughput."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_benchmark

N_IMAGES = 50


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("load") / "images"
    load_benchmark("load").make_images(folder, N_IMAGES)
    return folder


@pytest.mark.parametrize("method", ["classical", "model"])
def test_segment_batch_has_no_leak_and_steady_throughput(method: str, images: Path,
                                                         tmp_path: Path) -> None:
    bench = load_benchmark("load")
    r = bench.run_load(N_IMAGES, method, tmp_path, images=images)
    assert r["images"] == N_IMAGES
    # no file-handle leak: as many open fds at the end as after the first few images
    assert r["fds_at_end"] == r["fds_at_reference"], r["series"]["fds"]
    assert r["fds_max"] <= r["fds_at_reference"] + 2  # atomic writes hold one fd at a time
    # the reader threads' fds on the inputs (not in the samples above) are all closed
    assert r["input_fds_open_after"] == 0
    # every output was written atomically: no temporary file left behind
    out = tmp_path / f"out-{method}"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert len(list(out.glob("*_meta.json"))) == N_IMAGES
    # memory stays flat over the second half (generous bound: allocator noise is ~1 MB)
    assert r["rss_growth_second_half_mb"] < 30, r["series"]["rss_mb"]
    assert r["rss_slope_second_half_mb_per_100"] * (N_IMAGES / 2) / 100 < 30
    # throughput holds from the first images to the last. Per-image medians: a neighbour's
    # job on the shared CPU may stall one image, and a stall is not a slowdown of the batch
    first, last = r["first_tenth"], r["last_tenth"]
    assert last["images_per_s_median"] >= 0.5 * first["images_per_s_median"], (first, last)
