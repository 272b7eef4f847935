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
  AffectNet order (docs/methods.md §2.1), or in the dataset's own order when it has no such mapping;
- ``fer-confusion``: with probability ``rate`` the label moves to another class along the
  confusions FERPlus's annotators make (:mod:`nlbench.data.fer_confusion`: fear <-> surprise,
  disgust -> anger, sadness -> neutral, ...);
- ``instance``: instance-dependent noise (Xia et al., NeurIPS 2020): each sample's flip rate is
  drawn from N(rate, 0.1^2) truncated to [0, 1], and where it flips to depends on its image
  through a random linear map per class (:func:`instance_noise`).

Real noise from crowd votes (:func:`draw_from_votes`) is drawn here too, with the run's seed:
``vote`` gives each sample one of its own annotators' votes, ``worst`` a wrong vote whenever the
sample has one (CIFAR-N's random and worst labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlbench.errors import UsageError
from nlbench.seeding import derive_seed
from nlbench.settings import NOISE_MODES as MODES  # noqa: E402  (one list of modes)


@dataclass(frozen=True)
class NoiseResult:
    """Noisy labels with what was realised."""

    labels: np.ndarray
    realised_rate: float
    seed: int | None
    #: How the labels came about, when the mode's name does not say it all (real noise).
    note: str = ""

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
    class_names: tuple[str, ...] | None = None,
    features: Callable[[], np.ndarray] | None = None,
) -> NoiseResult:
    """Return noisy labels for ``clean`` drawn reproducibly for (dataset, rate, mode, seed).

    ``class_names`` are needed by ``fer-confusion`` (its matrix is indexed by emotion name),
    ``features`` (a function returning one feature row per sample) by ``instance``.
    """
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
        elif mode == "fer-confusion":
            from nlbench.data.fer_confusion import flip_targets

            if class_names is None or len(class_names) != num_classes:
                raise UsageError("noise mode fer-confusion needs the dataset's class names.")
            targets = flip_targets(class_names)
            hit = np.flatnonzero(rng.random(clean.shape) < rate)
            noisy[hit] = _draw_rows(rng, targets[clean[hit]])
        elif mode == "instance":
            if features is None:
                raise UsageError("noise mode instance needs the training images (features of each sample).")
            noisy = instance_noise(rng, clean, num_classes, rate, np.asarray(features(), dtype=np.float32))
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


#: Standard deviation of the per-sample flip rate of ``instance`` noise (Xia et al.'s ``norm_std``).
INSTANCE_RATE_STD = 0.1


