"""Segmenting mammograms (imports neither training nor evaluation).

Modules: :mod:`.segment` (:class:`~mcgenref.inference.segment.Segmenter`: one image end to
end, and the files it writes), :mod:`.batch` (many images, pipelined, one summary; torchrun
ranks), :mod:`.sliding` (breast-only Gaussian-blended sliding windows), :mod:`.classical` (the
label-free DoG baseline), :mod:`.refine` (TT-GPR: test-time generative posterior refinement),
:mod:`.postprocess` (MCs, clusters, overlay), :mod:`.descriptors` (descriptive cluster
geometry).
"""
