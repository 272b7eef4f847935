"""Reproducible label-noise injection, done by the core so every method sees identical labels.

The generator's seed derives from (dataset, rate, mode, seed) only, never from the method, so
``nlbench run --method A`` and ``--method B`` with the same dataset, noise and seed train on the
same noisy label vector. Modes (docs/methods.md Part A and §3):

- ``flip`` (default, SCN/CCT convention): each label, with probability ``rate``, is replaced by a
  uniformly drawn *different* class (per-sample Bernoulli);
- ``exact``: exactly ``round(rate * n_c)`` labels of each class c are flipped to a different class;
- ``uniform`` (DivideMix convention): with probability ``rate`` the label is redrawn from all
  classes, the true one included, so the realised rate is about ``rate * (K-1)/K``;
- ``pair``: asymmetric pair flip, with probability ``rate`` class c becomes the next class in the
  AffectNet order (docs/methods.md §2.1), or in the dataset's own order when it has no such mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlbench.errors import UsageError
from nlbench.seeding import derive_seed
from nlbench.settings import NOISE_MODES as MODES  # noqa: E402  (one list of modes)


@dataclass(frozen=True)
class NoiseResult:
    """Noisy labels with what was realised."""

    labels: np.ndarray
    realised_rate: float
    seed: int

    def transitions(self, clean: np.ndarray, num_classes: int) -> np.ndarray:
        """K x K counts of (clean class, noisy class)."""
        counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(counts, (clean, self.labels), 1)
        return counts


def check_rate(rate: float) -> float:
    """Accept a noise rate in [0, 1) or raise a UsageError saying so."""
    if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0 or rate != rate:
        raise UsageError(f"noise rate must be in [0, 1) (e.g. 0.2 for 20% noisy labels), got {rate!r}.")
    return float(rate)


def noise_seed(dataset: str, rate: float, mode: str, seed: int) -> int:
    """The generator seed of a noise draw: derived from (dataset, rate, mode, seed) and nothing else."""
    return derive_seed(seed, "noise", dataset, f"{rate:.6f}", mode)


def _different_class(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    # Drawing from K-1 values and skipping the true one gives a uniform *other* class.
    offset = rng.integers(1, num_classes, size=labels.shape)
    return (labels + offset) % num_classes


def inject_noise(
    clean: np.ndarray,
    num_classes: int,
    rate: float,
    mode: str = "flip",
    *,
    dataset: str,
    seed: int,
    pair_order: tuple[int, ...] | None = None,
) -> NoiseResult:
    """Return noisy labels for ``clean`` drawn reproducibly for (dataset, rate, mode, seed)."""
    rate = check_rate(rate)
    if mode not in MODES:
        raise UsageError(f"unknown noise mode {mode!r}; choose one of {', '.join(MODES)}.")
    if num_classes < 2:
        raise UsageError("label noise needs at least two classes.")
    clean = np.asarray(clean, dtype=np.int64)
    generator_seed = noise_seed(dataset, rate, mode, seed)
    rng = np.random.default_rng(generator_seed)
    noisy = clean.copy()
    if rate > 0:
        if mode == "flip":
            hit = rng.random(clean.shape) < rate
            noisy[hit] = _different_class(rng, clean[hit], num_classes)
        elif mode == "uniform":
            hit = rng.random(clean.shape) < rate
            noisy[hit] = rng.integers(0, num_classes, size=int(hit.sum()))
        elif mode == "exact":
            for c in range(num_classes):
                members = np.flatnonzero(clean == c)
                count = int(round(rate * len(members)))
                chosen = rng.choice(members, size=count, replace=False) if count else members[:0]
                noisy[chosen] = _different_class(rng, clean[chosen], num_classes)
        else:  # pair
            order = np.asarray(pair_order if pair_order is not None else range(num_classes))
            # Position of each class in the reference order, and the class that follows it there.
            position = np.empty(num_classes, dtype=np.int64)
            position[order] = np.arange(num_classes)
            following = order[(position + 1) % num_classes]
            hit = rng.random(clean.shape) < rate
            noisy[hit] = following[clean[hit]]
    realised = float(np.mean(noisy != clean)) if len(clean) else 0.0
    return NoiseResult(noisy, realised, generator_seed)
