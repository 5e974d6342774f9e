"""Scoring: ground truth, metrics, prediction folders, realism and generator quality (never
imports training).

Modules: :mod:`.truth` (masks, INbreast XML, mini-MIAS), :mod:`.metrics` (pixel, MC and
cluster metrics, FROC, bootstrap), :mod:`.evaluate` (``mcgenref evaluate``), :mod:`.synthetic`
(scores of (refined) probability maps on synthetic samples), :mod:`.realism` (features of real
vs synthetic MCs and backgrounds), :mod:`.generator_quality` (the generator's seed recall,
decoy acceptance, spurious MCs, background error).
"""
