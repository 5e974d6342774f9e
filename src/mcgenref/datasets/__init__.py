"""Real data sets (read from outside the repository; see :func:`data_root`)."""

from mcgenref.datasets.paths import DATA_ENV_VAR, data_root

__all__ = ["DATA_ENV_VAR", "data_root"]