def _draw_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One class per row of a (N, K) row-stochastic matrix, by inverse CDF (vectorised)."""
    if not len(probabilities):
        return np.zeros(0, dtype=np.int64)
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    draws = rng.random((len(probabilities), 1))
    return np.minimum((cumulative <= draws).sum(axis=1), probabilities.shape[1] - 1).astype(np.int64)


def instance_noise(rng: np.random.Generator, clean: np.ndarray, num_classes: int, rate: float,
                   features: np.ndarray) -> np.ndarray:
    """Instance-dependent labels: Xia et al. (NeurIPS 2020), ``get_instance_noisy_label`` of their code.

    Per sample n: flip rate q_n ~ N(rate, 0.1^2) truncated to [0, 1]; scores x_n W_{y_n} with
    W ~ N(0, 1) of shape (K, d, K); the true class's score is removed and the others are
    softmax-normalised and scaled by q_n; the true class keeps 1 - q_n; the label is drawn from
    that distribution. ``features`` are (N, d) rows (nlbench passes each image at 32 x 32,
    normalised per channel, as Xia et al. used CIFAR's normalised 32 x 32 images).
    """
    from scipy.stats import truncnorm

    n = len(clean)
    low, high = (0.0 - rate) / INSTANCE_RATE_STD, (1.0 - rate) / INSTANCE_RATE_STD
    flip_rate = truncnorm.rvs(low, high, loc=rate, scale=INSTANCE_RATE_STD, size=n, random_state=rng)
    weights = rng.standard_normal((num_classes, features.shape[1], num_classes)).astype(np.float32)
    scores = np.empty((n, num_classes), dtype=np.float64)
    for c in range(num_classes):
        members = np.flatnonzero(clean == c)
        if members.size:
            scores[members] = features[members] @ weights[c]
    scores[np.arange(n), clean] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    others = np.exp(scores)
    others /= others.sum(axis=1, keepdims=True)
    probabilities = flip_rate[:, None] * others
    probabilities[np.arange(n), clean] = 1.0 - flip_rate
    return _draw_rows(rng, probabilities)


#: Real-noise rules that draw one label per sample from its annotators' votes.
VOTE_RULES = ("vote", "worst")


def draw_from_votes(clean: np.ndarray, votes: np.ndarray, rule: str, *, dataset: str, seed: int) -> NoiseResult:
    """One label per sample from its own annotators' votes, drawn with the run's seed.

    ``votes`` are (N, K) counts per class. ``vote``: a vote drawn at random (each annotator equally
    likely), as CIFAR-N's single-annotator labels; ``worst``: a wrong vote (drawn among the wrong
    votes) whenever the sample has one, else its label, as CIFAR-N's worst label. A sample with no
    vote keeps its label.
    """
    if rule not in VOTE_RULES:
        raise UsageError(f"unknown vote rule {rule!r}; choose one of {', '.join(VOTE_RULES)}.")
    clean = np.asarray(clean, dtype=np.int64)
    weights = np.asarray(votes, dtype=np.float64).copy()
    if weights.shape != (len(clean), weights.shape[1]) or (weights < 0).any():
        raise ValueError("votes must be non-negative (N, K) counts, one row per sample")
    generator_seed = derive_seed(seed, "noise", dataset, "votes", rule)
    rng = np.random.default_rng(generator_seed)
    if rule == "worst":
        wrong = weights.copy()
        wrong[np.arange(len(clean)), clean] = 0.0
        has_wrong = wrong.sum(axis=1) > 0
        weights[has_wrong] = wrong[has_wrong]
    has_vote = weights.sum(axis=1) > 0
    noisy = clean.copy()
    noisy[has_vote] = _draw_rows(rng, weights[has_vote])
    realised = float(np.mean(noisy != clean)) if len(clean) else 0.0
    note = ("one of each face's own annotators' votes, drawn with the run's seed" if rule == "vote"
            else "a wrong annotator vote whenever the face has one, drawn with the run's seed")
    return NoiseResult(noisy, realised, generator_seed, note)


def dataset_noise(table: Any, *, dataset: str, seed: int) -> NoiseResult:
    """The real noisy labels of a dataset's training table: given by the dataset, or drawn from its votes."""
    if table.noise_rule in VOTE_RULES:
        result = draw_from_votes(table.labels, table.votes, table.noise_rule, dataset=dataset, seed=seed)
        return NoiseResult(result.labels, result.realised_rate, result.seed, table.noise_note or result.note)
    if table.noisy_labels is None:
        raise UsageError(f"dataset {dataset!r} ships no noisy training labels; use --noise-source injected.")
    noisy = np.asarray(table.noisy_labels, dtype=np.int64)
    realised = float(np.mean(noisy != table.labels)) if len(noisy) else 0.0
    return NoiseResult(noisy, realised, None, table.noise_note)


def trained_noise(clean: np.ndarray, noisy: np.ndarray, index: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """The noise of the samples a run trains on (``index``: after the validation hold-out and
    ``train_size``): count, wrong labels, transitions (rows: true class, columns: label trained
    on) and, per noisy label, the share of the samples carrying it that are wrong."""
    k = len(class_names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(clean)[index], np.asarray(noisy)[index]), 1)
    labelled = counts.sum(axis=0)
    wrong = int(counts.sum() - np.trace(counts))
    return {"samples": int(index.size), "wrong": wrong, "rate": wrong / index.size if index.size else 0.0,
            "transitions": counts.tolist(),
            "wrong_by_label": {name: (float(1 - counts[j, j] / labelled[j]) if labelled[j] else None)
                               for j, name in enumerate(class_names)}}
