"""Real data sets, read from outside the repository (never copied into it).

Modules: :mod:`.paths` (:func:`data_root`: ``$MCGENREF_DATA``), :mod:`.mias` (mini-MIAS:
``Info.txt``, its calcification clusters, a split by woman).
"""

from mcgenref.datasets.paths import DATA_ENV_VAR, data_root

__all__ = ["DATA_ENV_VAR", "data_root"]
