"""mcgenref: annotation-free microcalcification (MC) segmentation in mammograms.

The package is organised by stage: :mod:`mcgenref.io` (reading mammograms, breast masks,
normalisation, atomic writing), :mod:`mcgenref.synthesis` (the physical image-formation model
that injects synthetic MCs into real negatives, with exact masks). The CLI
(:mod:`mcgenref.cli`) only parses arguments and calls these functions.

Research use only; not a medical device.
"""

__version__ = "0.1.0"
