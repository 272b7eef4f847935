"""The held-out validation split: model selection that never looks at the test set.

A share of the training set (``train.val_fraction``, 10% by default) is held out before training,
stratified by the *noisy* labels and seeded by (run seed, dataset) only, so every method of a
seed holds out the same images with the same noisy labels: what a practitioner really has. The
engine evaluates it every epoch; the ``val`` metric reports the test accuracy of the epoch with
the highest noisy-validation accuracy.
"""

from __future__ import annotations

import numpy as np

from nlbench.seeding import derive_seed


def validation_split(noisy: np.ndarray, fraction: float, seed: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) into the training set, both sorted.

    Each class c (by noisy label) gives about fraction * n_c images (largest-remainder rounding,
    round(fraction * n) in all), drawn without replacement. ``fraction = 0`` holds out nothing.
    """
    noisy = np.asarray(noisy)
    everything = np.arange(noisy.shape[0])
    if fraction <= 0:
        return everything, everything[:0]
    rng = np.random.default_rng(derive_seed(seed, "validation", dataset))
    classes, sizes = np.unique(noisy, return_counts=True)
    # Largest remainder: floor(fraction * n_c) per class, the rest of round(fraction * n) to the
    # classes with the largest fractional parts, so the split has exactly the requested size.
    exact = fraction * sizes
    counts = np.floor(exact).astype(int)
    extra = int(round(fraction * noisy.shape[0])) - int(counts.sum())
    if extra > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:extra]] += 1
    held: list[np.ndarray] = []
    for cls, count in zip(classes, counts):
        if count:
            held.append(rng.choice(everything[noisy == cls], size=int(count), replace=False))
    val = np.sort(np.concatenate(held)) if held else everything[:0]
    keep = np.ones(noisy.shape[0], dtype=bool)
    keep[val] = False
    return everything[keep], val


def training_subset(fit: np.ndarray, size: int, seed: int, dataset: str) -> np.ndarray:
    """``size`` of the training indices ``fit``, drawn with the run's seed and sorted (0 = all).

    Drawn uniformly, not per class, so the subset keeps the split's class frequencies up to
    sampling error; a size at least as large as ``fit`` keeps every index.
    """
    if size <= 0 or size >= fit.shape[0]:
        return fit
    rng = np.random.default_rng(derive_seed(seed, "train-subset", dataset))
    return np.sort(rng.choice(fit, size=size, replace=False))
