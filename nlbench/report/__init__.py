"""Stage 4b: the store becomes tables, figures and a report.

:mod:`~nlbench.report.runs` is the one reader of finished runs and the one definition of a cell
(which runs are comparable); :mod:`~nlbench.report.tables` lays them out like the paper
(:mod:`~nlbench.report.render` prints them, :mod:`~nlbench.report.statistics` compares methods,
:mod:`~nlbench.report.published` holds the paper's printed values), :mod:`~nlbench.report.figures`
draws the figures (:mod:`~nlbench.report.gradcam` the Grad-CAM maps) and
:mod:`~nlbench.report.document` assembles the report.
"""
