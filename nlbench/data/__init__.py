"""Stage 2 of a run: files become decoded images and labels become noisy labels.

:mod:`~nlbench.data.cache` decodes once into a uint8 cache, :mod:`~nlbench.data.augment` augments
batches on the device, :mod:`~nlbench.data.noise` draws synthetic noise
(:mod:`~nlbench.data.fer_confusion` its FER confusion matrix), :mod:`~nlbench.data.noise_file`
reads and writes noise files, :mod:`~nlbench.data.crowd` infers labels from crowd votes,
:mod:`~nlbench.data.validation` holds out the noisy validation split and
:mod:`~nlbench.data.prepare` is what ``nlbench prepare`` checks.
"""
