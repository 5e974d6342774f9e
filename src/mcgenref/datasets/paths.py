"""Where the real (never committed) data sets live.

Real mammograms are kept beside the project, never inside its repository (their licences do
not allow re-publishing). Code that reads them asks :func:`data_root`, which is the folder named
by the environment variable ``MCGENREF_DATA`` when it is set, and otherwise ``../shared/data``
relative to the repository root (the folder that holds ``pyproject.toml`` and ``src/``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that names the real-data folder.
DATA_ENV_VAR = "MCGENREF_DATA"


def repo_root() -> Path:
    """The repository root of a source checkout (``src/mcgenref/datasets/paths.py`` → 3 up)."""
    return Path(__file__).resolve().parents[3]


def data_root() -> Path:
    """The real-data folder: ``$MCGENREF_DATA`` if set, else ``<repo>/../shared/data``.

    The folder may not exist (for example on a machine without the data); callers check and
    skip or raise with a clear message.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return (repo_root() / ".." / "shared" / "data").resolve()
