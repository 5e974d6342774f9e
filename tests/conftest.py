"""Shared fixtures: the real-data folder (skips when absent) and small synthetic images."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test machines are small and shared: several intra-op threads only contend."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def load_benchmark(name: str):  # noqa: ANN201
    """``benchmarks/<name>.py`` as a module (once per session), with ``recipes/`` and
    ``benchmarks/`` on the path for its own imports; registered in ``sys.modules`` before it
    runs, since its dataclasses look their module up while they are defined."""
    import importlib.util

    module_name = f"mcgenref_benchmark_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    for folder in ("recipes", "benchmarks"):
        if str(REPO / folder) not in sys.path:
            sys.path.insert(0, str(REPO / folder))
    spec = importlib.util.spec_from_file_location(module_name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def data_root() -> Path:
    return Path(os.environ.get("MCGENREF_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = data_root()
    if not (root / "mini-mias" / "images").is_dir():
        pytest.skip(f"real mammograms not found at {root} (set MCGENREF_DATA)")
    return root


def phantom_mammogram(shape: tuple[int, int] = (400, 300), seed: int = 0) -> np.ndarray:
    """A uint8 'left breast': a textured half-ellipse against the left edge, dark air.

    Known answer: the breast is the half-ellipse centred on the left edge with semi-axes
    (0.42 * rows, 0.8 * cols).
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    r, c = np.mgrid[0:rows, 0:cols]
    inside = ((r - rows / 2) / (0.42 * rows)) ** 2 + (c / (0.8 * cols)) ** 2 <= 1.0
    img = np.full(shape, 8.0)
    tissue = 120 + 30 * np.sin(r / 9.0) * np.cos(c / 13.0) + rng.normal(0, 6, shape)
    img[inside] = tissue[inside]
    img += rng.normal(0, 2, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def phantom_png(tmp_path: Path) -> Path:
    path = tmp_path / "phantom.png"
    Image.fromarray(phantom_mammogram()).save(path)
    return path


@pytest.fixture()
def phantom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "negatives"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(phantom_mammogram(seed=i)).save(folder / f"neg{i}.png")
    return folder


def torchrun_cpu(script: Path, args: Sequence[str], nproc: int = 2,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """``script ARGS...`` under ``torch.distributed.run`` with ``nproc`` CPU ranks (one
    thread each); stdout and stderr captured as text.

    ``--standalone``: torchrun binds its own rendezvous store on a free port and keeps it
    bound. Picking a free port here and handing it over (as this helper once did) leaves a
    window, while torchrun starts, in which any other process on the machine (a parallel test
    run, gloo's own sockets) may take that port; torchrun then fails with EADDRINUSE.
    """
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node", str(nproc), str(script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
