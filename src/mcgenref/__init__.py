"""mcgenref: annotation-free microcalcification (MC) segmentation in mammograms.

The package is organised by stage, each importing only the layers below it
(docs/architecture.md, held by tests/test_architecture.py):

- ground: :mod:`mcgenref.config` (typed configs <-> JSON), :mod:`mcgenref.errors` (the one
  user-facing error type), :mod:`mcgenref.progress` (progress bars), :mod:`mcgenref.runtime`
  (device, mixed precision, torchrun), :mod:`mcgenref.clusters` (the cluster rule),
  :mod:`mcgenref.spots` (the DoG spot detector);
- :mod:`mcgenref.io` (reading mammograms, breast masks, normalisation, atomic writing, output
  formats) and :mod:`mcgenref.datasets` (real data sets found outside the repository);
- :mod:`mcgenref.synthesis` (the physical image-formation model that injects synthetic MCs into
  real negatives, with exact masks);
- :mod:`mcgenref.models` (networks and self-describing checkpoints) and :mod:`mcgenref.flow`
  (rectified flow and seeds: the generative core);
- :mod:`mcgenref.training` (the one training loop and its two tasks) and
  :mod:`mcgenref.inference` (segmenting images: model, classical baseline, TT-GPR, batches);
- :mod:`mcgenref.evaluation` (ground truth, metrics, scoring prediction folders, realism and
  generator-quality measures);
- on top, :mod:`mcgenref.workflows` (one typed function per command; the only user of
  :mod:`mcgenref.report`, the HTML reports) and :mod:`mcgenref.cli`, which only parses arguments
  and calls them.

Research use only; not a medical device.
"""

__version__ = "0.1.0"
