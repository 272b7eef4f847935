"""Stage 3 of a run: a spec is assembled and trained, and its result written to the store.

:mod:`~nlbench.train.assemble` builds dataset, splits, noisy labels, context and method;
:mod:`~nlbench.train.engine` runs the phases, resumes and writes the result
(:mod:`~nlbench.train.result` is the one place result.json is built); :mod:`~nlbench.train.epoch`
is the epoch body, :mod:`~nlbench.train.evaluate` the scores,
:mod:`~nlbench.train.model_selection` the rules that pick the reported epoch and
:mod:`~nlbench.train.backbone` the shared network.
"""
